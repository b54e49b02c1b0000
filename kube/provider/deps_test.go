package provider

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// The provider reaches hypefs only through the mounted tree: it and its
// binary import nothing of the repository outside this module (the daemon's
// backend/, shim/, fs/, internal/). And the daemon and the shim carry none
// of the Kubernetes client or virtual-kubelet.
func TestDependencies(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("needs the go command")
	}
	_, file, _, _ := runtime.Caller(0)
	module := filepath.Dir(filepath.Dir(file)) // kube/
	deps := func(dir string, pkgs ...string) []string {
		t.Helper()
		cmd := exec.Command("go", append([]string{"list", "-deps"}, pkgs...)...)
		cmd.Dir = dir
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("go list -deps %v in %s: %v", pkgs, dir, err)
		}
		return strings.Fields(string(out))
	}
	provider := deps(module, "./provider", "./cmd/hypefs-kubelet")
	if len(provider) < 50 {
		t.Fatalf("go list -deps listed only %d packages", len(provider))
	}
	for _, p := range provider {
		if (p == "hypefs" || strings.HasPrefix(p, "hypefs/")) && !strings.HasPrefix(p, "hypefs/kube/") {
			t.Errorf("the provider depends on %s: it must drive hypefs through the tree alone", p)
		}
	}
	seenVK := false
	for _, p := range provider {
		seenVK = seenVK || strings.HasPrefix(p, "github.com/virtual-kubelet/")
	}
	if !seenVK {
		t.Error("the check is blind: the provider's dependencies lack virtual-kubelet")
	}
	for _, p := range deps(filepath.Dir(module), "./cmd/hypefs", "./cmd/hypefs-shim") {
		if strings.HasPrefix(p, "k8s.io/") || strings.HasPrefix(p, "sigs.k8s.io/") || strings.HasPrefix(p, "github.com/virtual-kubelet/") {
			t.Errorf("the daemon or the shim depends on %s: Kubernetes belongs in hypefs-kubelet", p)
		}
	}
}
