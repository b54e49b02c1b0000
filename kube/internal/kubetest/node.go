package kubetest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"hypefs/internal/testenv"
	"hypefs/internal/testimage"
)

var (
	kubeletOnce sync.Once
	kubeletErr  error
)

// Bins builds hypefs, hypefs-shim, hypefs-init (testenv) and, next to
// them, hypefs-kubelet, so that `hypefs kubelet` finds it.
func Bins(t testing.TB) string {
	t.Helper()
	dir := testenv.Bins(t)
	kubeletOnce.Do(func() {
		args := []string{"build", "-o", filepath.Join(dir, "hypefs-kubelet")}
		if raceBuild {
			args = append(args, "-race")
		}
		cmd := exec.Command("go", append(args, "./cmd/hypefs-kubelet")...)
		cmd.Dir = filepath.Join(testenv.Root(), "kube")
		if out, err := cmd.CombinedOutput(); err != nil {
			kubeletErr = fmt.Errorf("build hypefs-kubelet: %v\n%s", err, out)
		}
	})
	if kubeletErr != nil {
		t.Fatal(kubeletErr)
	}
	return dir
}

// Kubelet is a running `hypefs kubelet`.
type Kubelet struct {
	t      testing.TB
	c      *Cluster
	d      *testenv.Daemon
	Node   string
	Port   int
	cmd    *exec.Cmd
	exited chan struct{}
	log    string
}

// StartKubelet runs `hypefs kubelet` for the daemon's mount as node and
// waits until the node is Ready. Cleanup stops it (the VMs are the
// daemon's cleanup).
func StartKubelet(t testing.TB, c *Cluster, d *testenv.Daemon, node string) *Kubelet {
	t.Helper()
	port, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	k := &Kubelet{t: t, c: c, d: d, Node: node, Port: port, log: filepath.Join(d.Dir, "kubelet-"+node+".log")}
	t.Cleanup(func() {
		k.Stop()
		// Nodes outlive their kubelet (there is no node controller to mark
		// them): remove this one, so that the scheduler never picks it.
		c.Client.CoreV1().Nodes().Delete(context.Background(), node, metav1.DeleteOptions{})
		if t.Failed() || os.Getenv("HYPEFS_TEST_VERBOSE") != "" {
			t.Logf("hypefs kubelet %s log (end):\n%s", node, Tail(k.Log(), 60000))
		}
	})
	k.Start()
	k.WaitReady(true, 60*time.Second)
	return k
}

// Start runs the process (again).
func (k *Kubelet) Start() {
	k.t.Helper()
	logf, err := os.OpenFile(k.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		k.t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(filepath.Join(Bins(k.t), "hypefs"), "kubelet", "--kubeconfig", k.c.Kubeconfig,
		"--node-name", k.Node, "--mount", k.d.Mnt, "--listen", "127.0.0.1:"+strconv.Itoa(k.Port), "--node-ip", "127.0.0.1")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		k.t.Fatal(err)
	}
	k.cmd = cmd
	k.exited = make(chan struct{})
	exited := k.exited
	go func() { cmd.Wait(); close(exited) }()
}

// Kill ends the process with SIGKILL.
func (k *Kubelet) Kill() {
	if k.cmd != nil && k.cmd.Process != nil {
		k.cmd.Process.Kill()
		<-k.exited
	}
}

// Stop ends the process with SIGTERM (SIGKILL after 10 s).
func (k *Kubelet) Stop() {
	if k.cmd == nil || k.cmd.Process == nil {
		return
	}
	k.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-k.exited:
	case <-time.After(10 * time.Second):
		k.Kill()
	}
}

// Log is the process's output so far.
func (k *Kubelet) Log() string {
	b, _ := os.ReadFile(k.log)
	return string(b)
}

// WaitReady waits until the node's Ready condition is want.
func (k *Kubelet) WaitReady(want bool, timeout time.Duration) *corev1.Node {
	k.t.Helper()
	var n *corev1.Node
	ok := testenv.WaitFor(timeout, func() bool {
		var err error
		n, err = k.c.Client.CoreV1().Nodes().Get(context.Background(), k.Node, metav1.GetOptions{})
		return err == nil && NodeReady(n) == want
	})
	if !ok {
		k.t.Fatalf("node %s: Ready is not %v after %s; node: %+v\nkubelet log:\n%s", k.Node, want, timeout,
			n, Tail(k.Log(), 4000))
	}
	return n
}

func NodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func Tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// Busybox pushes an image of busybox-static (sh and the usual applets,
// PATH=/bin) to a registry on loopback and returns its reference.
func Busybox(t testing.TB) string {
	t.Helper()
	base, err := testimage.Base()
	if err != nil {
		t.Skip(err)
	}
	img, err := testimage.Image(v1.Config{Cmd: []string{"/bin/sh"}, Env: []string{"PATH=/bin"}, WorkingDir: "/"}, base)
	if err != nil {
		t.Fatal(err)
	}
	ref := testimage.Serve(t, nil) + "/test/busybox:1"
	testimage.Push(t, ref, img)
	return ref
}

// PodSpec is a Pod of one container running sh -c script from image on
// node, tolerating the hypefs taint.
func PodSpec(ns, name, node, image, script string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.PodSpec{
			NodeName:    node,
			Tolerations: []corev1.Toleration{{Key: "hypefs.dev/vm", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}},
			Containers: []corev1.Container{{Name: "main", Image: image, Command: []string{"sh", "-c", script},
				ImagePullPolicy: corev1.PullIfNotPresent,
				Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{
					corev1.ResourceMemory: resource.MustParse("128Mi"), corev1.ResourceCPU: resource.MustParse("1")}}}},
			RestartPolicy: corev1.RestartPolicyAlways,
		},
	}
}

func CreatePod(t testing.TB, c *Cluster, pod *corev1.Pod) *corev1.Pod {
	t.Helper()
	out, err := c.Client.CoreV1().Pods(pod.Namespace).Create(context.Background(), pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create pod %s/%s: %v", pod.Namespace, pod.Name, err)
	}
	return out
}

func GetPod(t testing.TB, c *Cluster, ns, name string) *corev1.Pod {
	t.Helper()
	p, err := c.Client.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get pod %s/%s: %v", ns, name, err)
	}
	return p
}

// WaitPod waits until cond holds for the Pod and returns it.
func WaitPod(t testing.TB, c *Cluster, ns, name string, timeout time.Duration, what string, cond func(*corev1.Pod) bool) *corev1.Pod {
	t.Helper()
	var p *corev1.Pod
	ok := testenv.WaitFor(timeout, func() bool {
		var err error
		p, err = c.Client.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
		return err == nil && cond(p)
	})
	if !ok {
		t.Fatalf("pod %s/%s: not %s after %s; status: %s", ns, name, what, timeout, Describe(p))
	}
	return p
}

func WaitGone(t testing.TB, c *Cluster, ns, name string, timeout time.Duration) {
	t.Helper()
	ok := testenv.WaitFor(timeout, func() bool {
		_, err := c.Client.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	})
	if !ok {
		t.Fatalf("pod %s/%s still in the API after %s", ns, name, timeout)
	}
}

func Running(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodRunning && len(p.Status.ContainerStatuses) == 1 &&
		p.Status.ContainerStatuses[0].State.Running != nil && p.Status.ContainerStatuses[0].Ready
}

// Describe is a Pod's status in a line or two, for failures.
func Describe(p *corev1.Pod) string {
	if p == nil {
		return "<no pod>"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "phase=%s reason=%q message=%q node=%s", p.Status.Phase, p.Status.Reason, p.Status.Message, p.Spec.NodeName)
	for _, cs := range p.Status.ContainerStatuses {
		fmt.Fprintf(&b, " [%s restarts=%d ready=%v id=%s", cs.Name, cs.RestartCount, cs.Ready, cs.ContainerID)
		switch s := cs.State; {
		case s.Running != nil:
			b.WriteString(" running")
		case s.Waiting != nil:
			fmt.Fprintf(&b, " waiting %s %q", s.Waiting.Reason, s.Waiting.Message)
		case s.Terminated != nil:
			fmt.Fprintf(&b, " terminated %s code=%d %q", s.Terminated.Reason, s.Terminated.ExitCode, s.Terminated.Message)
		}
		if lt := cs.LastTerminationState.Terminated; lt != nil {
			fmt.Fprintf(&b, " last=%s/%d", lt.Reason, lt.ExitCode)
		}
		b.WriteString("]")
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status != corev1.ConditionTrue {
			fmt.Fprintf(&b, " unscheduled: %s %s", c.Reason, c.Message)
		}
	}
	return b.String()
}

// InstanceOf is the instance a Pod's status names (containerID hypefs://NAME).
func InstanceOf(t testing.TB, p *corev1.Pod) string {
	t.Helper()
	if len(p.Status.ContainerStatuses) == 0 {
		t.Fatalf("pod %s has no container status", p.Name)
	}
	id := p.Status.ContainerStatuses[0].ContainerID
	name, ok := strings.CutPrefix(id, "hypefs://")
	if !ok {
		t.Fatalf("pod %s: containerID %q does not name an instance", p.Name, id)
	}
	return name
}
