//go:build linux

package qemu

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"hypefs/shim/engine"
)

// TestLifecycle drives one VM through everything a user does with it:
// boot, type, pause, snapshot, restore, resume, reboot, power button.
func TestLifecycle(t *testing.T) {
	start := time.Now()
	m, con, spec := boot(t, nil)
	ctx := context.Background()
	off := con.waitFor(t, readyMarker, 0, 60*time.Second)
	t.Logf("boot to ready: %v", time.Since(start).Round(time.Millisecond))

	// The console works both ways.
	type_(t, m, "echo hi-$((6*7))\n")
	off = con.waitFor(t, "hi-42", off, 10*time.Second)

	// Paused: QEMU says so and the guest prints nothing, even when asked.
	if err := m.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	if st, err := m.Status(ctx); err != nil || st != "paused" {
		t.Fatalf("status after pause = %q, %v", st, err)
	}
	measureStopRoundTrip(t, m)

	// Snapshot while paused, then restore it into a second QEMU.
	snap := t.TempDir()
	t0 := time.Now()
	if err := m.Snapshot(ctx, snap); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(snap, stateFile))
	if err != nil || fi.Size() == 0 {
		t.Fatalf("state file: %v %v", fi, err)
	}
	if _, err := os.Stat(filepath.Join(snap, configFile)); err != nil {
		t.Fatal(err)
	}
	t.Logf("snapshot of a %d MiB guest: %d bytes in %v", spec.MemoryMiB, fi.Size(), time.Since(t0).Round(time.Millisecond))
	t.Run("restore", func(t *testing.T) { testRestore(t, snap) })

	// Input typed while paused waits; the guest prints nothing.
	type_(t, m, "echo paused-$((2*3))\n")
	quiet := con.Len()
	time.Sleep(500 * time.Millisecond)
	if n := con.Len(); n != quiet {
		t.Errorf("paused guest wrote %d bytes", n-quiet)
	}

	// Resume: the input typed while paused runs now.
	if err := m.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	if st, _ := m.Status(ctx); st != "running" {
		t.Errorf("status after resume = %q", st)
	}
	off = con.waitFor(t, "paused-6", off, 10*time.Second)

	// Reboot in place: the guest boots again in the same QEMU.
	pid := m.PID()
	t0 = time.Now()
	if err := m.Reboot(ctx); err != nil {
		t.Fatal(err)
	}
	off = con.waitFor(t, readyMarker, off, 60*time.Second)
	t.Logf("reboot to ready: %v", time.Since(t0).Round(time.Millisecond))
	if m.PID() != pid {
		t.Errorf("pid changed across reboot: %d -> %d", pid, m.PID())
	}
	type_(t, m, "echo again-$((1+1))\n")
	con.waitFor(t, "again-2", off, 10*time.Second)

	// The power button ends the VM cleanly.
	t0 = time.Now()
	if err := m.PowerButton(ctx); err != nil {
		t.Fatal(err)
	}
	x := waitDone(t, m, 30*time.Second)
	t.Logf("power button to exit: %v; exit %+v", time.Since(t0).Round(time.Millisecond), x)
	if x.Crashed || x.Code != 0 || x.Reason != "guest powered off" {
		t.Errorf("exit = %+v, want a clean power-off", x)
	}
	if err := m.Pause(ctx); !errors.Is(err, engine.ErrNotRunning) {
		t.Errorf("pause after exit: %v", err)
	}
	if _, err := m.Console().Write([]byte("x")); !errors.Is(err, engine.ErrNotRunning) {
		t.Errorf("console after exit: %v", err)
	}
}

// testRestore boots a second QEMU from a snapshot: it comes up paused
// and, resumed, runs the same shell.
func testRestore(t *testing.T, snap string) {
	ctx := context.Background()
	t0 := time.Now()
	m, con, _ := boot(t, func(s *engine.Spec) { s.RestoreFrom = snap })
	if st, err := m.Status(ctx); err != nil || st != "paused" {
		t.Fatalf("restored status = %q, %v", st, err)
	}
	t.Logf("restore to paused: %v", time.Since(t0).Round(time.Millisecond))
	if err := m.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	type_(t, m, "echo restored-$((3*3))\n")
	con.waitFor(t, "restored-9", 0, 10*time.Second)
	if err := m.Stop(ctx); err != nil {
		t.Fatal(err)
	}
}

// measureStopRoundTrip times QMP stop (and cont) on a live guest; the VM
// is left paused.
func measureStopRoundTrip(t *testing.T, m *Machine) {
	ctx := context.Background()
	const n = 20
	var stops, conts []time.Duration
	for range n {
		t0 := time.Now()
		if err := m.Resume(ctx); err != nil {
			t.Fatal(err)
		}
		conts = append(conts, time.Since(t0))
		t0 = time.Now()
		if err := m.Pause(ctx); err != nil {
			t.Fatal(err)
		}
		stops = append(stops, time.Since(t0))
	}
	slices.Sort(stops)
	slices.Sort(conts)
	t.Logf("qmp stop round trip: min %v median %v max %v; cont median %v (n=%d)",
		stops[0], stops[n/2], stops[n-1], conts[n/2], n)
}

func type_(t *testing.T, m *Machine, s string) {
	t.Helper()
	if _, err := m.Console().Write([]byte(s)); err != nil {
		t.Fatal(err)
	}
}

// Stop ends a VM at once, whatever the guest is doing (here: booting).
func TestStop(t *testing.T) {
	t.Parallel()
	m, _, _ := boot(t, nil)
	time.Sleep(300 * time.Millisecond)
	t0 := time.Now()
	if err := m.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	d := time.Since(t0)
	x := m.Exit()
	t.Logf("stop: %v; exit %+v", d.Round(time.Millisecond), x)
	if d > time.Second {
		t.Errorf("stop took %v", d)
	}
	if x.Crashed || x.Reason != "stopped by request" {
		t.Errorf("exit = %+v", x)
	}
	if err := m.Stop(context.Background()); !errors.Is(err, engine.ErrNotRunning) {
		t.Errorf("second stop: %v", err)
	}
	if err := m.Reboot(context.Background()); !errors.Is(err, engine.ErrNotRunning) {
		t.Errorf("reboot after stop: %v", err)
	}
}

// A QEMU killed from outside is a crash, and the signal is named.
func TestKilledFromOutside(t *testing.T) {
	t.Parallel()
	m, _, _ := boot(t, nil)
	if err := syscall.Kill(m.PID(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	x := waitDone(t, m, 10*time.Second)
	if !x.Crashed || x.Signal != "SIGKILL" || x.Code != -1 || !strings.Contains(x.Reason, "SIGKILL") {
		t.Errorf("exit = %+v", x)
	}
}

func TestMissingBinary(t *testing.T) {
	e := &Engine{Binary: "qemu-system-nowhere"}
	_, err := e.Boot(context.Background(), engine.Spec{RunDir: t.TempDir(), Kernel: "/k"}, nil)
	if err == nil || !strings.Contains(err.Error(), `(hint: run "make deps")`) || !strings.Contains(err.Error(), "qemu-system-nowhere") {
		t.Fatalf("err = %v", err)
	}
}

// QEMU refusing to start is reported with its own words, quickly; a
// kernel that is not there, before QEMU starts.
func TestBootFailure(t *testing.T) {
	if skipReason != "" {
		t.Skip(skipReason)
	}
	run, _ := os.MkdirTemp("", "q")
	defer os.RemoveAll(run)
	spec := engine.Spec{RunDir: run, Kernel: filepath.Join(run, "no-such-kernel"), Accel: "tcg"}
	_, err := New().Boot(context.Background(), spec, nil)
	if err == nil || !strings.Contains(err.Error(), "no-such-kernel") {
		t.Fatalf("missing kernel: err = %v", err)
	}
	bad := filepath.Join(run, "not-a-kernel")
	os.WriteFile(bad, []byte("garbage"), 0o644)
	spec.Kernel, spec.User = bad, testUser()
	t0 := time.Now()
	_, err = New().Boot(context.Background(), spec, nil)
	if err == nil || !strings.Contains(err.Error(), "qemu exited with status") || !strings.Contains(err.Error(), "kernel header") {
		t.Fatalf("garbage kernel: err = %v", err)
	}
	t.Logf("failed in %v: %v", time.Since(t0).Round(time.Millisecond), err)
}

// QEMU runs as the unprivileged user it was given, from its start, under
// its seccomp filter, and names its run directory in its environment.
func TestConfined(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: QEMU runs as another user only when started by root")
	}
	t.Parallel()
	m, _, spec := boot(t, nil)
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", m.PID()))
	if err != nil {
		t.Fatal(err)
	}
	fields := map[string]string{}
	for _, l := range strings.Split(string(st), "\n") {
		k, v, _ := strings.Cut(l, ":")
		fields[k] = strings.Join(strings.Fields(v), " ")
	}
	if fields["Uid"] != "65534 65534 65534 65534" || fields["Gid"] != "65534 65534 65534 65534" {
		t.Errorf("QEMU runs as Uid %q Gid %q, want nobody's 65534", fields["Uid"], fields["Gid"])
	}
	if fields["Seccomp"] != "2" || fields["NoNewPrivs"] != "1" {
		t.Errorf("QEMU's Seccomp %q NoNewPrivs %q, want a filter (2) and no new privileges (1)", fields["Seccomp"], fields["NoNewPrivs"])
	}
	env, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", m.PID()))
	if !strings.Contains(string(env), "\x00"+engine.RunDirEnv+"="+spec.RunDir+"\x00") {
		t.Errorf("QEMU's environment does not name its run directory")
	}
}
