package vz

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"hypefs/shim/engine"
)

var testTime = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

// syncBuffer is the console log: the machine's copier writes it while the
// test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func boot(t *testing.T, hv *fakeHV, spec engine.Spec) (*Machine, *syncBuffer) {
	t.Helper()
	log := &syncBuffer{}
	em, err := (&Engine{hv: hv}).Boot(ctxT(t), spec, log)
	if err != nil {
		t.Fatalf("boot: %v", err)
	}
	m := em.(*Machine)
	t.Cleanup(func() {
		m.Stop(context.Background())
		waitDone(t, m)
	})
	return m, log
}

func waitDone(t *testing.T, m *Machine) {
	t.Helper()
	select {
	case <-m.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("machine did not end")
	}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func TestBootConsoleAndStop(t *testing.T) {
	hv := newFakeHV(t)
	spec := baseSpec(t)
	spec.VMMLog = filepath.Join(spec.RunDir, "vmm.log")
	m, log := boot(t, hv, spec)
	vm := hv.vm(0)
	if m.State() != StateRunning || m.PID() != os.Getpid() {
		t.Fatalf("state %s pid %d", m.State(), m.PID())
	}
	if vm.cfg.Cmdline != "panic=-1 quiet console=hvc0" {
		t.Fatalf("vm built with cmdline %q", vm.cfg.Cmdline)
	}

	// Guest output reaches the log; console writes reach the guest.
	vm.con.guestOut.Write([]byte("hypefs: guest ready\n"))
	eventually(t, "console output in the log", func() bool { return log.String() == "hypefs: guest ready\n" })
	if _, err := m.Console().Write([]byte("ls\n")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 3)
	if _, err := io.ReadFull(vm.con.guestIn, buf); err != nil || string(buf) != "ls\n" {
		t.Fatalf("guest read %q, %v", buf, err)
	}

	if err := m.Stop(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	waitDone(t, m)
	if e := m.Exit(); e.Reason != "vm stopped by request" || e.Crashed {
		t.Fatalf("exit %+v", e)
	}
	for name, err := range map[string]error{
		"pause":    m.Pause(ctxT(t)),
		"resume":   m.Resume(ctxT(t)),
		"stop":     m.Stop(ctxT(t)),
		"reboot":   m.Reboot(ctxT(t)),
		"power":    m.PowerButton(ctxT(t)),
		"snapshot": m.Snapshot(ctxT(t), t.TempDir()),
	} {
		if !errors.Is(err, engine.ErrNotRunning) {
			t.Errorf("%s after the end: %v, want ErrNotRunning", name, err)
		}
	}
	if _, err := m.Console().Write([]byte("x")); !errors.Is(err, engine.ErrNotRunning) {
		t.Errorf("console write after the end: %v", err)
	}
	if _, err := m.DialVsock(ctxT(t), 1); !errors.Is(err, engine.ErrNotRunning) {
		t.Errorf("dial after the end: %v", err)
	}
	vmm, _ := os.ReadFile(spec.VMMLog)
	for _, want := range []string{"start vm: done", "state stopped", "vm ended: vm stopped by request"} {
		if !strings.Contains(string(vmm), want) {
			t.Errorf("vmm.log lacks %q:\n%s", want, vmm)
		}
	}
}

func TestGuestPowerOffKeepsLastConsoleBytes(t *testing.T) {
	hv := newFakeHV(t)
	m, log := boot(t, hv, baseSpec(t))
	vm := hv.vm(0)
	vm.con.guestOut.Write([]byte("reboot: Power down\n"))
	vm.guestPowerOff()
	waitDone(t, m)
	if got := log.String(); got != "reboot: Power down\n" {
		t.Fatalf("log %q: the last console bytes must reach it before Done", got)
	}
	if e := m.Exit(); e.Reason != "guest powered off" || e.Crashed || e.Code != 0 {
		t.Fatalf("exit %+v", e)
	}
}

func TestFrameworkErrorIsACrash(t *testing.T) {
	hv := newFakeHV(t)
	m, _ := boot(t, hv, baseSpec(t))
	hv.vm(0).guestCrash()
	waitDone(t, m)
	if e := m.Exit(); !e.Crashed || e.Code != 1 {
		t.Fatalf("exit %+v", e)
	}
	if m.State() != StateError {
		t.Fatalf("state %s", m.State())
	}
}

func TestPauseResumeAndWrongStates(t *testing.T) {
	hv := newFakeHV(t)
	m, _ := boot(t, hv, baseSpec(t))
	sub, cancel := m.Subscribe()
	defer cancel()
	if err := m.Resume(ctxT(t)); !errors.Is(err, engine.ErrWrongState) {
		t.Fatalf("resume running: %v", err)
	}
	if err := m.Pause(ctxT(t)); err != nil || m.State() != StatePaused {
		t.Fatalf("pause: %v, state %s", err, m.State())
	}
	if err := m.Pause(ctxT(t)); !errors.Is(err, engine.ErrWrongState) {
		t.Fatalf("pause paused: %v", err)
	}
	if err := m.PowerButton(ctxT(t)); !errors.Is(err, engine.ErrWrongState) {
		t.Fatalf("power button paused: %v", err)
	}
	if err := m.Resume(ctxT(t)); err != nil || m.State() != StateRunning {
		t.Fatalf("resume: %v, state %s", err, m.State())
	}
	var seen []State
	eventually(t, "fanned-out states", func() bool {
		for {
			select {
			case s := <-sub:
				seen = append(seen, s)
				continue
			default:
			}
			return len(seen) >= 4 && seen[len(seen)-1] == StateRunning && seen[len(seen)-2] == StateResuming
		}
	})
	// Start's own notifications may arrive after Boot returned (the
	// framework delivers them asynchronously); they come first if at all.
	want := []State{StatePausing, StatePaused, StateResuming, StateRunning}
	if !slices.Equal(seen[len(seen)-4:], want) {
		t.Fatalf("subscriber saw %v, want %v", seen, want)
	}
	if got := hv.vm(0).Calls(); !slices.Equal(got, []string{"start", "pause", "resume"}) {
		t.Fatalf("framework calls %v", got)
	}
}

func TestPowerButton(t *testing.T) {
	hv := newFakeHV(t)
	m, _ := boot(t, hv, baseSpec(t))
	if err := m.PowerButton(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	waitDone(t, m)
	if e := m.Exit(); e.Reason != "guest powered off after the power button" || e.Crashed {
		t.Fatalf("exit %+v", e)
	}
}

func TestGuestStopsRightAfterStart(t *testing.T) {
	hv := newFakeHV(t)
	hv.stopOnStart = true
	m, _ := boot(t, hv, baseSpec(t))
	waitDone(t, m)
	if e := m.Exit(); e.Reason != "guest powered off" {
		t.Fatalf("exit %+v", e)
	}
}

func TestBootFailures(t *testing.T) {
	hv := newFakeHV(t)
	hv.unsupported = errors.New("vz needs Apple silicon")
	if _, err := (&Engine{hv: hv}).Boot(ctxT(t), baseSpec(t), nil); err == nil || err.Error() != "vz needs Apple silicon" {
		t.Fatalf("unsupported host: %v", err)
	}
	hv.unsupported = nil

	spec := baseSpec(t)
	spec.Accel = "tcg"
	if _, err := (&Engine{hv: hv}).Boot(ctxT(t), spec, nil); err == nil || !strings.HasPrefix(err.Error(), "vm configuration: ") {
		t.Fatalf("bad spec: %v", err)
	}

	hv.newVMErr = errors.New("invalid virtual machine configuration")
	if _, err := (&Engine{hv: hv}).Boot(ctxT(t), baseSpec(t), nil); err == nil || !strings.Contains(err.Error(), "invalid virtual machine configuration") {
		t.Fatalf("framework refuses config: %v", err)
	}
	hv.newVMErr = nil

	hv.startErr = errors.New("internal virtualization error")
	if _, err := (&Engine{hv: hv}).Boot(ctxT(t), baseSpec(t), nil); err == nil || !strings.HasPrefix(err.Error(), "start vm: ") {
		t.Fatalf("start failure: %v", err)
	}
	hv.startErr = nil

	hv.idErr = errors.New("keychain exploded")
	if _, err := (&Engine{hv: hv}).Boot(ctxT(t), baseSpec(t), nil); err == nil || !strings.Contains(err.Error(), "machine identifier: keychain exploded") {
		t.Fatalf("identifier failure: %v", err)
	}
}

func TestMachineIDFirstBootThenPersisted(t *testing.T) {
	hv := newFakeHV(t)
	m, _ := boot(t, hv, baseSpec(t))
	id := m.MachineID()
	if string(id) != "machine-id-1" || string(hv.vm(0).cfg.MachineID) != "machine-id-1" {
		t.Fatalf("first boot: machine %q, vm %q", id, hv.vm(0).cfg.MachineID)
	}
	id[0] = 'X' // callers get a copy
	if string(m.MachineID()) != "machine-id-1" {
		t.Fatal("MachineID returned the machine's own slice")
	}

	spec := baseSpec(t)
	spec.MachineID = []byte("persisted")
	m2, _ := boot(t, hv, spec)
	if string(m2.MachineID()) != "persisted" || string(hv.vm(1).cfg.MachineID) != "persisted" {
		t.Fatalf("persisted id not used: %q", hv.vm(1).cfg.MachineID)
	}
	if hv.idCalls != 1 {
		t.Fatalf("%d identifiers created, want 1", hv.idCalls)
	}
}

func TestRebootBootsAFreshVMWithTheSameIdentity(t *testing.T) {
	hv := newFakeHV(t)
	m, log := boot(t, hv, baseSpec(t))
	if err := m.Reboot(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-m.Done():
		t.Fatalf("reboot ended the machine: %+v", m.Exit())
	default:
	}
	old, fresh := hv.vm(0), hv.vm(1)
	if !slices.Equal(old.Calls(), []string{"start", "stop"}) || !slices.Equal(fresh.Calls(), []string{"start"}) {
		t.Fatalf("calls old %v fresh %v", old.Calls(), fresh.Calls())
	}
	if string(fresh.cfg.MachineID) != string(old.cfg.MachineID) || fresh.con != old.con {
		t.Fatal("fresh VM must reuse the identifier and the console pipes")
	}
	if m.State() != StateRunning {
		t.Fatalf("state %s", m.State())
	}
	fresh.con.guestOut.Write([]byte("booted again\n"))
	eventually(t, "console after reboot", func() bool { return log.String() == "booted again\n" })
	fresh.guestPowerOff()
	waitDone(t, m)
	if e := m.Exit(); e.Reason != "guest powered off" {
		t.Fatalf("exit %+v", e)
	}
}

func TestDialVsock(t *testing.T) {
	hv := newFakeHV(t)
	guestEnds := make(chan net.Conn, 1)
	hv.vsock = func(port uint32) (net.Conn, error) {
		if port == 99 {
			time.Sleep(time.Hour) // a guest that never answers
		}
		a, b := net.Pipe()
		guestEnds <- b
		return a, nil
	}
	m, _ := boot(t, hv, baseSpec(t))
	var d VsockDialer = m
	c, err := d.DialVsock(ctxT(t), 1024)
	if err != nil {
		t.Fatal(err)
	}
	g := <-guestEnds
	go c.Write([]byte("ping"))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(g, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("guest read %q, %v", buf, err)
	}
	c.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := d.DialVsock(ctx, 99); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("stalled connect: %v", err)
	}
	hv.mu.Lock()
	hv.vsock = nil
	hv.mu.Unlock()
	if _, err := d.DialVsock(ctxT(t), 5); err == nil || !strings.Contains(err.Error(), "connect to guest vsock port 5") {
		t.Fatalf("refused connect: %v", err)
	}
}

// vz refuses snapshots and restores with engine.ErrUnsupported and a
// sentence, in every state, and builds no VM for a restore.
func TestSnapshotAndRestoreRefused(t *testing.T) {
	hv := newFakeHV(t)
	m, _ := boot(t, hv, baseSpec(t))
	dir := t.TempDir()
	for _, pause := range []bool{false, true} {
		if pause {
			if err := m.Pause(ctxT(t)); err != nil {
				t.Fatal(err)
			}
		}
		err := m.Snapshot(ctxT(t), dir)
		if !errors.Is(err, engine.ErrUnsupported) || !strings.Contains(err.Error(), "vz does not save or restore VMs") {
			t.Fatalf("snapshot (paused %v): %v", pause, err)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("a refused snapshot left files: %v", ents)
	}
	if got := hv.vm(0).Calls(); !slices.Equal(got, []string{"start", "pause"}) {
		t.Fatalf("framework calls %v", got)
	}
	spec := baseSpec(t)
	spec.RestoreFrom = dir
	n := hv.vmCount()
	if _, err := (&Engine{hv: hv}).Boot(ctxT(t), spec, nil); !errors.Is(err, engine.ErrUnsupported) || !strings.HasPrefix(err.Error(), "restore: vz does not") {
		t.Fatalf("restore: %v", err)
	}
	if hv.vmCount() != n {
		t.Fatal("a refused restore built a VM")
	}
}

func TestNoMachineIDOnOldMacOS(t *testing.T) {
	hv := newFakeHV(t)
	hv.idErr = errors.Join(engine.ErrUnsupported, errors.New("macOS 13 needed"))
	m, _ := boot(t, hv, baseSpec(t))
	if m.MachineID() != nil || hv.vm(0).cfg.MachineID != nil {
		t.Fatalf("id %q", m.MachineID())
	}
}

// A persisted identifier the framework refuses (a damaged file) never
// reaches the configuration: the VM boots with a new one, which the shim
// then persists, and vmm.log says so.
func TestDamagedMachineIDIsReplaced(t *testing.T) {
	hv := newFakeHV(t)
	hv.badID = "\x00garbage"
	spec := baseSpec(t)
	spec.MachineID = []byte(hv.badID)
	spec.VMMLog = filepath.Join(spec.RunDir, "vmm.log")
	m, _ := boot(t, hv, spec)
	if string(m.MachineID()) != "machine-id-1" || string(hv.vm(0).cfg.MachineID) != "machine-id-1" {
		t.Fatalf("machine %q, vm %q", m.MachineID(), hv.vm(0).cfg.MachineID)
	}
	vmm, _ := os.ReadFile(spec.VMMLog)
	if !strings.Contains(string(vmm), "the instance's machine identifier is unusable (machine identifier: the framework does not accept these 8 bytes (a damaged file?)); booting with a new one") {
		t.Fatalf("vmm.log:\n%s", vmm)
	}
}

// The console ends with the VM's state, not with EOF: the fake framework
// keeps its own copy of the pipe's write end (as Apple's VM process
// does), so EOF never comes, yet every byte the guest wrote before it
// stopped is in the log when Done closes, on each way a VM ends.
func TestConsoleEndsWithTheVM(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 3000) // 48 KB: more than one read
	for name, end := range map[string]func(m *Machine, vm *fakeVM){
		"guest powers off": func(_ *Machine, vm *fakeVM) { vm.guestPowerOff() },
		"stop":             func(m *Machine, _ *fakeVM) { m.Stop(ctxT(t)) },
		"framework error":  func(_ *Machine, vm *fakeVM) { vm.guestCrash() },
	} {
		t.Run(name, func(t *testing.T) {
			hv := newFakeHV(t)
			m, log := boot(t, hv, baseSpec(t))
			vm := hv.vm(0)
			if _, err := vm.con.guestOut.Write(append(big, "reboot: Power down\n"...)); err != nil {
				t.Fatal(err)
			}
			end(m, vm)
			waitDone(t, m)
			if got := log.String(); got != string(big)+"reboot: Power down\n" {
				t.Fatalf("log has %d bytes, ends %q; want all %d", len(got), got[max(0, len(got)-30):], len(big)+19)
			}
		})
	}
	// A VM that never started releases its console the same way.
	hv := newFakeHV(t)
	hv.startErr = errors.New("internal virtualization error")
	if _, err := (&Engine{hv: hv}).Boot(ctxT(t), baseSpec(t), nil); err == nil {
		t.Fatal("start failure not reported")
	}
}
