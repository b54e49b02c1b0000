//go:build linux

// Package qemu is the Linux engine: each VM is a QEMU child process of the
// shim, driven over QMP, with its serial console on a unix socket.
package qemu

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
	"time"

	"hypefs/internal/sock"
	"hypefs/shim/engine"
	"hypefs/shim/qmp"
)

var (
	_ engine.Engine  = (*Engine)(nil)
	_ engine.Machine = (*Machine)(nil)
)

// connectTimeout bounds how long QEMU may take to connect to the console
// and QMP sockets; it does so during its start, before the guest runs.
const connectTimeout = 10 * time.Second

// Engine boots VMs with QEMU. The zero value is ready to use.
type Engine struct {
	// Binary overrides the emulator; empty means qemu-system-x86_64 (or
	// qemu-system-aarch64 on arm64) found on PATH.
	Binary string
}

// New returns an Engine that uses QEMU from PATH.
func New() *Engine { return &Engine{} }

// Name implements engine.Engine.
func (e *Engine) Name() string { return "qemu" }

// binary resolves the emulator's path.
func (e *Engine) binary() (string, error) {
	name := e.Binary
	if name == "" {
		name = binaryFor(runtime.GOARCH)
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("qemu binary %s not found (hint: run \"make deps\"): %w", name, err)
	}
	return p, nil
}

// Boot starts QEMU for spec and returns once QEMU runs the guest (or, when
// restoring, holds the restored guest paused). Every console byte goes to
// console, from the first.
func (e *Engine) Boot(ctx context.Context, spec engine.Spec, console io.Writer) (engine.Machine, error) {
	m, err := e.boot(ctx, spec, console)
	if err != nil {
		return nil, err
	}
	return m, nil
}

func (e *Engine) boot(ctx context.Context, spec engine.Spec, console io.Writer) (*Machine, error) {
	if err := check(spec); err != nil {
		return nil, err
	}
	bin, err := e.binary()
	if err != nil {
		return nil, err
	}
	if console == nil {
		console = io.Discard
	}
	logPath := spec.VMMLog
	if logPath == "" {
		logPath = filepath.Join(spec.RunDir, "vmm.log")
	}
	conL, err := sock.ListenUnix(filepath.Join(spec.RunDir, consoleSock))
	if err != nil {
		return nil, err
	}
	defer conL.Close()
	qmpL, err := sock.ListenUnix(filepath.Join(spec.RunDir, qmpSock))
	if err != nil {
		return nil, err
	}
	defer qmpL.Close()

	log, err := os.OpenFile(logPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("qemu log: %w", err)
	}
	defer log.Close() // QEMU holds its own copy
	logStart, _ := log.Seek(0, io.SeekEnd)

	cmd := exec.Command(bin, Args(spec)...)
	cmd.Dir = spec.RunDir
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Its own group, so QEMU and anything it spawns (the exec:
		// migration's shell) can be killed together.
		Setpgid: true,
		// A shim killed with SIGKILL must not leave QEMU running. The
		// signal fires when the starting *thread* exits, hence the
		// locked thread in run.
		Pdeathsig: syscall.SIGKILL,
	}

	m := &Machine{
		spec:     spec,
		cmd:      cmd,
		logPath:  logPath,
		logStart: logStart,
		console:  console,
		setup:    make(chan struct{}),
		exited:   make(chan struct{}),
		done:     make(chan struct{}),
		conDone:  make(chan struct{}),
		evDone:   make(chan struct{}),
	}
	started := make(chan error, 1)
	go m.run(started)
	if err := <-started; err != nil {
		return nil, fmt.Errorf("qemu start: %w", err)
	}

	fail := func(err error) (*Machine, error) {
		if m.qmp != nil {
			m.qmp.Close()
		}
		if m.con != nil {
			m.con.Close()
		}
		m.setupOnce.Do(func() { close(m.setup) })
		// QEMU that refuses its command line exits by itself: say that,
		// in its own words, rather than what it broke on the way out.
		select {
		case <-m.exited:
			if st := m.cmd.ProcessState; st != nil && st.ExitCode() >= 0 {
				err = fmt.Errorf("qemu start: qemu exited with status %d", st.ExitCode())
			}
		case <-time.After(200 * time.Millisecond):
			m.kill()
			<-m.exited
		}
		if tail := m.vmmTail(); tail != "" {
			err = fmt.Errorf("%w: %s", err, tail)
		}
		return nil, err
	}
	acceptCtx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	con, err := m.accept(acceptCtx, conL, "console")
	if err != nil {
		return fail(err)
	}
	m.con = con
	go m.pumpConsole()
	qc, err := m.accept(acceptCtx, qmpL, "qmp")
	if err != nil {
		return fail(err)
	}
	m.qmp, err = qmp.New(acceptCtx, qc)
	if err != nil {
		qc.Close()
		return fail(fmt.Errorf("qemu qmp: %w", err))
	}
	go m.watchEvents()
	m.setupOnce.Do(func() { close(m.setup) })

	if spec.RestoreFrom != "" {
		if err := m.waitIncoming(ctx); err != nil {
			return fail(err)
		}
	}
	return m, nil
}

// check refuses specs that QEMU would refuse less clearly.
func check(spec engine.Spec) error {
	switch spec.Accel {
	case "kvm", "tcg", "":
	default:
		return fmt.Errorf("qemu accel %q: %w", spec.Accel, engine.ErrUnsupported)
	}
	if spec.RunDir == "" {
		return errors.New("qemu spec: no run directory")
	}
	if spec.Kernel == "" {
		return errors.New("qemu spec: no kernel")
	}
	return nil
}

// accept waits for QEMU to connect, giving up if QEMU exits first.
func (m *Machine) accept(ctx context.Context, l net.Listener, what string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		c, err := l.Accept()
		ch <- result{c, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, fmt.Errorf("qemu %s socket: %w", what, r.err)
		}
		return r.c, nil
	case <-m.exited:
	case <-ctx.Done():
	}
	l.Close()
	if r := <-ch; r.c != nil {
		r.c.Close()
	}
	select {
	case <-m.exited:
		return nil, fmt.Errorf("qemu %s socket: qemu exited before connecting", what)
	default:
		return nil, fmt.Errorf("qemu %s socket: %w", what, ctx.Err())
	}
}
