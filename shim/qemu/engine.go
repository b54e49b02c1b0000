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

	"golang.org/x/sys/unix"

	"hypefs/internal/cleanup"
	"hypefs/internal/logcap"
	"hypefs/shim/engine"
	"hypefs/shim/qmp"
)

var (
	_ engine.Engine  = (*Engine)(nil)
	_ engine.Machine = (*Machine)(nil)
)

// connectTimeout bounds how long QEMU may take to greet on QMP; it does so
// during its start, before the guest runs.
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
	defer l.theirs.Unwind()
	var undo cleanup.Stack
	for _, step := range []func(context.Context, *cleanup.Stack) error{l.handoff, l.openLog, l.start, l.connect, l.restore} {
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
		logDone: make(chan struct{}),
		halts:   make(chan engine.Halt, 16),
	}
}

// launch is one QEMU being started, as named steps: open every file QEMU
// will use (handoff), start its log, start the process, speak QMP, wait
// for a restore. QEMU runs as spec.User from its first instruction, under
// its seccomp sandbox, so it opens nothing itself: the engine, as root,
// hands it the kernel, initramfs, disks, TAPs, console and QMP sockets
// and the state to restore, open. What only the launch needs (its copies
// of those files) is closed when it returns; a started QEMU is ended
// through the cleanup stack if a later step fails.
type launch struct {
	bin      string
	m        *Machine
	files    []*os.File    // QEMU's descriptors from fdBase, in handoff order
	con, qmp *os.File      // our ends of the console and QMP socket pairs
	logW     *os.File      // QEMU's stdout and stderr: a pipe to its log
	theirs   cleanup.Stack // closes our copies of QEMU's files: after start, or on failure
	own      cleanup.Stack // what only the launch uses: closed when it returns
	started  bool
}

// handoff opens what QEMU is given, in planHandoff's order.
func (l *launch) handoff(context.Context, *cleanup.Stack) error {
	spec := l.m.spec
	add := func(f *os.File) {
		l.files = append(l.files, f)
		l.theirs.Push(func() { f.Close() })
	}
	open := func(path string, flag int, what string) error {
		f, err := os.OpenFile(path, flag, 0)
		if err != nil {
			return fmt.Errorf("qemu %s: %w", what, err)
		}
		add(f)
		return nil
	}
	if err := open(spec.Kernel, os.O_RDONLY, "kernel"); err != nil {
		return err
	}
	if spec.Initramfs != "" {
		if err := open(spec.Initramfs, os.O_RDONLY, "initramfs"); err != nil {
			return err
		}
	}
	for _, ours := range []**os.File{&l.con, &l.qmp} {
		a, b, err := socketPair()
		if err != nil {
			return fmt.Errorf("qemu socket pair: %w", err)
		}
		*ours = a
		l.own.Push(func() { a.Close() })
		add(b)
	}
	for i, d := range spec.Disks {
		what := fmt.Sprintf("disk %d", i)
		if !d.ReadOnly {
			if err := open(d.Path, os.O_RDWR, what); err != nil {
				return err
			}
		}
		if err := open(d.Path, os.O_RDONLY, what); err != nil {
			return err
		}
	}
	for _, n := range spec.NICs {
		if n.Tap == "" {
			continue
		}
		f, err := openTap(n.Tap)
		if err != nil {
			return fmt.Errorf("qemu nic: %w", err)
		}
		add(f)
	}
	if spec.RestoreFrom != "" {
		if err := open(filepath.Join(spec.RestoreFrom, stateFile), os.O_RDONLY, "saved state"); err != nil {
			return err
		}
	}
	if want := planHandoff(spec).count; len(l.files) != want {
		return fmt.Errorf("qemu: %d files opened for %d descriptors", len(l.files), want)
	}
	return nil
}

// openLog starts the hypervisor's log: QEMU writes into a pipe whose
// other end the engine copies into the capped log file (the only writer,
// so the cap can drop old output in place), remembering where this
// QEMU's output begins.
func (l *launch) openLog(context.Context, *cleanup.Stack) error {
	log, err := logcap.Open(l.m.logPath, 0o600, l.m.spec.LogMax)
	if err != nil {
		return fmt.Errorf("qemu log: %w", err)
	}
	if fi, err := os.Stat(l.m.logPath); err == nil {
		l.m.logStart = fi.Size()
	}
	r, w, err := os.Pipe()
	if err != nil {
		log.Close()
		return fmt.Errorf("qemu log: %w", err)
	}
	l.logW = w
	l.theirs.Push(func() { w.Close() }) // QEMU holds its own copy
	go func() {
		defer close(l.m.logDone)
		io.Copy(log, r)
		r.Close()
		log.Close()
	}()
	return nil
}

// start runs QEMU; if a later step fails, QEMU is ended.
func (l *launch) start(_ context.Context, undo *cleanup.Stack) error {
	m := l.m
	cmd := exec.Command(l.bin, Args(m.spec)...)
	// A directory every user may enter: QEMU names no file by a path of
	// the run directory.
	cmd.Dir = "/"
	cmd.Env = append(os.Environ(), engine.RunDirEnv+"="+m.spec.RunDir)
	cmd.Stdout, cmd.Stderr = l.logW, l.logW
	cmd.ExtraFiles = l.files
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Its own group, so QEMU and anything it might spawn can be
		// killed together.
		Setpgid: true,
		// A shim killed with SIGKILL must not leave QEMU running. The
		// signal fires when the starting *thread* exits, hence the
		// locked thread in run; it survives the change of user, which
		// happens before exec.
		Pdeathsig:  syscall.SIGKILL,
		Credential: credential(m.spec),
	}
	m.cmd = cmd
	started := make(chan error, 1)
	go m.run(started)
	err := <-started
	// QEMU has its copies; ours would keep its sockets open after it
	// exits (and hide that it did).
	l.theirs.Unwind()
	if err != nil {
		return fmt.Errorf("qemu start: %w", err)
	}
	l.started = true
	undo.Push(m.abandon)
	return nil
}

// credential is who QEMU runs as: spec.User, with /dev/kvm's group for
// KVM; nil (the shim's own user) when no user is given.
func credential(spec engine.Spec) *syscall.Credential {
	if spec.User == nil {
		return nil
	}
	c := &syscall.Credential{Uid: spec.User.UID, Gid: spec.User.GID, Groups: []uint32{}}
	if spec.Accel == "kvm" {
		var st syscall.Stat_t
		if syscall.Stat("/dev/kvm", &st) == nil {
			c.Groups = append(c.Groups, st.Gid)
		}
	}
	return c
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

// connect takes over the console and speaks QMP: QEMU greets once its
// monitor is up, before the guest runs; one that exits first (refusing
// its command line) closes its end, ending the wait.
func (l *launch) connect(ctx context.Context, _ *cleanup.Stack) error {
	m := l.m
	ctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	con, err := net.FileConn(l.con)
	if err != nil {
		return fmt.Errorf("qemu console socket: %w", err)
	}
	m.con = con
	go m.pumpConsole()
	qc, err := net.FileConn(l.qmp)
	if err != nil {
		return fmt.Errorf("qemu qmp socket: %w", err)
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
	select {
	case <-l.m.exited:
		select { // its last words reach the log
		case <-l.m.logDone:
		case <-time.After(drainTimeout):
		}
	case <-time.After(200 * time.Millisecond):
	}
	if st := l.m.cmd.ProcessState; st != nil && st.ExitCode() >= 0 {
		err = fmt.Errorf("qemu start: qemu exited with status %d", st.ExitCode())
	}
	if tail := l.m.vmmTail(); tail != "" {
		err = fmt.Errorf("%w: %s", err, tail)
	}
	return err
}

// socketPair makes a connected pair of stream sockets.
func socketPair() (ours, theirs *os.File, err error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	return os.NewFile(uintptr(fds[0]), "ours"), os.NewFile(uintptr(fds[1]), "qemu"), nil
}

// openTap attaches to the TAP the daemon made (a persistent one, which
// only a process with CAP_NET_ADMIN may attach to), as QEMU would.
func openTap(name string) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tap %s: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("attach to tap %s: %w", name, err)
	}
	return os.NewFile(uintptr(fd), "tap-"+name), nil
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
