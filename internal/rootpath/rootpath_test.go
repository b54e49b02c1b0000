package rootpath

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestResolve(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "usr/bin"), 0o755)
	os.Symlink("usr/bin", filepath.Join(root, "bin"))
	os.Symlink("/usr", filepath.Join(root, "abs"))
	os.Symlink("../../../../..", filepath.Join(root, "usr/up"))
	os.Symlink("loop", filepath.Join(root, "loop"))
	for in, want := range map[string]string{
		"/bin/sh":         "/usr/bin/sh",
		"bin":             "/usr/bin",
		"/abs/bin/x":      "/usr/bin/x",
		"/usr/up/etc":     "/etc",
		"/../../etc":      "/etc",
		"/missing/a/b":    "/missing/a/b",
		"/usr/up/abs/bin": "/usr/bin",
	} {
		got, err := Resolve(root, in, true)
		if err != nil || got != filepath.Join(root, want) {
			t.Errorf("Resolve(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if got, _ := Resolve(root, "/bin", false); got != filepath.Join(root, "bin") {
		t.Errorf("Resolve(/bin, nofollow) = %q", got)
	}
	if _, err := Resolve(root, "/loop/x", true); !errors.Is(err, ErrLoop) {
		t.Errorf("loop: %v", err)
	}
}
