package shim

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"sync"
	"time"

	"hypefs/internal/atomicfile"
	"hypefs/internal/bootid"
	"hypefs/internal/sock"
	"hypefs/shim/api"
	"hypefs/shim/engine"
	"hypefs/shim/vsockproxy"
)

// VsockDialer is implemented by machines whose guests have vsock; the
// shim then serves the CONNECT-port proxy on Config.VsockSocket.
type VsockDialer interface {
	DialVsock(ctx context.Context, port uint32) (net.Conn, error)
}

// Shim supervises one VM.
type Shim struct {
	cfg     *api.Config
	eng     engine.Engine
	log     *slog.Logger
	started time.Time
	bootID  string

	console  *console
	apiL     net.Listener
	consoleL net.Listener
	srv      *http.Server
	vsock    *vsockproxy.Server

	// opMu makes each state-changing action (check the state, drive the
	// hypervisor, record the new state) one step: two concurrent actions
	// could otherwise record their states in another order than QEMU ran
	// them (a late "running" after a "paused" that came later).
	opMu sync.Mutex

	mu      sync.Mutex
	m       engine.Machine
	state   string
	before  string // state to go back to on resume
	ready   *time.Time
	gexit   *int   // the guest program's exit status, from the console
	address string // the guest's address/prefix, from the console
	exit    *api.ExitRecord
	detail  string // why the VM is ending, set by graceful stop
	subs    map[chan api.Event]struct{}
	seq     uint64 // state changes so far
	why     string // the detail of the last state change
	stopReq bool   // someone asked the VM to end
	// powerHeld: a shutdown was asked while the guest booted; the power
	// button is pressed when the guest says it is ready (a guest still
	// booting has nothing listening to it yet).
	powerHeld bool

	done chan struct{} // closed once the exit record is written
}

// Start listens on the shim's sockets, boots the VM and writes the shim's
// record. When it returns without error the VM runs and the API answers.
func Start(ctx context.Context, cfg *api.Config, eng engine.Engine, log *slog.Logger) (*Shim, error) {
	s := &Shim{
		cfg: cfg, eng: eng, log: log, started: time.Now().UTC(), bootID: bootid.Current(),
		state: api.Booting, subs: map[chan api.Event]struct{}{}, done: make(chan struct{}),
	}
	os.Remove(cfg.ExitPath)
	var err error
	if s.console, err = newConsole(cfg.LogPath, cfg.LogMax, s.guestReady, s.guestExited); err != nil {
		return nil, fmt.Errorf("open console log: %w", err)
	}
	s.console.onAddress = s.guestAddress
	if s.apiL, err = sock.ListenUnix(cfg.APISocket); err != nil {
		return nil, err
	}
	if s.consoleL, err = sock.ListenUnix(cfg.ConsoleSocket); err != nil {
		s.apiL.Close()
		return nil, err
	}
	spec := cfg.Engine
	if cfg.MachineIDPath != "" {
		if id, err := os.ReadFile(cfg.MachineIDPath); err == nil && len(id) > 0 {
			spec.MachineID = id
		}
	}
	m, err := eng.Boot(ctx, spec, s.console)
	if err != nil {
		s.closeSockets()
		return nil, fmt.Errorf("boot: %w", err)
	}
	s.m = m
	if id := m.MachineID(); cfg.MachineIDPath != "" && len(id) > 0 {
		if err := atomicfile.WriteFile(cfg.MachineIDPath, id, 0o600); err != nil {
			log.Warn("persist machine id", "err", err)
		}
	}
	rec := api.Record{
		APIVersion: api.APIVersion, ShimPID: os.Getpid(), HypervisorPID: m.PID(), BootID: s.bootID,
		Started: s.started, Hypervisor: eng.Name(), Accel: spec.Accel,
	}
	if err := atomicfile.WriteJSON(cfg.RecordPath, rec, 0o600); err != nil {
		m.Stop(context.Background())
		s.closeSockets()
		return nil, fmt.Errorf("write shim record: %w", err)
	}
	if vd, ok := m.(VsockDialer); ok && cfg.VsockSocket != "" {
		l, err := sock.ListenUnix(cfg.VsockSocket)
		if err != nil {
			m.Stop(context.Background())
			s.closeSockets()
			return nil, err
		}
		s.vsock = &vsockproxy.Server{Dial: vd.DialVsock, Logf: func(format string, args ...any) {
			log.Info(fmt.Sprintf(format, args...))
		}}
		go s.vsock.Serve(l)
	}
	s.srv = &http.Server{Handler: s.routes(), ReadHeaderTimeout: 10 * time.Second}
	go s.srv.Serve(s.apiL)
	go s.console.serve(s.consoleL, func() io.Writer { return s.machine().Console() })
	go s.watch()
	if h, ok := m.(engine.Halter); ok {
		go s.watchHalts(h.Halts())
	}
	return s, nil
}

// watchHalts shows a VM the hypervisor paused by itself as paused, with
// a sentence for the error file; resume continues it.
func (s *Shim) watchHalts(halts <-chan engine.Halt) {
	for {
		select {
		case h := <-halts:
			s.halted(h)
		case <-s.m.Done():
			return
		}
	}
}

func (s *Shim) halted(h engine.Halt) {
	s.opMu.Lock()
	defer s.opMu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.exit != nil || (s.state != api.Running && s.state != api.Booting) {
		return
	}
	s.before = s.state
	disk := h.Disk
	var i int
	if _, err := fmt.Sscanf(h.Disk, "d%d", &i); err == nil && i >= 0 && i < len(s.cfg.Engine.Disks) {
		disk = s.cfg.Engine.Disks[i].Path
	}
	msg := fmt.Sprintf("the VM was paused: its disk %s could not be written", disk)
	if h.NoSpace {
		msg = fmt.Sprintf("the VM was paused: the host's disk is full, so the VM's disk %s could not be written (hint: free space on the host's disk that holds it, then echo resume > ctl)", disk)
	} else if h.Reason != "" {
		msg += " (" + h.Reason + ")"
	}
	s.log.Warn("hypervisor paused the VM", "disk", disk, "nospace", h.NoSpace, "reason", h.Reason)
	s.setStateErrLocked(api.Paused, "disk write failed", msg)
}

// Done is closed when the VM has ended and the exit record is written.
func (s *Shim) Done() <-chan struct{} { return s.done }

// Close stops serving: it removes the sockets first, so that nobody dials
// a shim that is going away, then ends the API server.
func (s *Shim) Close() {
	s.closeSockets()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if s.srv != nil {
		s.srv.Shutdown(ctx)
	}
}

func (s *Shim) closeSockets() {
	os.Remove(s.cfg.APISocket)
	os.Remove(s.cfg.ConsoleSocket)
	if s.vsock != nil {
		os.Remove(s.cfg.VsockSocket)
		s.vsock.Close()
	}
	if s.apiL != nil {
		s.apiL.Close()
	}
	if s.consoleL != nil {
		s.consoleL.Close()
	}
}

func (s *Shim) machine() engine.Machine {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m
}

// watch waits for the VM to end, then records how.
func (s *Shim) watch() {
	<-s.m.Done()
	ex := s.m.Exit()
	s.mu.Lock()
	state := api.Stopped
	if ex.Crashed && !s.stopReq {
		state = api.Crashed
	}
	rec := &api.ExitRecord{Exit: ex, State: state, ShimPID: os.Getpid(), Started: s.started, Detail: s.detail, GuestExit: s.gexit}
	s.exit = rec
	s.mu.Unlock()
	if err := atomicfile.WriteJSON(s.cfg.ExitPath, rec, 0o600); err != nil {
		s.log.Error("write exit record", "err", err)
	}
	detail := ex.Reason
	if rec.Detail != "" {
		detail = rec.Detail
	}
	s.setState(state, detail)
	s.console.closeClients()
	s.mu.Lock()
	for ch := range s.subs {
		delete(s.subs, ch)
		close(ch)
	}
	s.mu.Unlock()
	close(s.done)
}

func (s *Shim) guestExited(code int) {
	s.mu.Lock()
	s.gexit = &code
	s.mu.Unlock()
}

// guestAddress records the address the guest's init announced. A new
// address is an event of its own, in the current state.
func (s *Shim) guestAddress(a netip.Prefix) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a.String() == s.address || s.exit != nil {
		return
	}
	s.address = a.String()
	s.setStateLocked(s.state, "guest address "+s.address)
}

func (s *Shim) guestReady() {
	now := time.Now().UTC()
	s.mu.Lock()
	s.ready = &now
	change := s.state == api.Booting
	if s.state == api.Paused && s.before == api.Booting {
		s.before = api.Running
	}
	press := s.powerHeld
	s.powerHeld = false
	s.mu.Unlock()
	if change {
		s.setStateIf(api.Booting, api.Running, "guest ready")
	}
	if press {
		// Not on the console's goroutine: that one must keep reading.
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := s.m.PowerButton(ctx); err != nil {
				s.log.Warn("press the held power button", "err", err)
				return
			}
			s.log.Info("the guest is ready: pressed the power button held since its boot")
		}()
	}
}

func (s *Shim) setState(state, detail string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.setStateLocked(state, detail)
}

func (s *Shim) setStateIf(from, to, detail string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state != from {
		return false
	}
	s.setStateLocked(to, detail)
	return true
}

func (s *Shim) setStateLocked(state, detail string) { s.setStateErrLocked(state, detail, "") }

// setStateErrLocked is setStateLocked with a sentence for the error file.
func (s *Shim) setStateErrLocked(state, detail, errText string) {
	s.state = state
	s.why = detail
	s.seq++
	ev := api.Event{Time: time.Now().UTC(), State: state, Detail: detail, Seq: s.seq, Address: s.address, Error: errText}
	for ch := range s.subs {
		select {
		case ch <- ev:
		default:
			// A subscriber this far behind is cut off rather than shown
			// a gap: its stream ends, and a client that follows again
			// (the daemon does) starts from the state now.
			delete(s.subs, ch)
			close(ch)
		}
	}
}

// ended reports whether the VM is over.
func (s *Shim) ended() bool {
	select {
	case <-s.m.Done():
		return true
	default:
		return false
	}
}

// act runs one state-changing action as one step: under opMu it checks
// that the VM is in one of the states from, drives the hypervisor, and
// records the state the action led to.
func (s *Shim) act(from []string, drive func() error, record func(was string)) error {
	s.opMu.Lock()
	defer s.opMu.Unlock()
	s.mu.Lock()
	st := s.state
	s.mu.Unlock()
	if !slices.Contains(from, st) {
		return fmt.Errorf("%w: the VM is %s", engine.ErrWrongState, st)
	}
	if err := drive(); err != nil {
		return err
	}
	record(st)
	return nil
}

func (s *Shim) pause(ctx context.Context) error {
	return s.act([]string{api.Running, api.Booting}, func() error { return s.m.Pause(ctx) }, func(was string) {
		s.mu.Lock()
		s.before = was
		s.setStateLocked(api.Paused, "pause")
		s.mu.Unlock()
	})
}

func (s *Shim) resume(ctx context.Context) error {
	return s.act([]string{api.Paused}, func() error { return s.m.Resume(ctx) }, func(string) {
		s.mu.Lock()
		back := s.before
		s.mu.Unlock()
		if back == "" {
			back = api.Running
		}
		s.setStateIf(api.Paused, back, "resume")
	})
}

func (s *Shim) reboot(ctx context.Context) error {
	drive := func() error {
		s.console.rearm()
		return s.m.Reboot(ctx)
	}
	return s.act([]string{api.Running, api.Booting}, drive, func(string) {
		s.mu.Lock()
		s.ready = nil
		s.setStateLocked(api.Booting, "reboot")
		s.mu.Unlock()
	})
}

// stop ends the VM now (vm.shutdown).
func (s *Shim) stop(ctx context.Context, detail string) error {
	if s.ended() {
		return nil
	}
	s.mu.Lock()
	s.stopReq = true
	if detail != "" {
		s.detail = detail
	}
	s.mu.Unlock()
	return s.m.Stop(ctx)
}

// HeldShutdown is the detail of the stopping state entered by a shutdown
// asked while the guest boots.
const HeldShutdown = "shutdown asked while the guest boots: the power button is pressed when it is ready"

// gracefulStop presses the power button and ends the VM if it is still
// there after timeout, saying so in the exit record. It returns at once.
// While the guest boots, the press is held until the guest says it is
// ready (guestReady); the timeout counts from the request all the same.
func (s *Shim) gracefulStop(ctx context.Context, timeout time.Duration) error {
	s.opMu.Lock()
	defer s.opMu.Unlock()
	s.mu.Lock()
	st := s.state
	switch st {
	case api.Paused:
		s.mu.Unlock()
		return fmt.Errorf("%w: the VM is paused (resume it first, or kill it)", engine.ErrWrongState)
	case api.Stopping:
		s.mu.Unlock()
		return nil
	case api.Booting:
		s.stopReq = true
		s.powerHeld = true
		s.setStateLocked(api.Stopping, HeldShutdown)
		s.mu.Unlock()
	default:
		s.mu.Unlock()
		if err := s.m.PowerButton(ctx); err != nil {
			return err
		}
		s.mu.Lock()
		s.stopReq = true
		s.setStateLocked(api.Stopping, "power button pressed")
		s.mu.Unlock()
	}
	go func() {
		select {
		case <-s.m.Done():
		case <-time.After(timeout):
			msg := fmt.Sprintf("the guest did not shut down within %s after the power button; it was killed", timeout)
			s.mu.Lock()
			if s.powerHeld {
				msg = fmt.Sprintf("the guest did not become ready within %s of a shutdown asked while it booted; it was killed", timeout)
			}
			s.mu.Unlock()
			s.stop(context.Background(), msg)
		}
	}()
	return nil
}

func (s *Shim) status() api.Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := api.Status{
		State: s.state, Hypervisor: s.eng.Name(), Accel: s.cfg.Engine.Accel, ShimPID: os.Getpid(),
		HypervisorPID: s.m.PID(), BootID: s.bootID, Started: s.started, Ready: s.ready, Seq: s.seq,
		Address: s.address,
	}
	if s.exit != nil {
		ex := s.exit.Exit
		st.Exit = &ex
	}
	return st
}

func (s *Shim) subscribe() (chan api.Event, api.Event) {
	ch := make(chan api.Event, 64)
	s.mu.Lock()
	defer s.mu.Unlock()
	first := api.Event{Time: time.Now().UTC(), State: s.state, Seq: s.seq, Address: s.address}
	if s.exit == nil {
		s.subs[ch] = struct{}{}
	} else {
		close(ch)
	}
	return ch, first
}

func (s *Shim) unsubscribe(ch chan api.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.subs[ch]; ok {
		delete(s.subs, ch)
		close(ch)
	}
}

// Seq is the number of state changes so far, the state they led to, and
// the detail of the last change.
func (s *Shim) Seq() (uint64, string, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seq, s.state, s.why
}

// Stop ends the VM now, recording detail as the reason.
func (s *Shim) Stop(ctx context.Context, detail string) error { return s.stop(ctx, detail) }
