package instance

import (
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	"hypefs/backend/layout"
	"hypefs/internal/errno"
)

// Concurrent mkdirs of one name: one makes the instance, the others get
// EEXIST; the manager answers others meanwhile.
func TestCreateRace(t *testing.T) {
	dir := t.TempDir()
	m, err := Open(Options{Layout: layout.Layout{Data: filepath.Join(dir, "d"), Run: filepath.Join(dir, "r"), Kernels: dir}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var wg sync.WaitGroup
	errs := make([]error, 16)
	for k := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[k] = m.Create("vm", Owner{})
		}()
	}
	wg.Wait()
	made := 0
	for _, err := range errs {
		switch {
		case err == nil:
			made++
		case errno.Of(err) != syscall.EEXIST:
			t.Errorf("create: %v, want EEXIST", err)
		}
	}
	if made != 1 || m.Get("vm") == nil || len(m.Names()) != 1 {
		t.Fatalf("%d creations, names %v", made, m.Names())
	}
}
