package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"hypefs/internal/testenv"
)

// A program's exit code reaches the container's terminated state, and
// restartPolicy decides what follows: Never and OnFailure end the Pod
// (Failed or Succeeded); OnFailure after a failure and Always after any
// end start the VM again, counting restarts and keeping the last
// termination, with the kubelet's back-off between failures.
func TestRestartPolicy(t *testing.T) {
	c := cluster(t)
	d := testenv.NewDaemon(t)
	ref := busybox(t)
	ns := c.Namespace(t, "policy")
	k := StartKubelet(t, c, d, "hfs-policy")

	// One name at Kubernetes' limit (253 characters): its instance name
	// is cut to hypefs' 63 and still found by its Pod.
	long := "onfailure-ok-" + strings.Repeat("x", 240)
	cases := []struct {
		name, script string
		policy       corev1.RestartPolicy
	}{
		{"never-fails", "echo bye; exit 3", corev1.RestartPolicyNever},
		{long, "echo done; exit 0", corev1.RestartPolicyOnFailure},
		{"onfailure-fails", "echo run; exit 2", corev1.RestartPolicyOnFailure},
		{"always-ok", "echo run; exit 0", corev1.RestartPolicyAlways},
	}
	for _, tc := range cases {
		p := podSpec(ns, tc.name, k.Node, ref, tc.script)
		p.Spec.RestartPolicy = tc.policy
		if tc.name == "never-fails" {
			p.Spec.Containers[0].ImagePullPolicy = corev1.PullAlways // pulled again before its boot
		}
		createPod(t, c, p)
	}
	// An image that cannot be pulled: the Pod waits, saying why, and the
	// pull is tried again.
	missing := podSpec(ns, "missing-image", k.Node, strings.Replace(ref, "busybox", "no-such-image", 1), "true")
	missing.Spec.Containers[0].ImagePullPolicy = corev1.PullAlways
	createPod(t, c, missing)

	terminatedWith := func(code int32, phase corev1.PodPhase) func(*corev1.Pod) bool {
		return func(p *corev1.Pod) bool {
			if p.Status.Phase != phase || len(p.Status.ContainerStatuses) != 1 {
				return false
			}
			term := p.Status.ContainerStatuses[0].State.Terminated
			return term != nil && term.ExitCode == code
		}
	}
	p := waitPod(t, c, ns, "never-fails", 3*time.Minute, "Failed with exit code 3", terminatedWith(3, corev1.PodFailed))
	if cs := p.Status.ContainerStatuses[0]; cs.RestartCount != 0 || cs.State.Terminated.Reason != "Error" {
		t.Errorf("never-fails: %s", describe(p))
	}
	if inst := instanceOf(t, p); d.Status(inst) != "stopped" || strings.TrimSpace(d.Read(d.Inst(inst, "exit"))) != "3" {
		t.Errorf("never-fails: instance %s is %q with exit %q, want stopped with 3", inst, d.Status(inst), d.Read(d.Inst(inst, "exit")))
	}
	p = waitPod(t, c, ns, long, 2*time.Minute, "Succeeded", terminatedWith(0, corev1.PodSucceeded))
	if cs := p.Status.ContainerStatuses[0]; cs.RestartCount != 0 || cs.State.Terminated.Reason != "Completed" {
		t.Errorf("onfailure-ok: %s", describe(p))
	}
	if inst := instanceOf(t, p); len(inst) != 63 || !strings.HasPrefix(inst, "policy_onfailure-ok-xxx") {
		t.Errorf("the 253-character Pod name gave instance %q (%d characters)", inst, len(inst))
	}

	p = waitPod(t, c, ns, "missing-image", time.Minute, "waiting on its image", func(p *corev1.Pod) bool {
		if len(p.Status.ContainerStatuses) != 1 || p.Status.Phase != corev1.PodPending {
			return false
		}
		w := p.Status.ContainerStatuses[0].State.Waiting
		return w != nil && w.Reason == "CreateContainerError" && strings.Contains(w.Message, "no-such-image")
	})
	t.Logf("missing-image: %s", describe(p))

	restartedAfter := func(code int32) func(*corev1.Pod) bool {
		return func(p *corev1.Pod) bool {
			if len(p.Status.ContainerStatuses) != 1 {
				return false
			}
			cs := p.Status.ContainerStatuses[0]
			last := cs.LastTerminationState.Terminated
			return cs.RestartCount >= 1 && last != nil && last.ExitCode == code && p.Status.Phase == corev1.PodRunning
		}
	}
	waitPod(t, c, ns, "always-ok", 2*time.Minute, "restarted after exit 0", restartedAfter(0))
	waitPod(t, c, ns, "onfailure-fails", 2*time.Minute, "restarted after exit 2", restartedAfter(2))
	// Its second failure waits in the back-off.
	p = waitPod(t, c, ns, "onfailure-fails", 2*time.Minute, "in CrashLoopBackOff", func(p *corev1.Pod) bool {
		w := p.Status.ContainerStatuses[0].State.Waiting
		return w != nil && w.Reason == "CrashLoopBackOff" && p.Status.ContainerStatuses[0].RestartCount >= 1
	})
	// One instance, kept across the restarts: its log holds every run.
	inst := instanceOf(t, p)
	if n := strings.Count(d.Read(d.Inst(inst, "log")), "run\r\n") + strings.Count(d.Read(d.Inst(inst, "log")), "run\n"); n < 2 {
		t.Errorf("onfailure-fails: instance log holds %d runs, want at least 2", n)
	}
	logs, err := c.Client.CoreV1().Pods(ns).GetLogs("onfailure-fails", &corev1.PodLogOptions{}).DoRaw(context.Background())
	if err != nil || strings.Count(string(logs), "run\n") < 2 {
		t.Errorf("onfailure-fails: kubectl logs gave %q (%v), want every run", logs, err)
	}
	names := ownedInstances(t, d)
	if len(names) != len(cases) { // missing-image never got one
		t.Errorf("the tree holds %d of the provider's instances (%v), want %d: restarts must not make new ones", len(names), names, len(cases))
	}
}

// ownedInstances lists the instances named as the provider names them.
func ownedInstances(t *testing.T, d *testenv.Daemon) []string {
	t.Helper()
	out, err := testenv.Shell("ls " + d.Path("instances"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, n := range strings.Fields(out) {
		if strings.Count(n, "_") == 2 {
			names = append(names, n)
		}
	}
	return names
}

// Pods hypefs cannot run are refused on their status (phase Failed,
// reason UnsupportedPod, a message that says why) and nothing is made in
// the tree; a config the daemon refuses (more CPUs than the host has)
// fails the Pod with the daemon's sentence and leaves no instance.
func TestRefusedPods(t *testing.T) {
	c := cluster(t)
	d := testenv.NewDaemon(t)
	ns := c.Namespace(t, "refuse")
	k := StartKubelet(t, c, d, "hfs-refuse")
	const image = "127.0.0.1:1/never/pulled:1"

	cases := []struct {
		name  string
		edit  func(*corev1.Pod)
		wants []string
	}{
		{"two-containers", func(p *corev1.Pod) {
			p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "sidecar", Image: image})
		}, []string{"one container per Pod", "has 2 (main, sidecar)"}},
		{"init-container", func(p *corev1.Pod) {
			p.Spec.InitContainers = []corev1.Container{{Name: "setup", Image: image}}
		}, []string{"init containers (setup)"}},
		{"host-path", func(p *corev1.Pod) {
			p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "data",
				VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/srv"}}})
			p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}
		}, []string{"volumes data (hostPath)"}},
		{"empty-dir", func(p *corev1.Pod) {
			p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "scratch",
				VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
		}, []string{"scratch (emptyDir)"}},
		{"run-as-user", func(p *corev1.Pod) {
			uid := int64(1000)
			p.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsUser: &uid}
		}, []string{"runAsUser", "image's USER"}},
		{"host-network", func(p *corev1.Pod) { p.Spec.HostNetwork = true }, []string{"hostNetwork"}},
		{"gpu", func(p *corev1.Pod) {
			q := resource.MustParse("1")
			p.Spec.Containers[0].Resources.Limits["example.com/gpu"] = q
			p.Spec.Containers[0].Resources.Requests = corev1.ResourceList{"example.com/gpu": q}
		}, []string{"example.com/gpu"}},
		{"too-many-cpus", func(p *corev1.Pod) {
			p.Spec.Containers[0].Resources.Limits[corev1.ResourceCPU] = resource.MustParse("500")
		}, []string{`config key "cpus"`, "this host's CPUs"}},
	}
	for _, tc := range cases {
		p := podSpec(ns, tc.name, k.Node, image, "true")
		tc.edit(p)
		createPod(t, c, p)
	}
	for _, tc := range cases {
		p := waitPod(t, c, ns, tc.name, time.Minute, "refused", func(p *corev1.Pod) bool {
			return p.Status.Phase == corev1.PodFailed && p.Status.Reason == "UnsupportedPod"
		})
		for _, w := range tc.wants {
			if !strings.Contains(p.Status.Message, w) {
				t.Errorf("%s: message %q lacks %q", tc.name, p.Status.Message, w)
			}
		}
	}
	if names := ownedInstances(t, d); len(names) != 0 {
		t.Errorf("refused Pods left instances in the tree: %v", names)
	}
	// A refused Pod is deleted like any other.
	if err := c.Client.CoreV1().Pods(ns).Delete(context.Background(), "two-containers", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitGone(t, c, ns, "two-containers", 25*time.Second)
}
