package e2e

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"hypefs/internal/testenv"
	"hypefs/kube/internal/kubetest"
)

// vmIdentity is what must not change while a VM lives on: its shim's pid
// and when its instance was made.
type vmIdentity struct {
	ShimPID int       `json:"shim_pid"`
	Created time.Time `json:"created"`
	State   string    `json:"state"`
}

func identity(t *testing.T, d *testenv.Daemon, inst string) vmIdentity {
	t.Helper()
	var id vmIdentity
	if err := json.Unmarshal([]byte(d.Read(d.Inst(inst, "info"))), &id); err != nil || id.ShimPID == 0 {
		t.Fatalf("info of %s: %v %+v", inst, err, id)
	}
	return id
}

// The provider killed with SIGKILL, the daemon killed with SIGKILL, and
// both: every Pod and VM is found again where it was (same shim, same
// instance, no restart counted), nothing is made twice; a Pod deleted
// while the provider was away loses its VM when the provider is back, and
// a Pod made meanwhile starts then. The node is NotReady while the mount
// is away.
func TestRestarts(t *testing.T) {
	c := cluster(t)
	d := testenv.NewDaemon(t)
	ref := busybox(t)
	ns := c.Namespace(t, "restarts")
	k := StartKubelet(t, c, d, "hfs-restarts")
	ctx := context.Background()
	pods := c.Client.CoreV1().Pods(ns)

	for _, n := range []string{"keep", "gone"} {
		p := podSpec(ns, n, k.Node, ref, `i=0; while true; do i=$((i+1)); echo tick-$i; sleep 1; done`)
		p.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "POD_NAME",
			ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}}}
		createPod(t, c, p)
	}
	keep := instanceOf(t, waitPod(t, c, ns, "keep", 2*time.Minute, "Running", running))
	gone := instanceOf(t, waitPod(t, c, ns, "gone", 2*time.Minute, "Running", running))
	var cfg struct{ Env map[string]string }
	if err := json.Unmarshal([]byte(d.Read(d.Inst(keep, "config"))), &cfg); err != nil || cfg.Env["POD_NAME"] != "keep" {
		t.Errorf("config of %s: env %v (%v) lacks the downward API's POD_NAME=keep", keep, cfg.Env, err)
	}
	id0 := identity(t, d, keep)

	// The provider dies; meanwhile one Pod is force-deleted and one made.
	k.Kill()
	zero := int64(0)
	if err := pods.Delete(ctx, "gone", metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
	createPod(t, c, podSpec(ns, "late", k.Node, ref, `echo late-start; sleep 3600`))
	k.Start()
	k.WaitReady(true, time.Minute)
	late := instanceOf(t, waitPod(t, c, ns, "late", 2*time.Minute, "Running", running))
	if !testenv.WaitFor(30*time.Second, func() bool { return d.Read(d.Inst(gone, "status")) == "" }) {
		t.Errorf("the instance %s of the Pod deleted while the provider was away is still there", gone)
	}
	sameVM(t, c, d, ns, "keep", keep, id0, "after the provider's restart")
	wantInstances(t, d, keep, late)

	// The daemon dies: the mount is dead, the node NotReady; VMs live on.
	d.Kill()
	n := k.WaitReady(false, 30*time.Second)
	for _, cond := range n.Status.Conditions {
		if cond.Type == corev1.NodeReady && cond.Reason != "HypefsTreeUnavailable" {
			t.Errorf("NotReady reason %q, want HypefsTreeUnavailable", cond.Reason)
		}
	}
	d.Start()
	k.WaitReady(true, 30*time.Second)
	sameVM(t, c, d, ns, "keep", keep, id0, "after the daemon's restart")

	// Both die; the daemon comes back first, then the provider.
	k.Kill()
	d.Kill()
	d.Start()
	k.Start()
	k.WaitReady(true, time.Minute)
	sameVM(t, c, d, ns, "keep", keep, id0, "after both restarted")
	sameVM(t, c, d, ns, "late", late, identity(t, d, late), "after both restarted")
	wantInstances(t, d, keep, late)
	if strings.Count(k.Log(), `msg="instance made"`) != 3 {
		t.Errorf("the provider made %d instances in all, want 3 (keep, gone, late):\n%s",
			strings.Count(k.Log(), `msg="instance made"`), k.Log())
	}

	// Deleting after all this still works.
	if err := pods.Delete(ctx, "keep", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitGone(t, c, ns, "keep", 25*time.Second)
	wantInstances(t, d, late)
}

// sameVM checks that the Pod still runs on the same VM, never restarted.
func sameVM(t *testing.T, c *kubetest.Cluster, d *testenv.Daemon, ns, pod, inst string, id vmIdentity, when string) {
	t.Helper()
	p := waitPod(t, c, ns, pod, time.Minute, "Running "+when, running)
	if got := instanceOf(t, p); got != inst {
		t.Errorf("%s: pod %s runs on %s, was %s", when, pod, got, inst)
	}
	if r := p.Status.ContainerStatuses[0].RestartCount; r != 0 {
		t.Errorf("%s: pod %s counts %d restarts", when, pod, r)
	}
	if got := identity(t, d, inst); got.ShimPID != id.ShimPID || !got.Created.Equal(id.Created) || got.State != "running" {
		t.Errorf("%s: instance %s is %+v, was %+v", when, inst, got, id)
	}
}

func wantInstances(t *testing.T, d *testenv.Daemon, want ...string) {
	t.Helper()
	got := ownedInstances(t, d)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("the provider's instances are %v, want %v", got, want)
	}
}
