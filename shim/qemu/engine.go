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

	"hypefs/internal/cleanup"
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
	l := &launch{bin: bin, m: newMachine(spec, console)}
	defer l.own.Unwind()
	var undo cleanup.Stack
	for _, step := range []func(context.Context, *cleanup.Stack) error{l.listen, l.openLog, l.start, l.connect, l.restore} {
		if err := step(ctx, &undo); err != nil {
			undo.Unwind()
			return nil, l.explain(err)
		}
	}
	undo.Release()
	return l.m, nil
}

func newMachine(spec engine.Spec, console io.Writer) *Machine {
	logPath := spec.VMMLog
	if logPath == "" {
		logPath = filepath.Join(spec.RunDir, "vmm.log")
	}
	return &Machine{
		spec:    spec,
		logPath: logPath,
		console: console,
		setup:   make(chan struct{}),
		exited:  make(chan struct{}),
		done:    make(chan struct{}),
		conDone: make(chan struct{}),
		evDone:  make(chan struct{}),
	}
}

// launch is one QEMU being started, as named steps: listen on the console
// and QMP sockets, open the log, start the process, accept its two
// connections, wait for a restore. What only the launch needs (the
// listeners, its copy of the log) is closed when it returns; a started
// QEMU is ended through the cleanup stack if a later step fails.
type launch struct {
	bin        string
	m          *Machine
	conL, qmpL net.Listener
	log        *os.File
	own        cleanup.Stack // what only the launch uses: closed when it returns
	started    bool
}

// listen makes the sockets QEMU connects to.
func (l *launch) listen(context.Context, *cleanup.Stack) error {
	for _, s := range []struct {
		l    *net.Listener
		name string
	}{{&l.conL, consoleSock}, {&l.qmpL, qmpSock}} {
		ln, err := sock.ListenUnix(filepath.Join(l.m.spec.RunDir, s.name))
		if err != nil {
			return fmt.Errorf("qemu socket: %w", err)
		}
		*s.l = ln
		l.own.Push(func() { ln.Close() })
	}
	return nil
}

// openLog opens the hypervisor's log, remembering where this QEMU's
// output will begin.
func (l *launch) openLog(context.Context, *cleanup.Stack) error {
	log, err := os.OpenFile(l.m.logPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("qemu log: %w", err)
	}
	l.log = log
	l.own.Push(func() { log.Close() }) // QEMU holds its own copy
	l.m.logStart, _ = log.Seek(0, io.SeekEnd)
	return nil
}

// start runs QEMU; if a later step fails, QEMU is ended.
func (l *launch) start(_ context.Context, undo *cleanup.Stack) error {
	m := l.m
	cmd := exec.Command(l.bin, Args(m.spec)...)
	cmd.Dir = m.spec.RunDir
	cmd.Stdout, cmd.Stderr = l.log, l.log
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Its own group, so QEMU and anything it spawns (the exec:
		// migration's shell) can be killed together.
		Setpgid: true,
		// A shim killed with SIGKILL must not leave QEMU running. The
		// signal fires when the starting *thread* exits, hence the
		// locked thread in run.
		Pdeathsig: syscall.SIGKILL,
	}
	m.cmd = cmd
	started := make(chan error, 1)
	go m.run(started)
	if err := <-started; err != nil {
		return fmt.Errorf("qemu start: %w", err)
	}
	l.started = true
	undo.Push(m.abandon)
	return nil
}

// abandon ends a QEMU whose start failed: it closes what the launch
// connected, then waits briefly for QEMU to exit by itself (one that
// refuses its command line does) before killing it.
func (m *Machine) abandon() {
	if m.qmp != nil {
		m.qmp.Close()
	}
	if m.con != nil {
		m.con.Close()
	}
	m.setupOnce.Do(func() { close(m.setup) })
	select {
	case <-m.exited:
	case <-time.After(200 * time.Millisecond):
		m.kill()
		<-m.exited
	}
}

// connect accepts QEMU's console and QMP connections.
func (l *launch) connect(ctx context.Context, undo *cleanup.Stack) error {
	m := l.m
	ctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	con, err := m.accept(ctx, l.conL, "console")
	if err != nil {
		return err
	}
	m.con = con
	go m.pumpConsole()
	qc, err := m.accept(ctx, l.qmpL, "qmp")
	if err != nil {
		return err
	}
	if m.qmp, err = qmp.New(ctx, qc); err != nil {
		qc.Close()
		return fmt.Errorf("qemu qmp: %w", err)
	}
	go m.watchEvents()
	m.setupOnce.Do(func() { close(m.setup) })
	return nil
}

// restore waits, when restoring, until QEMU has loaded the saved state.
func (l *launch) restore(ctx context.Context, _ *cleanup.Stack) error {
	if l.m.spec.RestoreFrom == "" {
		return nil
	}
	return l.m.waitIncoming(ctx)
}

// explain words a failed launch: a QEMU that refused its command line
// exited by itself, and its own words (the log's tail) say why better
// than what broke on the way out.
func (l *launch) explain(err error) error {
	if !l.started {
		return err
	}
	if st := l.m.cmd.ProcessState; st != nil && st.ExitCode() >= 0 {
		err = fmt.Errorf("qemu start: qemu exited with status %d", st.ExitCode())
	}
	if tail := l.m.vmmTail(); tail != "" {
		err = fmt.Errorf("%w: %s", err, tail)
	}
	return err
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
