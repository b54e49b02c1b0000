package shim_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"hypefs/backend/guest"
	"hypefs/backend/host"
	"hypefs/internal/testenv"
	"hypefs/shim"
	"hypefs/shim/api"
	"hypefs/shim/client"
	"hypefs/shim/engine"
	"hypefs/shim/qemu"
)

// startShim runs a shim in this process over real QEMU.
func startShim(t *testing.T) (*shim.Shim, *api.Config) {
	t.Helper()
	testenv.Require(t)
	bins := testenv.Bins(t)
	ctx := context.Background()
	gb, err := guest.Prepare(ctx, guest.Options{KernelsDir: testenv.Kernels(), Init: filepath.Join(bins, "hypefs-init"), Arch: runtime.GOARCH})
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "shim")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Mkdir(filepath.Join(dir, "e"), 0o700)
	cmdline := gb.Cmdline
	if f := host.Probe(); f.Accel == "tcg" && f.TSCkHz > 0 {
		cmdline += " tsc_early_khz=" + strconv.Itoa(f.TSCkHz)
	}
	cfg := &api.Config{
		Engine: engine.Spec{Name: "t", RunDir: filepath.Join(dir, "e"), Kernel: gb.Kernel, Initramfs: gb.Initramfs,
			Cmdline: cmdline, CPUs: 1, MemoryMiB: 256, Accel: host.Probe().Accel, VMMLog: filepath.Join(dir, "vmm.log")},
		APISocket: filepath.Join(dir, "api.sock"), ConsoleSocket: filepath.Join(dir, "con.sock"),
		LogPath: filepath.Join(dir, "console.log"), RecordPath: filepath.Join(dir, "shim.json"), ExitPath: filepath.Join(dir, "exit.json"),
	}
	s, err := shim.Start(ctx, cfg, qemu.New(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Stop(context.Background(), "")
		<-s.Done()
		s.Close()
	})
	return s, cfg
}

// The API answers with Cloud Hypervisor's paths, bodies and status codes.
func TestAPI(t *testing.T) {
	s, cfg := startShim(t)
	c := client.New(cfg.APISocket)
	ctx := context.Background()
	raw := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", cfg.APISocket)
	}}}
	code := func(method, path, body string) int {
		t.Helper()
		req, _ := http.NewRequest(method, "http://localhost"+path, strings.NewReader(body))
		resp, err := raw.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	vmInfo := func() (api.VmInfo, error) {
		var info api.VmInfo
		resp, err := raw.Get("http://localhost" + api.PathInfo)
		if err != nil {
			return info, err
		}
		defer resp.Body.Close()
		return info, json.NewDecoder(resp.Body).Decode(&info)
	}

	ping, err := c.Ping(ctx)
	if err != nil || ping.Version == "" || ping.PID != os.Getpid() {
		t.Fatalf("ping = %+v, %v", ping, err)
	}
	// The record was written before Start returned.
	var rec api.Record
	b, _ := os.ReadFile(cfg.RecordPath)
	if err := json.Unmarshal(b, &rec); err != nil || rec.HypervisorPID == 0 || rec.BootID == "" {
		t.Fatalf("record = %s (%v)", b, err)
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		st, _ := c.Status(ctx)
		if st.State == api.Running {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not running: %+v", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
	info, err := vmInfo()
	if err != nil || info.State != api.StateRunning || info.Config.Memory.Size != 256<<20 || info.Config.CPUs.BootVcpus != 1 {
		t.Fatalf("info = %+v, %v", info, err)
	}
	if got := code("PUT", api.PathResume, ""); got != http.StatusMethodNotAllowed {
		t.Fatalf("resume of a running VM: %d, want 405", got)
	}
	if got := code("PUT", api.PathSnapshot, `{"destination_url":"file:///tmp/x"}`); got != http.StatusMethodNotAllowed {
		t.Fatalf("snapshot of a running VM: %d, want 405", got)
	}
	if got := code("PUT", api.PathPause, ""); got != http.StatusNoContent {
		t.Fatalf("pause: %d", got)
	}
	if info, _ := vmInfo(); info.State != api.StatePaused {
		t.Fatalf("state after pause = %s", info.State)
	}
	if got := code("PUT", api.PathPause, ""); got != http.StatusMethodNotAllowed {
		t.Fatalf("pause of a paused VM: %d, want 405", got)
	}
	snap := t.TempDir()
	if _, err := c.Act(ctx, api.PathSnapshot, api.VmSnapshotConfig{DestinationURL: "file://" + snap}); err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	if ents, _ := os.ReadDir(snap); len(ents) == 0 {
		t.Fatal("snapshot wrote nothing")
	}
	if got := code("PUT", api.PathResume, ""); got != http.StatusNoContent {
		t.Fatalf("resume: %d", got)
	}
	if got := code("GET", api.PathPause, ""); got != http.StatusMethodNotAllowed {
		t.Fatalf("GET of a PUT endpoint: %d, want 405", got)
	}
	// Events: the first line is the current state.
	ectx, cancel := context.WithTimeout(ctx, 2*time.Second)
	var first api.Event
	c.Events(ectx, func(ev api.Event) {
		if first.State == "" {
			first = ev
			cancel()
		}
	})
	if first.State != api.Running {
		t.Fatalf("first event = %+v", first)
	}
	if got := code("PUT", api.PathPowerButton, ""); got != http.StatusNoContent {
		t.Fatalf("power-button: %d", got)
	}
	select {
	case <-s.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("guest did not power off on the power button")
	}
	var ex api.ExitRecord
	b, _ = os.ReadFile(cfg.ExitPath)
	if err := json.Unmarshal(b, &ex); err != nil || ex.State != api.Stopped || ex.Crashed {
		t.Fatalf("exit record = %s (%v)", b, err)
	}
	if _, err := c.Act(ctx, api.PathPause, nil); !errors.Is(err, client.ErrNoVM) {
		t.Fatalf("pause after the end: %v, want 404", err)
	}
	if err := c.ShutdownVMM(ctx); err != nil {
		t.Fatalf("vmm.shutdown after the end: %v", err)
	}
}

// vm.shutdown ends the VM at once; the exit record says it was asked for.
func TestShutdownNow(t *testing.T) {
	s, cfg := startShim(t)
	c := client.New(cfg.APISocket)
	if _, err := c.Act(context.Background(), api.PathShutdown, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("vm.shutdown did not end the VM")
	}
	var ex api.ExitRecord
	b, _ := os.ReadFile(cfg.ExitPath)
	if err := json.Unmarshal(b, &ex); err != nil || ex.State != api.Stopped {
		t.Fatalf("exit record = %s (%v)", b, err)
	}
}

// A shutdown asked while the guest boots is held until the guest is
// ready, then the guest powers off by itself (not at the timeout).
func TestShutdownWhileBooting(t *testing.T) {
	s, cfg := startShim(t)
	c := client.New(cfg.APISocket)
	ctx := context.Background()
	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != api.Booting {
		t.Skipf("the guest is already %s", st.State)
	}
	eff, err := c.Act(ctx, api.PathGracefulStop, api.GracefulStop{TimeoutSeconds: 120})
	if err != nil {
		t.Fatal(err)
	}
	if eff.State != api.Stopping || eff.Detail != shim.HeldShutdown {
		t.Fatalf("graceful stop while booting answered %+v", eff)
	}
	select {
	case <-s.Done():
	case <-time.After(100 * time.Second):
		t.Fatal("the held shutdown never ended the VM")
	}
	var ex api.ExitRecord
	b, _ := os.ReadFile(cfg.ExitPath)
	if err := json.Unmarshal(b, &ex); err != nil || ex.State != api.Stopped || ex.Reason != "guest powered off" {
		t.Fatalf("exit record = %s (%v)", b, err)
	}
	if log, _ := os.ReadFile(cfg.LogPath); !strings.Contains(string(log), "hypefs: guest ready") {
		t.Fatalf("the VM ended before the guest was ready:\n%s", log)
	}
}
