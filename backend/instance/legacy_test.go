package instance

import (
	"os"
	"path/filepath"
	"testing"

	"hypefs/backend/layout"
)

// The run directory of a VM an earlier hypefs started, RUN/NAME, moves to
// RUN/i/NAME, also for an instance called "i", whose old directory is the
// namespace's own name.
func TestMoveLegacyRunDir(t *testing.T) {
	dir := t.TempDir()
	lay := layout.Layout{Data: filepath.Join(dir, "d"), Run: filepath.Join(dir, "r"), Kernels: dir}
	m, err := Open(Options{Layout: lay})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	// The old layout: RUN/i and RUN/web are instances' run directories.
	for _, name := range []string{"i", "web"} {
		old := filepath.Join(lay.Run, name)
		os.MkdirAll(old, 0o700)
		os.WriteFile(filepath.Join(old, layout.ShimRecord), []byte(name), 0o600)
	}
	m.moveLegacyI()
	m.moveLegacyRunDir("web")
	m.moveLegacyRunDir("i") // already done: nothing
	for _, name := range []string{"i", "web"} {
		b, err := os.ReadFile(filepath.Join(lay.RunDir(name), layout.ShimRecord))
		if err != nil || string(b) != name {
			t.Errorf("%s: record at %s: %q %v", name, lay.RunDir(name), b, err)
		}
	}
	if _, err := os.Stat(filepath.Join(lay.Run, "web")); !os.IsNotExist(err) {
		t.Errorf("the old directory of web is still there: %v", err)
	}
}
