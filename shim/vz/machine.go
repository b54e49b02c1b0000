package vz

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"hypefs/internal/logcap"
	"hypefs/shim/engine"
)

// Machine is one VM hosted in the shim process. It implements
// engine.Machine and VsockDialer.
type Machine struct {
	hv      hypervisor
	cfg     Config
	console io.Writer
	vmmLog  *logcap.File // nil when the spec names none

	// The console pipes. The guest holds inR and outW; the machine writes
	// inW (Console) and copies outR to console. All four stay referenced
	// until the VM has ended (see consoleFiles).
	inR, inW, outR, outW *os.File
	copied               chan struct{} // closed once outR is drained
	consoleOver          atomic.Bool   // the VM has ended: drain outR, then stop

	ops sync.Mutex // serialises control operations

	mu        sync.Mutex
	cur       *run
	state     State
	cause     stopCause
	rebooting bool
	ending    bool
	// expect holds the state a completed operation established until the
	// (asynchronous) notifications catch up with it, so a late
	// "starting" cannot make a running VM look like it is still booting.
	expect    State
	expecting bool
	exit      engine.Exit
	subs      map[chan State]struct{}

	done       chan struct{}
	finishOnce sync.Once
}

// run is one framework VM of a machine; Reboot replaces it with a fresh one.
type run struct {
	vm    vmHandle
	quit  chan struct{} // closed to stop the watcher of an abandoned VM
	ended chan struct{} // closed by the watcher on a terminal state

	// guarded by Machine.mu
	armed    bool  // the VM started; a terminal state now ends the machine
	hasEnded bool  // the watcher saw terminal
	terminal State // which one
}

func newRun(vm vmHandle) *run {
	return &run{vm: vm, quit: make(chan struct{}), ended: make(chan struct{})}
}

func newMachine(hv hypervisor, cfg Config, console io.Writer, vmmLog string, logMax int64) (*Machine, error) {
	m := &Machine{hv: hv, cfg: cfg, console: console, done: make(chan struct{}),
		copied: make(chan struct{}), subs: map[chan State]struct{}{}}
	var err error
	if m.inR, m.inW, err = os.Pipe(); err != nil {
		return nil, fmt.Errorf("console input pipe: %w", err)
	}
	if m.outR, m.outW, err = os.Pipe(); err != nil {
		m.inR.Close()
		m.inW.Close()
		return nil, fmt.Errorf("console output pipe: %w", err)
	}
	if vmmLog != "" {
		if m.vmmLog, err = logcap.Open(vmmLog, 0o600, logMax); err != nil {
			m.closeFiles()
			return nil, fmt.Errorf("vmm log: %w", err)
		}
	}
	go m.copyConsole()
	return m, nil
}

// copyConsole copies the guest's console output to m.console until the VM
// has ended and the pipe is empty. The end is decided by the VM's state
// (endConsole), not by EOF: the guest runs in Apple's separate VM process,
// which keeps its own copy of the pipe's write end, so EOF may never come.
func (m *Machine) copyConsole() {
	defer close(m.copied)
	buf := make([]byte, 32<<10)
	for {
		n, err := m.outR.Read(buf)
		if n > 0 {
			m.console.Write(buf[:n])
		}
		if err == nil {
			continue
		}
		if errors.Is(err, os.ErrDeadlineExceeded) && m.consoleOver.Load() {
			m.drainConsole(buf)
		}
		return
	}
}

// drainConsole copies what the pipe still holds without waiting for more:
// the VM has ended, so nothing more will come.
func (m *Machine) drainConsole(buf []byte) {
	m.outR.SetReadDeadline(time.Time{})
	rc, err := m.outR.SyscallConn()
	if err != nil {
		return
	}
	for {
		n := 0
		err := rc.Read(func(fd uintptr) bool {
			for {
				var rerr error
				n, rerr = syscall.Read(int(fd), buf)
				if rerr != syscall.EINTR {
					return true // never wait: empty (EAGAIN) means done
				}
			}
		})
		if err != nil || n <= 0 {
			return
		}
		m.console.Write(buf[:n])
	}
}

// endConsole ends the console copy once the VM has ended: the copier
// stops waiting, takes what the pipe holds and returns.
func (m *Machine) endConsole() {
	m.consoleOver.Store(true)
	m.outR.SetReadDeadline(time.Now())
	<-m.copied
}

func (m *Machine) consoleFiles() consoleFiles {
	return consoleFiles{guestIn: m.inR, guestOut: m.outW}
}

// start creates the first VM and boots it.
func (m *Machine) start(ctx context.Context) error {
	vm, err := m.hv.newVM(m.cfg, m.consoleFiles())
	if err != nil {
		return fmt.Errorf("vm configuration: %w", err)
	}
	r := newRun(vm)
	m.mu.Lock()
	m.cur, m.state = r, StateStarting
	m.mu.Unlock()
	go m.watch(r)
	if err := bootVM(ctx, vm, vm.Start); err != nil {
		close(r.quit)
		return fmt.Errorf("start vm: %w", err)
	}
	m.logf("start vm: done")
	m.arm(r, StateRunning)
	return nil
}

// abandon releases what the machine holds once its VM has ended (or never
// started): the console is drained into the log first.
func (m *Machine) abandon() {
	m.outW.Close()
	m.endConsole()
	m.closeFiles()
}

func (m *Machine) closeFiles() {
	for _, f := range []*os.File{m.inR, m.inW, m.outR, m.outW} {
		if f != nil {
			f.Close()
		}
	}
	if m.vmmLog != nil {
		m.vmmLog.Close()
	}
}

// watch is the only reader of r's state notifications: it records every
// state, fans it out, and ends the machine on a terminal state.
func (m *Machine) watch(r *run) {
	for {
		st, ok := r.vm.NextState(r.quit)
		if !ok {
			return
		}
		m.mu.Lock()
		if m.cur == r && !m.ending && !m.rebooting {
			switch {
			case st.Terminal() || !m.expecting:
				m.state, m.expecting = st, false
			case st == m.expect:
				m.expecting = false
			}
			m.fanout(st)
		}
		if !st.Terminal() {
			m.mu.Unlock()
			m.logf("state %s", st)
			continue
		}
		r.hasEnded, r.terminal = true, st
		close(r.ended)
		end := r.armed && m.cur == r && !m.rebooting
		cause := m.cause
		m.mu.Unlock()
		m.logf("state %s", st)
		if end {
			m.finish(exitFor(st, cause, time.Now()))
		}
		return
	}
}

// arm marks r as started in state st. A VM that ended before arm (it
// stopped right after Start returned) ends the machine now.
func (m *Machine) arm(r *run, st State) {
	m.mu.Lock()
	r.armed = true
	if !r.hasEnded && !m.ending {
		m.state, m.expect, m.expecting = st, st, true
	}
	ended, term, cause := r.hasEnded, r.terminal, m.cause
	m.mu.Unlock()
	if ended {
		m.finish(exitFor(term, cause, time.Now()))
	}
}

// finish ends the machine once: record the exit, drain the console into
// the log, release the files, close Done.
func (m *Machine) finish(e engine.Exit) {
	m.finishOnce.Do(func() {
		m.mu.Lock()
		m.ending = true
		m.exit = e
		for c := range m.subs {
			close(c)
		}
		m.subs = nil
		m.mu.Unlock()
		m.logf("vm ended: %s", e.Reason)
		m.abandon()
		close(m.done)
	})
}

func (m *Machine) fanout(st State) {
	for c := range m.subs {
		select {
		case c <- st:
		default: // a slow subscriber misses states; State() stays exact
		}
	}
}

func (m *Machine) logf(format string, args ...any) {
	if m.vmmLog == nil {
		return
	}
	fmt.Fprintf(m.vmmLog, "%s vz: %s\n", time.Now().UTC().Format(time.RFC3339Nano), fmt.Sprintf(format, args...))
}

// current returns the live run and state, or ErrNotRunning.
func (m *Machine) current() (*run, State, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ending {
		return nil, 0, engine.ErrNotRunning
	}
	return m.cur, m.state, nil
}

func (m *Machine) setState(r *run, st State) {
	m.mu.Lock()
	if m.cur == r && !m.ending {
		m.state, m.expect, m.expecting = st, st, true
	}
	m.mu.Unlock()
}

// State returns the VM's current framework state.
func (m *Machine) State() State {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.state
}

// Subscribe returns a channel that receives the VM's state changes from
// now on, and a function that ends the subscription. The channel is
// closed when the VM ends. A subscriber that does not keep up misses
// states rather than stalling the framework's notifications.
func (m *Machine) Subscribe() (<-chan State, func()) {
	c := make(chan State, 16)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ending {
		close(c)
		return c, func() {}
	}
	m.subs[c] = struct{}{}
	return c, func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		if _, ok := m.subs[c]; ok {
			delete(m.subs, c)
			close(c)
		}
	}
}

// Console implements engine.Machine.
func (m *Machine) Console() io.Writer { return consoleWriter{m} }

type consoleWriter struct{ m *Machine }

func (w consoleWriter) Write(p []byte) (int, error) {
	select {
	case <-w.m.done:
		return 0, engine.ErrNotRunning
	default:
	}
	n, err := w.m.inW.Write(p)
	if err != nil && errors.Is(err, os.ErrClosed) {
		return n, engine.ErrNotRunning
	}
	return n, err
}

// PID implements engine.Machine: the VM lives in the shim's own process.
func (m *Machine) PID() int { return os.Getpid() }

// MachineID implements engine.Machine.
func (m *Machine) MachineID() []byte { return bytes.Clone(m.cfg.MachineID) }

// Done implements engine.Machine.
func (m *Machine) Done() <-chan struct{} { return m.done }

// Exit implements engine.Machine.
func (m *Machine) Exit() engine.Exit {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.exit
}

// callVM runs a blocking framework call under ctx. The framework cannot
// cancel its operations: when ctx ends first, the call goes on in the
// background and its result is dropped.
func callVM(ctx context.Context, op func() error) error { return runVM(ctx, op, nil) }

// bootVM is callVM for Start: if ctx ends first and the start later
// succeeds, the VM is stopped, so no orphan guest keeps running inside the
// shim.
func bootVM(ctx context.Context, vm vmHandle, op func() error) error {
	return runVM(ctx, op, func(err error) {
		if err == nil {
			vm.Stop()
		}
	})
}

// runVM runs op under ctx; when ctx ends first, late (if not nil) is
// handed op's result once it comes.
func runVM(ctx context.Context, op func() error, late func(error)) error {
	ch := make(chan error, 1)
	go func() { ch <- op() }()
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		if late != nil {
			go func() { late(<-ch) }()
		}
		return ctx.Err()
	}
}
