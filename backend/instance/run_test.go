package instance

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"hypefs/backend/layout"
	"hypefs/shim/api"
	"hypefs/shim/client"
)

// Events and action answers are applied in Seq order: a late, older one
// never overwrites a newer state; a run that is not current changes nothing.
func TestApplyOrder(t *testing.T) {
	dir := t.TempDir()
	m, err := Open(Options{Layout: layout.Layout{Data: filepath.Join(dir, "d"), Run: filepath.Join(dir, "r"), Kernels: dir}})
	if err != nil {
		t.Fatal(err)
	}
	i, err := m.Create("vm", Owner{})
	if err != nil {
		t.Fatal(err)
	}
	r := &run{client: client.New(filepath.Join(dir, "none.sock")), applied: make(chan struct{}), settled: make(chan struct{})}
	i.mu.Lock()
	i.cur = r
	i.mu.Unlock()

	steps := []struct {
		seq   uint64
		state string
		want  string
	}{
		{0, api.Booting, Booting}, // the stream's first line: the state now
		{1, api.Running, Running},
		{3, api.Paused, Paused},   // a pause's answer, before its event
		{2, api.Running, Paused},  // an older event, late: ignored
		{3, api.Paused, Paused},   // the pause's own event: already applied
		{4, api.Running, Running}, // resume
		{5, api.Stopping, Stopping},
		{6, api.Stopped, Stopping}, // ends are settled from the exit record, not events
	}
	for _, s := range steps {
		i.applyEffect(r, client.Effect{Seq: s.seq, State: s.state}, "")
		if s.seq == 0 {
			i.apply(r, api.Event{Seq: 0, State: s.state})
		}
		if got := i.State(); got != s.want {
			t.Fatalf("after seq %d %s: state %q, want %q", s.seq, s.state, got, s.want)
		}
	}
	other := &run{applied: make(chan struct{})}
	i.apply(other, api.Event{Seq: 99, State: api.Paused})
	if got := i.State(); got != Stopping {
		t.Fatalf("a run that is not current changed the state to %q", got)
	}
	m.Close()
	b, err := os.ReadFile(filepath.Join(dir, "d", "instances", "vm", "state.json"))
	if err != nil || len(b) == 0 {
		t.Fatalf("state file: %v", err)
	}
}

// addrWatcher is a Part that records the addresses guests announce.
type addrWatcher struct {
	Part
	got []string
}

func (w *addrWatcher) GuestAddress(inst string, a netip.Prefix) {
	w.got = append(w.got, inst+" "+a.String())
}

// The address a guest announces (DHCP on vz's NAT) is info's ip where the
// host gave none, reaches the parts that watch for it once per new
// address, and never hides an address the host assigned.
func TestGuestAddressInInfo(t *testing.T) {
	dir := t.TempDir()
	w := &addrWatcher{}
	m, err := Open(Options{Layout: layout.Layout{Data: filepath.Join(dir, "d"), Run: filepath.Join(dir, "r"), Kernels: dir}, Parts: []Part{w}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	i, err := m.Create("vm", Owner{})
	if err != nil {
		t.Fatal(err)
	}
	r := &run{rec: &api.Record{Hypervisor: "vz"}, client: client.New(filepath.Join(dir, "none.sock")), applied: make(chan struct{}), settled: make(chan struct{})}
	i.mu.Lock()
	i.cur = r
	i.mu.Unlock()
	i.apply(r, api.Event{Seq: 1, State: api.Booting})
	if ip := i.Info().IP; ip != "" {
		t.Fatalf("ip before any announcement: %q", ip)
	}
	i.apply(r, api.Event{Seq: 2, State: api.Booting, Address: "192.168.64.7/24", Detail: "guest address 192.168.64.7/24"})
	i.apply(r, api.Event{Seq: 3, State: api.Running, Address: "192.168.64.7/24"})
	i.applyEffect(r, client.Effect{Seq: 4, State: api.Paused}, "pause") // answers carry no address
	if ip := i.Info().IP; ip != "192.168.64.7" {
		t.Fatalf("ip %q, want the announced 192.168.64.7", ip)
	}
	if len(w.got) != 1 || w.got[0] != "vm 192.168.64.7/24" {
		t.Fatalf("watcher saw %v", w.got)
	}
	i.mu.Lock()
	i.rec.Facts["ip"] = "10.197.0.2" // what a host that assigns addresses records
	i.mu.Unlock()
	i.apply(r, api.Event{Seq: 5, State: api.Running, Address: "10.0.0.9/8"})
	if ip := i.Info().IP; ip != "10.197.0.2" {
		t.Fatalf("ip %q: the host's own assignment must win", ip)
	}
}
