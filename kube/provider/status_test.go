package provider

import (
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// Each instance state maps to the phase and container state the kubelet
// would report, and restartPolicy decides what an ended run means.
func TestPodStatus(t *testing.T) {
	started := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	ended := started.Add(time.Minute)
	exit := func(n int) *int { return &n }
	pod := func(policy corev1.RestartPolicy) *corev1.Pod {
		p := onePod(corev1.Container{Image: "app"})
		p.Name, p.Spec.RestartPolicy = "web", policy
		return p
	}
	info := Info{Started: &started, IP: "10.88.0.5", Image: "app", Digest: "sha256:ab",
		Exit: &ExitRecord{Time: ended, Reason: "guest powered off"}}
	cases := []struct {
		name     string
		in       statusInput
		phase    corev1.PodPhase
		state    string // running, waiting:REASON, terminated:REASON:CODE
		ready    bool
		lastCode int32 // -1: no last termination
	}{
		{"not made yet", statusInput{}, corev1.PodPending, "waiting:ContainerCreating", false, -1},
		{"booting", statusInput{have: true, snap: Snapshot{State: stBooting}}, corev1.PodPending, "waiting:ContainerCreating", false, -1},
		{"create failed", statusInput{failure: "pull app: unauthorized"}, corev1.PodPending, "waiting:CreateContainerError", false, -1},
		{"running", statusInput{have: true, snap: Snapshot{State: stRunning, Info: info}}, corev1.PodRunning, "running", true, -1},
		{"paused", statusInput{have: true, snap: Snapshot{State: stPaused, Info: info}}, corev1.PodRunning, "running", false, -1},
		{"exit 3, done", statusInput{have: true, terminal: true, snap: Snapshot{State: stStopped, Exit: exit(3), Info: info}},
			corev1.PodFailed, "terminated:Error:3", false, -1},
		{"exit 0, done", statusInput{have: true, terminal: true, snap: Snapshot{State: stStopped, Exit: exit(0), Info: info}},
			corev1.PodSucceeded, "terminated:Completed:0", false, -1},
		{"killed, done", statusInput{have: true, terminal: true, snap: Snapshot{State: stStopped, Info: info}},
			corev1.PodFailed, "terminated:Killed:137", false, -1},
		{"crashed, done", statusInput{have: true, terminal: true, snap: Snapshot{State: stCrashed, Error: "QEMU died", Info: info}},
			corev1.PodFailed, "terminated:Crashed:255", false, -1},
		{"boot failed, done", statusInput{have: true, terminal: true, snap: Snapshot{State: stError, Error: "no kernel"}},
			corev1.PodFailed, "terminated:StartError:128", false, -1},
		{"backing off", statusInput{have: true, restarts: 2, backoff: 20 * time.Second,
			snap: Snapshot{State: stStopped, Exit: exit(1), Info: info}},
			corev1.PodRunning, "waiting:CrashLoopBackOff", false, 1},
		{"restarted, running", statusInput{have: true, restarts: 1, lastTerm: terminated(Snapshot{State: stStopped, Exit: exit(2)}, "i"),
			snap: Snapshot{State: stRunning, Info: info}}, corev1.PodRunning, "running", true, 2},
	}
	for _, c := range cases {
		in := c.in
		in.pod, in.instance, in.hostIP = pod(corev1.RestartPolicyAlways), "default_web_01234567", "192.0.2.1"
		st := podStatus(in)
		if st.Phase != c.phase {
			t.Errorf("%s: phase %s, want %s", c.name, st.Phase, c.phase)
		}
		cs := st.ContainerStatuses[0]
		if got := stateString(cs.State); got != c.state {
			t.Errorf("%s: state %s, want %s", c.name, got, c.state)
		}
		if cs.Ready != c.ready || condition(st, corev1.PodReady) != c.ready {
			t.Errorf("%s: ready %v (condition %v), want %v", c.name, cs.Ready, condition(st, corev1.PodReady), c.ready)
		}
		last := int32(-1)
		if lt := cs.LastTerminationState.Terminated; lt != nil {
			last = lt.ExitCode
		}
		if last != c.lastCode {
			t.Errorf("%s: last termination code %d, want %d", c.name, last, c.lastCode)
		}
		if cs.ContainerID != "hypefs://default_web_01234567" || st.HostIP != "192.0.2.1" {
			t.Errorf("%s: containerID %q hostIP %q", c.name, cs.ContainerID, st.HostIP)
		}
		if c.state == "running" && (st.PodIP != "10.88.0.5" || !cs.State.Running.StartedAt.Time.Equal(started) || cs.ImageID != "app@sha256:ab") {
			t.Errorf("%s: podIP %q startedAt %v imageID %q", c.name, st.PodIP, cs.State.Running.StartedAt, cs.ImageID)
		}
	}
	refused := podStatus(statusInput{pod: pod(corev1.RestartPolicyAlways), refused: &Refusal{Message: "no"}})
	if refused.Phase != corev1.PodFailed || refused.Reason != ReasonUnsupported || refused.Message != "no" {
		t.Errorf("refused: %+v", refused)
	}
}

func stateString(s corev1.ContainerState) string {
	switch {
	case s.Running != nil:
		return "running"
	case s.Waiting != nil:
		return "waiting:" + s.Waiting.Reason
	case s.Terminated != nil:
		return "terminated:" + s.Terminated.Reason + ":" + strconv.Itoa(int(s.Terminated.ExitCode))
	}
	return "none"
}

func condition(st corev1.PodStatus, t corev1.PodConditionType) bool {
	for _, c := range st.Conditions {
		if c.Type == t {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// restartPolicy: Never never, OnFailure on a failure, Always always.
func TestRestartWanted(t *testing.T) {
	for _, c := range []struct {
		policy corev1.RestartPolicy
		code   int32
		want   bool
	}{
		{corev1.RestartPolicyNever, 1, false}, {corev1.RestartPolicyNever, 0, false},
		{corev1.RestartPolicyOnFailure, 1, true}, {corev1.RestartPolicyOnFailure, 0, false},
		{corev1.RestartPolicyAlways, 0, true}, {corev1.RestartPolicyAlways, 137, true}, {"", 0, true},
	} {
		if got := restartWanted(c.policy, &corev1.ContainerStateTerminated{ExitCode: c.code}); got != c.want {
			t.Errorf("restartWanted(%q, %d) = %v", c.policy, c.code, got)
		}
	}
}
