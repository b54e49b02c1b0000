package kubetest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The control plane starts, answers, admits a namespace with its
// ServiceAccount, and its scheduler runs; Stop leaves nothing behind.
func TestControlPlane(t *testing.T) {
	if m := Missing(); m != "" {
		t.Skip(m)
	}
	start := time.Now()
	c, err := Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("control plane ready in %s", time.Since(start).Round(time.Millisecond))
	dir := c.Dir
	defer func() {
		c.Stop()
		if _, err := os.Stat(dir); err == nil {
			t.Errorf("%s is still there after Stop", dir)
		}
	}()
	if err := c.StartScheduler(); err != nil {
		t.Fatal(err)
	}
	ns := c.Namespace(t, "smoke")
	if _, err := c.Client.CoreV1().ServiceAccounts(ns).Get(context.Background(), "default", metav1.GetOptions{}); err != nil {
		t.Fatalf("default ServiceAccount of %s: %v", ns, err)
	}
	v, err := c.Client.Discovery().ServerVersion()
	if err != nil {
		t.Fatal(err)
	}
	if v.GitVersion != KubeVersion {
		t.Errorf("server version %s, want %s", v.GitVersion, KubeVersion)
	}
	fi, err := os.Stat(filepath.Join(dir, "admin.kubeconfig"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("admin kubeconfig: %v mode %v, want 0600", err, fi.Mode().Perm())
	}
	time.Sleep(2 * time.Second)
	if l := c.Logs(); strings.Contains(l, "unknown flag") {
		t.Errorf("a component refused its flags:\n%s", l)
	}
}
