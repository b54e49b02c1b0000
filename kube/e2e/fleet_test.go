package e2e

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"hypefs/internal/testenv"
)

// Two hypefs hosts (two daemons, each with its own mount and data, each
// its own node) and kube-scheduler: Pods that ask for most of a host's
// CPUs land one per node; one more waits (Insufficient cpu) until a Pod
// is deleted, then runs where room was made. A Pod without the
// toleration is never placed on a hypefs node.
func TestFleet(t *testing.T) {
	c := cluster(t)
	ref := busybox(t)
	ns := c.Namespace(t, "fleet")
	da, db := testenv.NewDaemon(t), testenv.NewDaemon(t)
	ka, kb := StartKubelet(t, c, da, "hfs-fleet-a"), StartKubelet(t, c, db, "hfs-fleet-b")
	daemons := map[string]*testenv.Daemon{ka.Node: da, kb.Node: db}
	cpus := ka.WaitReady(true, time.Minute).Status.Allocatable.Cpu().MilliValue()
	if cpus < 1000 {
		t.Skipf("nodes have %dm CPU", cpus)
	}
	// More than half a host each: one per node.
	ask := resource.NewMilliQuantity(cpus/2+100, resource.DecimalSI)
	fleetPod := func(name string) *corev1.Pod {
		p := podSpec(ns, name, "", ref, "echo on-$(NODE); sleep 3600")
		p.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "NODE",
			ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"}}}}
		p.Spec.Containers[0].Resources = corev1.ResourceRequirements{Requests: corev1.ResourceList{
			corev1.ResourceCPU: *ask, corev1.ResourceMemory: resource.MustParse("128Mi")}}
		p.Spec.Affinity = onNodes(ka.Node, kb.Node)
		return p
	}
	createPod(t, c, fleetPod("vm-1"))
	createPod(t, c, fleetPod("vm-2"))
	p1 := waitPod(t, c, ns, "vm-1", 2*time.Minute, "Running", running)
	p2 := waitPod(t, c, ns, "vm-2", 2*time.Minute, "Running", running)
	if p1.Spec.NodeName == p2.Spec.NodeName {
		t.Fatalf("both Pods were placed on %s", p1.Spec.NodeName)
	}
	for _, p := range []*corev1.Pod{p1, p2} {
		d := daemons[p.Spec.NodeName]
		inst := instanceOf(t, p)
		if d == nil || d.Status(inst) != "running" {
			t.Fatalf("pod %s on %s: instance %s is not running in that node's tree", p.Name, p.Spec.NodeName, inst)
		}
		// cpu 0.5 host + 100m rounds up to whole vCPUs.
		var cfg struct{ CPUs int64 }
		json.Unmarshal([]byte(d.Read(d.Inst(inst, "config"))), &cfg)
		if want := (ask.MilliValue() + 999) / 1000; cfg.CPUs != want {
			t.Errorf("pod %s: instance has %d vCPUs, want %d", p.Name, cfg.CPUs, want)
		}
		d.WaitLog(inst, "on-"+p.Spec.NodeName, 1, 30*time.Second)
	}

	createPod(t, c, fleetPod("vm-3"))
	createPod(t, c, podSpecNoToleration(ns, "ordinary", ref, ka.Node, kb.Node))
	waitPod(t, c, ns, "vm-3", time.Minute, "unschedulable for want of CPU", unschedulable("Insufficient cpu"))
	waitPod(t, c, ns, "ordinary", time.Minute, "kept off the tainted nodes", unschedulable("untolerated taint"))

	if err := c.Client.CoreV1().Pods(ns).Delete(context.Background(), "vm-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	p3 := waitPod(t, c, ns, "vm-3", 2*time.Minute, "Running where vm-1 was", running)
	if p3.Spec.NodeName != p1.Spec.NodeName {
		t.Errorf("vm-3 runs on %s, want %s (where vm-1 left room)", p3.Spec.NodeName, p1.Spec.NodeName)
	}
	if p := getPod(t, c, ns, "ordinary"); p.Spec.NodeName != "" {
		t.Errorf("a Pod without the toleration was placed on %s", p.Spec.NodeName)
	}
}

func unschedulable(why string) func(*corev1.Pod) bool {
	return func(p *corev1.Pod) bool {
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && strings.Contains(c.Message, why) {
				return p.Spec.NodeName == ""
			}
		}
		return false
	}
}

func podSpecNoToleration(ns, name, image string, nodes ...string) *corev1.Pod {
	p := podSpec(ns, name, "", image, "true")
	p.Spec.Tolerations = nil
	p.Spec.Affinity = onNodes(nodes...)
	return p
}

// onNodes keeps a Pod to these nodes (the shared control plane also
// knows the nodes of other tests).
func onNodes(nodes ...string) *corev1.Affinity {
	return &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{
		RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
			MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "kubernetes.io/hostname",
				Operator: corev1.NodeSelectorOpIn, Values: nodes}}}}}}}
}
