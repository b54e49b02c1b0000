package provider

import (
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Instance states (docs/filesystem.md, "States").
const (
	stNew      = "new"
	stCreated  = "created"
	stBooting  = "booting"
	stRunning  = "running"
	stPaused   = "paused"
	stStopping = "stopping"
	stStopped  = "stopped"
	stCrashed  = "crashed"
	stError    = "error"
)

// ended says whether the VM has ended (its program is no longer running).
func ended(state string) bool { return state == stStopped || state == stCrashed || state == stError }

// Exit codes where the program left none: a VM killed from outside
// (kill, a shutdown that timed out), as a SIGKILLed process; a VM that
// crashed; a program that never started (the kubelet's StartError).
const (
	exitKilled     = 137
	exitCrashed    = 255
	exitStartError = 128
)

// terminated describes how the instance's last run ended.
func terminated(s Snapshot, instance string) *corev1.ContainerStateTerminated {
	t := &corev1.ContainerStateTerminated{ContainerID: ContainerID(instance)}
	if s.Info.Started != nil {
		t.StartedAt = metav1.NewTime(*s.Info.Started)
	}
	if e := s.Info.Exit; e != nil {
		t.FinishedAt = metav1.NewTime(e.Time)
		t.Message = e.Reason
		if e.Detail != "" {
			t.Message += ": " + e.Detail
		}
	}
	switch {
	case s.State == stError:
		t.ExitCode, t.Reason, t.Message = exitStartError, "StartError", s.Error
	case s.Exit != nil:
		t.ExitCode = int32(*s.Exit)
		t.Reason = "Completed"
		if t.ExitCode != 0 {
			t.Reason = "Error"
		}
	case s.State == stCrashed:
		t.ExitCode, t.Reason = exitCrashed, "Crashed"
		if s.Error != "" {
			t.Message = s.Error
		}
	default:
		t.ExitCode, t.Reason = exitKilled, "Killed"
	}
	if t.FinishedAt.IsZero() {
		t.FinishedAt = metav1.NewTime(s.Changed)
	}
	return t
}

// restartWanted applies the Pod's restartPolicy to a run that ended.
func restartWanted(policy corev1.RestartPolicy, t *corev1.ContainerStateTerminated) bool {
	switch policy {
	case corev1.RestartPolicyNever:
		return false
	case corev1.RestartPolicyOnFailure:
		return t.ExitCode != 0
	}
	return true
}

// statusInput is what a Pod's status is made of.
type statusInput struct {
	pod      *corev1.Pod
	instance string
	snap     Snapshot
	have     bool // snap is real: the instance exists
	refused  *Refusal
	failure  string // a create or start that failed, as a sentence
	restarts int32
	lastTerm *corev1.ContainerStateTerminated
	backoff  time.Duration // > 0 while a restart waits
	terminal bool          // restartPolicy says the Pod is done
	started  time.Time     // when the provider took the Pod
	hostIP   string
}

// podStatus maps an instance's state onto a PodStatus, the kubelet's way:
// new, created and booting are Waiting (ContainerCreating), running,
// paused and stopping are Running (Ready only when running), stopped and
// crashed are Terminated with the program's exit code, or Waiting
// (CrashLoopBackOff) while a restart waits.
func podStatus(in statusInput) corev1.PodStatus {
	st := corev1.PodStatus{HostIP: in.hostIP}
	if in.hostIP != "" {
		st.HostIPs = []corev1.HostIP{{IP: in.hostIP}}
	}
	if !in.started.IsZero() {
		t := metav1.NewTime(in.started)
		st.StartTime = &t
	}
	if in.refused != nil {
		st.Phase, st.Reason, st.Message = corev1.PodFailed, ReasonUnsupported, in.refused.Message
		st.Conditions = []corev1.PodCondition{cond(corev1.PodScheduled, true, "", "")}
		return st
	}
	ctr := in.pod.Spec.Containers[0]
	cs := corev1.ContainerStatus{Name: ctr.Name, Image: ctr.Image, ImageID: in.snap.Info.Digest,
		RestartCount: in.restarts, ContainerID: ContainerID(in.instance)}
	if in.snap.Info.Digest != "" && in.snap.Info.Image != "" {
		cs.ImageID = in.snap.Info.Image + "@" + in.snap.Info.Digest
	}
	if in.lastTerm != nil {
		cs.LastTerminationState.Terminated = in.lastTerm
	}
	started := setState(in, &cs, &st)
	cs.Started = &started
	if st.PodIP != "" {
		st.PodIPs = []corev1.PodIP{{IP: st.PodIP}}
	}
	st.ContainerStatuses = []corev1.ContainerStatus{cs}
	ready := cs.Ready
	made := in.have
	st.Conditions = []corev1.PodCondition{
		cond(corev1.PodScheduled, true, "", ""),
		cond(corev1.PodReadyToStartContainers, made, "", ""),
		cond(corev1.PodInitialized, true, "", ""),
		cond(corev1.ContainersReady, ready, notReadyReason(ready, st.Phase), ""),
		cond(corev1.PodReady, ready, notReadyReason(ready, st.Phase), ""),
	}
	return st
}

// setState sets the container's state and the Pod's phase (and IP) from
// the instance's state; it says whether the program has started.
func setState(in statusInput, cs *corev1.ContainerStatus, st *corev1.PodStatus) bool {
	ctr := in.pod.Spec.Containers[0]
	started := false
	ranBefore := in.restarts > 0
	st.Phase = corev1.PodPending
	if ranBefore {
		st.Phase = corev1.PodRunning
	}
	switch s := in.snap.State; {
	case !in.have || s == stNew || s == stCreated || s == stBooting:
		w := &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}
		if in.failure != "" {
			w.Reason, w.Message = "CreateContainerError", in.failure
		}
		cs.State.Waiting = w
	case s == stRunning || s == stPaused || s == stStopping:
		r := &corev1.ContainerStateRunning{}
		if in.snap.Info.Started != nil {
			r.StartedAt = metav1.NewTime(*in.snap.Info.Started)
		}
		cs.State.Running = r
		cs.Ready = s == stRunning
		started = true
		st.Phase = corev1.PodRunning
		st.PodIP = in.snap.Info.IP
	case ended(s):
		t := terminated(in.snap, in.instance)
		switch {
		case in.terminal:
			cs.State.Terminated = t
			st.Phase = corev1.PodFailed
			if t.ExitCode == 0 {
				st.Phase = corev1.PodSucceeded
			}
		case in.backoff > 0:
			cs.LastTerminationState.Terminated = t
			cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff",
				Message: fmt.Sprintf("back-off %s restarting failed container=%s pod=%s", in.backoff, ctr.Name, in.pod.Name)}
			st.Phase = corev1.PodRunning
		default: // the restart is being issued
			cs.LastTerminationState.Terminated = t
			cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}
			st.Phase = corev1.PodRunning
		}
	default:
		cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: "Unknown", Message: "instance state " + s}
	}
	return started
}

func notReadyReason(ready bool, phase corev1.PodPhase) string {
	switch {
	case ready:
		return ""
	case phase == corev1.PodSucceeded || phase == corev1.PodFailed:
		return "PodCompleted"
	}
	return "ContainersNotReady"
}

func cond(t corev1.PodConditionType, ok bool, reason, msg string) corev1.PodCondition {
	s := corev1.ConditionFalse
	if ok {
		s = corev1.ConditionTrue
	}
	return corev1.PodCondition{Type: t, Status: s, Reason: reason, Message: msg}
}
