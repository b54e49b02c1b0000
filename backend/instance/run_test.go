package instance

import (
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
	i, err := m.Create("vm")
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
