package instance

import (
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"hypefs/backend/layout"
	"hypefs/internal/atomicfile"
	"hypefs/internal/bootid"
	"hypefs/shim/api"
)

// A live instance whose shim speaks another protocol version is not
// followed: the daemon ends that VM through Cloud Hypervisor's
// vmm.shutdown and says why in the error file.
func TestReattachOtherProtocolVersion(t *testing.T) {
	dir, err := os.MkdirTemp("", "ra") // short: socket paths
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	lay := layout.Layout{Data: filepath.Join(dir, "d"), Run: filepath.Join(dir, "r"), Kernels: dir}
	os.MkdirAll(lay.InstanceDir("vm"), 0o755)
	os.MkdirAll(lay.RunDir("vm"), 0o700)
	now := time.Now().UTC()
	if err := atomicfile.WriteJSON(lay.InstanceFile("vm", layout.StateFile),
		record{Name: "vm", Created: now, State: Running, Changed: now, Config: &Config{}}, 0o644); err != nil {
		t.Fatal(err)
	}
	rec := api.Record{APIVersion: api.APIVersion + 1, ShimPID: 4242, BootID: bootid.Current(), Started: now}
	if err := atomicfile.WriteJSON(lay.RunFile("vm", layout.ShimRecord), rec, 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("unix", lay.RunFile("vm", layout.APISock))
	if err != nil {
		t.Fatal(err)
	}
	var shutdowns, others atomic.Int32
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut && r.URL.Path == api.PathVMMShutdown {
			shutdowns.Add(1)
			w.WriteHeader(http.StatusNoContent)
			return
		}
		others.Add(1)
		w.WriteHeader(http.StatusNotFound)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })

	m, err := Open(Options{Layout: lay})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	i := m.Get("vm")
	if st := i.State(); st != Stopped {
		t.Errorf("state %q, want stopped", st)
	}
	if n := shutdowns.Load(); n != 1 {
		t.Errorf("vmm.shutdown asked %d times, want once", n)
	}
	if n := others.Load(); n != 0 {
		t.Errorf("%d other requests reached a shim of another version", n)
	}
	if e := i.ErrorText(); !strings.Contains(e, "protocol version 2 (pid 4242)") || !strings.Contains(e, "hint:") {
		t.Errorf("error file: %q", e)
	}
	if _, err := os.Stat(lay.RunDir("vm")); !os.IsNotExist(err) {
		t.Errorf("run directory left behind: %v", err)
	}
}
