// Package bench measures hypefs as a Kubernetes node against the tree it
// drives. Each benchmark runs its own loops (use -benchtime 1x) and
// prints one line per figure:
//
//	BENCH <name> value=<v><unit> baseline=<b><unit> ratio=<v/b> target=<op><n>
package bench

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"

	"hypefs/internal/testenv"
	"hypefs/kube/internal/kubetest"
	"hypefs/kube/provider"
)

const runs = 5

// node is a control plane, a daemon and `hypefs kubelet` for one
// benchmark, with a busybox image already pulled (both sides boot from
// the cache).
type node struct {
	c   *kubetest.Cluster
	d   *testenv.Daemon
	k   *kubetest.Kubelet
	ns  string
	ref string
}

func setup(b *testing.B, name string) *node {
	if m := kubetest.Missing(); m != "" {
		b.Skip(m)
	}
	d := testenv.NewDaemon(b)
	c, err := kubetest.Start()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(c.Stop)
	n := &node{c: c, d: d, ref: kubetest.Busybox(b), ns: c.Namespace(b, "bench")}
	n.k = kubetest.StartKubelet(b, c, d, name)
	// Warm-up: the image is pulled and converted once.
	n.direct(b, "warm", n.config("sleep 3600"), func() bool { return n.d.Status("warm") == "running" })
	return n
}

func (n *node) pod(name, script string) *corev1.Pod {
	return kubetest.PodSpec(n.ns, name, n.k.Node, n.ref, script)
}

// config is the instance config the provider writes for such a Pod.
func (n *node) config(script string) []byte {
	return provider.ConfigFor(n.pod("x", script)).JSON()
}

// direct boots an instance through the tree (mkdir, config write) and
// returns the time until done holds, polled every 10 ms; then kills and
// removes it.
func (n *node) direct(b *testing.B, name string, cfg []byte, done func() bool) time.Duration {
	if err := os.Mkdir(n.d.Path("instances", name), 0o755); err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	if err := os.WriteFile(n.d.Inst(name, "config"), cfg, 0o644); err != nil {
		b.Fatal(err)
	}
	if !testenv.WaitFor(2*time.Minute, done) {
		b.Fatalf("instance %s: not done within 2 minutes (status %s)", name, n.d.Status(name))
	}
	took := time.Since(start)
	testenv.Shell("echo kill > " + n.d.Inst(name, "ctl") + " && rmdir " + n.d.Path("instances", name))
	return took
}

// remove deletes a Pod and waits until its VM is gone.
func (n *node) remove(b *testing.B, name string) {
	if err := n.c.Client.CoreV1().Pods(n.ns).Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
		b.Fatal(err)
	}
	kubetest.WaitGone(b, n.c, n.ns, name, time.Minute)
}

// BenchmarkPodToRunning: a Pod created in the API until the API says it
// is Running (seen by a watch, as kubectl get -w sees it), against the
// same config written to a new instance until its status reads running.
// Runs alternate, so that drift in the host's load hits both alike.
func BenchmarkPodToRunning(b *testing.B) {
	n := setup(b, "bench-running")
	const script = "sleep 3600"
	var mine, raw []time.Duration
	for k := 0; k < runs; k++ {
		name := fmt.Sprintf("run%d", k)
		mine = append(mine, n.podUntil(b, n.pod(name, script), kubetest.Running))
		n.remove(b, name)
		raw = append(raw, n.direct(b, name, n.config(script), func() bool { return n.d.Status(name) == "running" }))
	}
	report(b, "pod-to-running", median(mine), median(raw), "<=1.3")
}

// podUntil creates the Pod and returns the time until a watch sees cond.
func (n *node) podUntil(b *testing.B, pod *corev1.Pod, cond func(*corev1.Pod) bool) time.Duration {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	w, err := n.c.Client.CoreV1().Pods(n.ns).Watch(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("metadata.name", pod.Name).String()})
	if err != nil {
		b.Fatal(err)
	}
	defer w.Stop()
	start := time.Now()
	kubetest.CreatePod(b, n.c, pod)
	for ev := range w.ResultChan() {
		if p, ok := ev.Object.(*corev1.Pod); ok && ev.Type != watch.Deleted && cond(p) {
			return time.Since(start)
		}
	}
	b.Fatalf("pod %s: watch ended before it was Running", pod.Name)
	return 0
}

// BenchmarkPodLogsFirstLine: a Pod created until `kubectl logs` (through
// the API server and the kubelet API) returns the program's first line,
// against a config write until the instance's log holds it; both polled
// every 20 ms.
func BenchmarkPodLogsFirstLine(b *testing.B) {
	n := setup(b, "bench-logs")
	const script = "echo first-line-out; sleep 3600"
	var mine, raw []time.Duration
	for k := 0; k < runs; k++ {
		name := fmt.Sprintf("logs%d", k)
		start := time.Now()
		kubetest.CreatePod(b, n.c, n.pod(name, script))
		req := n.c.Client.CoreV1().Pods(n.ns).GetLogs(name, &corev1.PodLogOptions{})
		if !poll(2*time.Minute, func() bool {
			out, err := req.DoRaw(context.Background())
			return err == nil && strings.Contains(string(out), "first-line-out\n")
		}) {
			b.Fatalf("pod %s: no first line in its logs", name)
		}
		mine = append(mine, time.Since(start))
		n.remove(b, name)
		var took time.Duration
		logPath := n.d.Inst(name, "log")
		took = n.direct(b, name, n.config(script), func() bool {
			time.Sleep(10 * time.Millisecond) // with WaitFor's 10 ms: a 20 ms poll
			out, err := os.ReadFile(logPath)
			return err == nil && (strings.Contains(string(out), "first-line-out\r\n") || strings.Contains(string(out), "first-line-out\n"))
		})
		raw = append(raw, took)
	}
	report(b, "pod-logs-first-line", median(mine), median(raw), "<=1.3")
}

func poll(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func report(b *testing.B, name string, value, baseline time.Duration, target string) {
	fmt.Printf("BENCH %s value=%.3fs baseline=%.3fs ratio=%.2f target=%s\n",
		name, value.Seconds(), baseline.Seconds(), value.Seconds()/baseline.Seconds(), target)
	b.ReportMetric(value.Seconds(), "s/"+name)
}
