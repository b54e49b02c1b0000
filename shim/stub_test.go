package shim_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"hypefs/shim"
	"hypefs/shim/api"
	"hypefs/shim/client"
	"hypefs/shim/engine"
)

// stubEngine stands in for the vz engine, which cannot run on Linux: its
// machine writes what the test says to the console and refuses
// snapshots the way vz does.
type stubEngine struct{ m *stubMachine }

func (e *stubEngine) Name() string { return "vz" }
func (e *stubEngine) Boot(ctx context.Context, spec engine.Spec, console io.Writer) (engine.Machine, error) {
	e.m = &stubMachine{console: console, done: make(chan struct{})}
	return e.m, nil
}

var errNoSnapshots = fmt.Errorf("vz does not save or restore VMs: %w", engine.ErrUnsupported)

type stubMachine struct {
	console io.Writer
	done    chan struct{}
}

func (m *stubMachine) Console() io.Writer                     { return io.Discard }
func (m *stubMachine) Pause(context.Context) error            { return nil }
func (m *stubMachine) Resume(context.Context) error           { return nil }
func (m *stubMachine) PowerButton(context.Context) error      { return nil }
func (m *stubMachine) Reboot(context.Context) error           { return nil }
func (m *stubMachine) Snapshot(context.Context, string) error { return errNoSnapshots }
func (m *stubMachine) SnapshotSupported() error               { return errNoSnapshots }
func (m *stubMachine) PID() int                               { return os.Getpid() }
func (m *stubMachine) MachineID() []byte                      { return nil }
func (m *stubMachine) Done() <-chan struct{}                  { return m.done }
func (m *stubMachine) Exit() engine.Exit                      { return engine.Exit{Reason: "vm stopped by request"} }
func (m *stubMachine) Stop(context.Context) error {
	select {
	case <-m.done:
	default:
		close(m.done)
	}
	return nil
}

func startStub(t *testing.T) (*stubEngine, *client.Client, *shim.Shim) {
	t.Helper()
	dir, err := os.MkdirTemp("", "shim") // short: sun_path
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cfg := &api.Config{
		Engine:    engine.Spec{Name: "t", RunDir: dir, CPUs: 1, MemoryMiB: 256, Accel: "hvf"},
		APISocket: filepath.Join(dir, "api.sock"), ConsoleSocket: filepath.Join(dir, "con.sock"),
		LogPath: filepath.Join(dir, "console.log"), RecordPath: filepath.Join(dir, "shim.json"), ExitPath: filepath.Join(dir, "exit.json"),
	}
	e := &stubEngine{}
	s, err := shim.Start(context.Background(), cfg, e, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Stop(context.Background(), "")
		<-s.Done()
		s.Close()
	})
	c := client.New(cfg.APISocket)
	t.Cleanup(c.Close)
	return e, c, s
}

// vm.snapshot on an engine that cannot snapshot answers 501 with the
// engine's sentence, whatever the VM's state; the client turns that into
// an error matching ErrUnsupported and EOPNOTSUPP, the daemon's errno.
func TestSnapshotUnsupported(t *testing.T) {
	_, c, _ := startStub(t)
	_, err := c.Act(context.Background(), api.PathSnapshot, api.VmSnapshotConfig{DestinationURL: "file://" + t.TempDir()})
	var en syscall.Errno
	if !errors.Is(err, client.ErrUnsupported) || !errors.As(err, &en) || en != syscall.EOPNOTSUPP {
		t.Fatalf("snapshot: %v (errno %v)", err, en)
	}
	if err.Error() != errNoSnapshots.Error() {
		t.Fatalf("snapshot error %q; want the engine's sentence", err)
	}
}

// The init's address line reaches hypefs.status and the event stream;
// lines that are not an IPv4 address are ignored.
func TestGuestAddress(t *testing.T) {
	e, c, _ := startStub(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	events := make(chan api.Event, 16)
	go c.Events(ctx, func(ev api.Event) { events <- ev })
	<-events // the current state
	for _, bad := range []string{"hypefs: address fd00::2/64 on eth0\n", "hypefs: address banana\n", "hypefs: address 0.0.0.0/0\n", "hypefs: address\n", "say hypefs: address 10.0.0.9/8\n"} {
		e.m.console.Write([]byte(bad))
	}
	e.m.console.Write([]byte("hypefs: address 192.168.64.7/24 on eth0 via 192.168.64.1 (dhcp)\r\n"))
	select {
	case ev := <-events:
		if ev.Address != "192.168.64.7/24" || ev.Detail != "guest address 192.168.64.7/24" || ev.State != api.Booting {
			t.Fatalf("event %+v", ev)
		}
	case <-ctx.Done():
		t.Fatal("no event for the guest's address")
	}
	st, err := c.Status(ctx)
	if err != nil || st.Address != "192.168.64.7/24" {
		t.Fatalf("status %+v, %v", st, err)
	}
	// The same address again is no news; a new one is.
	e.m.console.Write([]byte("hypefs: address 192.168.64.7/24 on eth0\nhypefs: guest ready\n"))
	if ev := <-events; ev.State != api.Running || ev.Address != "192.168.64.7/24" {
		t.Fatalf("event %+v", ev)
	}
	e.m.console.Write([]byte("hypefs: address 192.168.65.3/24 on eth0 (dhcp)\n"))
	if ev := <-events; ev.Address != "192.168.65.3/24" || !strings.HasPrefix(ev.Detail, "guest address") {
		t.Fatalf("event %+v", ev)
	}
}
