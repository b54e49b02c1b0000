package vz

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"hypefs/shim/engine"
)

// fakeHV stands in for Virtualization.framework. Its VMs move through the
// framework's states and emit them on one notification channel. Like
// Apple's VM process, each VM keeps its own copy of the console output
// pipe's write end for as long as the test runs, so the console never
// sees EOF when a VM ends. Like vz's Connect, a refused vsock connection
// comes back as a nil pointer inside a non-nil net.Conn next to the error.
type fakeHV struct {
	t *testing.T

	mu           sync.Mutex
	unsupported  error
	lim          limits
	idErr        error
	idCalls      int
	newVMErr     error
	startErr     error
	badID        string // checkMachineID refuses this identifier
	stopOnStart  bool   // the guest powers off the moment it starts
	obeyPowerBtn bool
	vsock        func(port uint32) (net.Conn, error)
	vms          []*fakeVM
}

func newFakeHV(t *testing.T) *fakeHV {
	h := &fakeHV{t: t, obeyPowerBtn: true,
		lim: limits{MinCPUs: 1, MaxCPUs: 8, MinMemory: 128 * mib, MaxMemory: 8192 * mib}}
	t.Cleanup(func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		for i, v := range h.vms {
			if v.concurrentReaders.Load() {
				t.Errorf("vm %d: two goroutines read the state notifications at once", i)
			}
		}
	})
	return h
}

func (h *fakeHV) supported() error { return h.unsupported }
func (h *fakeHV) limits() limits   { return h.lim }

func (h *fakeHV) newMachineID() ([]byte, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.idCalls++
	if h.idErr != nil {
		return nil, h.idErr
	}
	return fmt.Appendf(nil, "machine-id-%d", h.idCalls), nil
}

func (h *fakeHV) checkMachineID(id []byte) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.badID != "" && string(id) == h.badID {
		return fmt.Errorf("machine identifier: the framework does not accept these %d bytes (a damaged file?)", len(id))
	}
	return nil
}

func (h *fakeHV) newVM(cfg Config, con consoleFiles) (vmHandle, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.newVMErr != nil {
		return nil, h.newVMErr
	}
	if con.guestIn == nil || con.guestOut == nil {
		h.t.Errorf("newVM without console files")
	}
	if h.badID != "" && string(cfg.MachineID) == h.badID {
		h.t.Errorf("newVM with an identifier the framework refuses")
	}
	// The framework's process holds its own copy of the output pipe.
	fd, err := syscall.Dup(int(con.guestOut.Fd()))
	if err != nil {
		return nil, fmt.Errorf("fake: dup console: %w", err)
	}
	held := os.NewFile(uintptr(fd), "framework's console copy")
	h.t.Cleanup(func() { held.Close() })
	v := &fakeVM{hv: h, cfg: cfg, con: con, states: make(chan State, 64)}
	h.vms = append(h.vms, v)
	return v, nil
}

func (h *fakeHV) vm(i int) *fakeVM {
	h.mu.Lock()
	defer h.mu.Unlock()
	if i >= len(h.vms) {
		h.t.Fatalf("vm %d was never created (%d exist)", i, len(h.vms))
	}
	return h.vms[i]
}

func (h *fakeHV) vmCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.vms)
}

type fakeVM struct {
	hv  *fakeHV
	cfg Config
	con consoleFiles

	states            chan State
	readers           atomic.Int32
	concurrentReaders atomic.Bool

	mu    sync.Mutex
	state State
	calls []string
}

func (v *fakeVM) emit(sts ...State) {
	v.mu.Lock()
	v.state = sts[len(sts)-1]
	v.mu.Unlock()
	for _, s := range sts {
		v.states <- s
	}
}

func (v *fakeVM) record(call string) State {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.calls = append(v.calls, call)
	return v.state
}

func (v *fakeVM) Calls() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]string(nil), v.calls...)
}

func (v *fakeVM) Start() error {
	if st := v.record("start"); st != StateStopped {
		return fmt.Errorf("fake: start in state %s", st)
	}
	v.hv.mu.Lock()
	err, stop := v.hv.startErr, v.hv.stopOnStart
	v.hv.mu.Unlock()
	if err != nil {
		v.emit(StateStarting, StateError)
		return err
	}
	v.emit(StateStarting, StateRunning)
	if stop {
		v.emit(StateStopping, StateStopped)
	}
	return nil
}

func (v *fakeVM) Pause() error {
	if st := v.record("pause"); st != StateRunning {
		return fmt.Errorf("fake: pause in state %s", st)
	}
	v.emit(StatePausing, StatePaused)
	return nil
}

func (v *fakeVM) Resume() error {
	if st := v.record("resume"); st != StatePaused {
		return fmt.Errorf("fake: resume in state %s", st)
	}
	v.emit(StateResuming, StateRunning)
	return nil
}

func (v *fakeVM) RequestStop() error {
	v.record("request-stop")
	v.hv.mu.Lock()
	obey := v.hv.obeyPowerBtn
	v.hv.mu.Unlock()
	if obey {
		go v.emit(StateStopping, StateStopped)
	}
	return nil
}

func (v *fakeVM) Stop() error {
	if st := v.record("stop"); st.Terminal() {
		return fmt.Errorf("fake: stop in state %s", st)
	}
	v.emit(StateStopping, StateStopped)
	return nil
}

func (v *fakeVM) NextState(quit <-chan struct{}) (State, bool) {
	if v.readers.Add(1) > 1 {
		v.concurrentReaders.Store(true)
	}
	defer v.readers.Add(-1)
	select {
	case s := <-v.states:
		return s, true
	case <-quit:
		return 0, false
	}
}

func (v *fakeVM) ConnectVsock(port uint32) (net.Conn, error) {
	v.record(fmt.Sprintf("vsock %d", port))
	v.hv.mu.Lock()
	f := v.hv.vsock
	v.hv.mu.Unlock()
	if f == nil {
		var none *nilConn
		return none, errors.New("fake: connection refused")
	}
	return f(port)
}

// nilConn is what vz's Connect returns with an error: a nil pointer. Its
// methods fail like the real one's would (a nil dereference).
type nilConn struct{ net.Conn }

// guestCrash makes the framework report an internal error.
func (v *fakeVM) guestCrash() { v.emit(StateError) }

// guestPowerOff is the guest shutting itself down.
func (v *fakeVM) guestPowerOff() { v.emit(StateStopping, StateStopped) }

var _ engine.Engine = (*Engine)(nil)
