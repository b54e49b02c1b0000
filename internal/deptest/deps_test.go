package deptest

import (
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// rule: built for each of goos, no dependency of binary may match a
// banned pattern (an import path, or a path ending in "/..." for the
// package and all below it), and each package of needs must be there (so
// that a listing that misses packages cannot pass).
type rule struct {
	binary string
	goos   []string
	banned []string
	needs  []string
}

var rules = []rule{
	{"hypefs/cmd/hypefs-shim", []string{"linux", "darwin"},
		[]string{"hypefs/fs/...", "hypefs/backend/...", "hypefs/cmd/hypefs", "k8s.io/...", "github.com/virtual-kubelet/..."},
		[]string{"hypefs/shim", "hypefs/shim/api"}},
	{"hypefs/cmd/hypefs", []string{"linux", "darwin"},
		[]string{"hypefs/shim", "hypefs/shim/vsockproxy", "hypefs/shim/qemu", "hypefs/shim/qmp", "hypefs/shim/vz", "hypefs/cmd/hypefs-shim",
			"k8s.io/...", "github.com/virtual-kubelet/..."}, // Kubernetes lives in hypefs-kubelet (kube/)
		[]string{"hypefs/shim/api", "hypefs/shim/client", "hypefs/fs", "hypefs/backend/instance"}},
	{"hypefs/cmd/hypefs-init", []string{"linux"}, // the guest's init: Linux only
		[]string{"hypefs/fs/...", "hypefs/backend/...", "hypefs/shim/..."},
		[]string{"hypefs/internal/runcfg"}},
}

func matches(pattern, pkg string) bool {
	if tree, ok := strings.CutSuffix(pattern, "/..."); ok {
		return pkg == tree || strings.HasPrefix(pkg, tree+"/")
	}
	return pkg == pattern
}

// TestBinaryLayers lists every binary's dependencies with go list, for
// Linux and for macOS (cgo files included, as a Mac build has them).
func TestBinaryLayers(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("go is not on PATH")
	}
	for _, r := range rules {
		for _, goos := range r.goos {
			cmd := exec.Command("go", "list", "-deps", r.binary)
			cmd.Env = append(os.Environ(), "GOOS="+goos, "CGO_ENABLED=1")
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("go list -deps %s (%s): %v", r.binary, goos, err)
			}
			deps := strings.Fields(string(out))
			if len(deps) < 10 {
				t.Fatalf("go list -deps %s (%s): only %d packages", r.binary, goos, len(deps))
			}
			for _, n := range r.needs {
				if !slices.Contains(deps, n) {
					t.Errorf("%s (%s): %s is not among its dependencies", r.binary, goos, n)
				}
			}
			for _, p := range deps {
				for _, b := range r.banned {
					if matches(b, p) {
						t.Errorf("%s (%s) depends on %s (banned: %s)", r.binary, goos, p, b)
					}
				}
			}
		}
	}
}
