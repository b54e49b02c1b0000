package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"hypefs/internal/testenv"
	"hypefs/kube/internal/kubetest"
)

// tickScript prints a greeting ($(GREETING) is expanded by the kubelet's
// rules, from the Pod's env) and then a numbered line a second.
const tickScript = `echo $(GREETING)-from-web; i=0; while true; do i=$((i+1)); echo tick-$i; sleep 1; done`

// The README's walk: the node registers with capacity from /host, the
// taint and a renewed Lease; a Pod becomes a VM and runs; its logs read
// (all, --tail, --timestamps, --since, -f); deleting it kills the VM,
// removes the instance and the Pod.
func TestPodLifecycle(t *testing.T) {
	c := cluster(t)
	d := testenv.NewDaemon(t)
	ref := busybox(t)
	ns := c.Namespace(t, "life")
	k := StartKubelet(t, c, d, "hfs-life")
	ctx := context.Background()

	checkNode(t, d, k.WaitReady(true, time.Minute), k.Port)
	lease0 := waitLease(t, c.Client.CoordinationV1().Leases("kube-node-lease"), k.Node)

	pod := podSpec(ns, "web", k.Node, ref, tickScript)
	pod.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "GREETING", Value: "hi"}}
	createPod(t, c, pod)
	p := waitPod(t, c, ns, "web", 2*time.Minute, "Running", running)
	if p.Status.HostIP != "127.0.0.1" || p.Status.StartTime == nil {
		t.Errorf("hostIP %q startTime %v, want 127.0.0.1 and a time", p.Status.HostIP, p.Status.StartTime)
	}
	if !hasTokenVolume(p) {
		t.Errorf("the Pod has no service account token volume; volumes: %+v", p.Spec.Volumes)
	}
	inst := instanceOf(t, p)
	if st := d.Status(inst); st != "running" {
		t.Fatalf("instance %s is %q, want running", inst, st)
	}
	var cfg map[string]any
	if err := json.Unmarshal([]byte(d.Read(d.Inst(inst, "config"))), &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg["image"] != ref || cfg["memory"] != "128M" || cfg["cpus"] != float64(1) {
		t.Errorf("instance config %v: want image %s, memory 128M, cpus 1", cfg, ref)
	}
	if env, _ := cfg["env"].(map[string]any); env["GREETING"] != "hi" {
		t.Errorf("instance env %v lacks GREETING=hi", cfg["env"])
	}

	logs := func(opts corev1.PodLogOptions) string {
		t.Helper()
		b, err := c.Client.CoreV1().Pods(ns).GetLogs("web", &opts).DoRaw(ctx)
		if err != nil {
			t.Fatalf("logs %+v: %v %s", opts, err, b)
		}
		return string(b)
	}
	if !testenv.WaitFor(30*time.Second, func() bool { return strings.Contains(logs(corev1.PodLogOptions{}), "tick-5\n") }) {
		t.Fatalf("logs lack tick-5:\n%s", logs(corev1.PodLogOptions{}))
	}
	all := logs(corev1.PodLogOptions{})
	if raw := d.Read(d.Inst(inst, "log")); !strings.Contains(raw, "hi-from-web\r\n") {
		t.Errorf("the instance's log lacks the console's \\r\\n line ends (what logs turns into \\n): %q", kubetest.Tail(raw, 300))
	}
	if !strings.Contains(all, "hi-from-web\n") || strings.Contains(all, "\r") {
		t.Errorf("logs lack the expanded greeting or keep the console's \\r:\n%q", all)
	}
	one := int64(1)
	if l := logs(corev1.PodLogOptions{TailLines: &one}); strings.Count(l, "\n") != 1 || !strings.HasPrefix(l, "tick-") {
		t.Errorf("--tail=1 gave %q, want one tick line", l)
	}
	for _, line := range strings.Split(strings.TrimSpace(logs(corev1.PodLogOptions{Timestamps: true, TailLines: &one})), "\n") {
		ts, rest, _ := strings.Cut(line, " ")
		at, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil || time.Since(at) > time.Minute || time.Since(at) < 0 || !strings.HasPrefix(rest, "tick-") {
			t.Errorf("--timestamps line %q: time %v (%v)", line, at, err)
		}
	}
	two := int64(2)
	if l := logs(corev1.PodLogOptions{SinceSeconds: &two}); strings.Contains(l, "hi-from-web") || !strings.Contains(l, "tick-") {
		t.Errorf("--since=2s gave %q: want recent ticks only", l)
	}
	followLogs(t, c.Client.CoreV1().Pods(ns).GetLogs("web", &corev1.PodLogOptions{Follow: true, TailLines: &one}))

	attachSees(t, c, ns, "web", "tick-")

	// kubectl exec runs an exec job (TestExec covers it); where this hypefs
	// has none, it is refused with a sentence that says so.
	out, _, err := kubectlExec(c, ns, "web", []string{"uname", "-a"}, "", false)
	if _, statErr := os.Stat(d.Inst(inst, "exec")); statErr == nil {
		if err != nil || !strings.HasPrefix(out, "Linux") {
			t.Errorf("exec uname -a: %q, %v", out, err)
		}
	} else if err == nil || !strings.Contains(err.Error(), "exec jobs are not available") {
		t.Errorf("exec without exec jobs: %q, %v; want a refusal naming exec jobs", out, err)
	}

	if err := c.Client.CoreV1().Pods(ns).Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	// The grace period is 30 s; the provider removes the Pod as soon as
	// its VM is gone, as the kubelet does.
	waitGone(t, c, ns, "web", 25*time.Second)
	if _, err := os.Stat(d.Inst(inst, "")); err == nil {
		t.Errorf("instance %s is still in the tree after the Pod was deleted", inst)
	}
	if testenv.WaitFor(15*time.Second, func() bool {
		l, err := c.Client.CoordinationV1().Leases("kube-node-lease").Get(ctx, k.Node, metav1.GetOptions{})
		return err == nil && l.Spec.RenewTime.After(lease0.Spec.RenewTime.Time)
	}) == false {
		t.Errorf("the node's Lease was not renewed")
	}
}

func checkNode(t *testing.T, d *testenv.Daemon, n *corev1.Node, port int) {
	t.Helper()
	host := map[string]string{}
	for _, l := range strings.Split(d.Read(d.Path("host")), "\n") {
		if k, v, ok := strings.Cut(l, " "); ok {
			host[k] = v
		}
	}
	if got := n.Status.Capacity.Cpu().String(); got != host["cpus"] {
		t.Errorf("node cpu capacity %s, /host says %s", got, host["cpus"])
	}
	if got := n.Status.Allocatable.Memory().Value(); strings.TrimSpace(host["memory"]) != strconv.FormatInt(got, 10) {
		t.Errorf("node memory allocatable %d, /host says %s", got, host["memory"])
	}
	taint := false
	for _, tn := range n.Spec.Taints {
		taint = taint || tn.Key == "hypefs.dev/vm" && tn.Effect == corev1.TaintEffectNoSchedule
	}
	if !taint {
		t.Errorf("node taints %+v lack hypefs.dev/vm:NoSchedule", n.Spec.Taints)
	}
	if n.Status.DaemonEndpoints.KubeletEndpoint.Port != int32(port) {
		t.Errorf("kubelet endpoint port %d, want %d", n.Status.DaemonEndpoints.KubeletEndpoint.Port, port)
	}
}

type leaseGetter interface {
	Get(ctx context.Context, name string, opts metav1.GetOptions) (*coordv1.Lease, error)
}

func waitLease(t *testing.T, leases leaseGetter, node string) *coordv1.Lease {
	t.Helper()
	var l *coordv1.Lease
	if !testenv.WaitFor(30*time.Second, func() bool {
		var err error
		l, err = leases.Get(context.Background(), node, metav1.GetOptions{})
		return err == nil && l.Spec.RenewTime != nil
	}) {
		t.Fatalf("no Lease for node %s", node)
	}
	return l
}

func hasTokenVolume(p *corev1.Pod) bool {
	for _, v := range p.Spec.Volumes {
		if strings.HasPrefix(v.Name, "kube-api-access-") {
			return true
		}
	}
	return false
}

type streamer interface {
	Stream(ctx context.Context) (io.ReadCloser, error)
}

// followLogs reads `kubectl logs -f --tail=1` until a tick newer than the
// first one it gets arrives: the stream follows the program.
func followLogs(t *testing.T, req streamer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := req.Stream(ctx)
	if err != nil {
		t.Fatalf("logs -f: %v", err)
	}
	defer s.Close()
	r := bufio.NewReader(s)
	first, err := r.ReadString('\n')
	if err != nil || !strings.HasPrefix(first, "tick-") {
		t.Fatalf("logs -f: first line %q, %v", first, err)
	}
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("logs -f ended after %q: %v", first, err)
		}
		if strings.HasPrefix(l, "tick-") && l != first {
			return
		}
	}
}

// With guest networking (in a network namespace of the test's own), the
// Pod's IP is its VM's address (`kubectl get pod -o wide`).
func TestPodIP(t *testing.T) {
	if _, inside := testenv.Netns(t); !inside {
		return
	}
	c := cluster(t)
	d := testenv.NewDaemonNet(t)
	ref := busybox(t)
	ns := c.Namespace(t, "net")
	k := StartKubelet(t, c, d, "hfs-net")
	createPod(t, c, podSpec(ns, "addr", k.Node, ref, "sleep 3600"))
	p := waitPod(t, c, ns, "addr", 2*time.Minute, "Running with an IP", func(p *corev1.Pod) bool {
		return running(p) && p.Status.PodIP != ""
	})
	var info struct{ IP string }
	json.Unmarshal([]byte(d.Read(d.Inst(instanceOf(t, p), "info"))), &info)
	if info.IP == "" || p.Status.PodIP != info.IP || len(p.Status.PodIPs) != 1 || p.Status.PodIPs[0].IP != info.IP {
		t.Errorf("podIP %q podIPs %v, the VM's ip %q", p.Status.PodIP, p.Status.PodIPs, info.IP)
	}
}
