package provider

import (
	"context"
	"runtime"
	"strconv"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TaintKey is the taint every hypefs node carries (effect NoSchedule), so
// that only Pods that tolerate it, written for VMs, are placed there.
const TaintKey = "hypefs.dev/vm"

// NodeConfig describes the node the provider registers.
type NodeConfig struct {
	Name    string
	IP      string // InternalIP: where the API server reaches the kubelet API
	Port    int32  // the kubelet API's port
	MaxPods int
	Version string // hypefs' version, shown as the kubelet version
}

// Node returns the node to register: capacity and allocatable from /host
// (cpus, memory, and the Pod count), the taint, the address and port of
// the kubelet API, and a Ready condition that follows the mount.
func (p *Provider) Node(cfg NodeConfig) *corev1.Node {
	arch := runtime.GOARCH
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: cfg.Name, Labels: map[string]string{
			"type":                   "virtual-kubelet",
			"kubernetes.io/role":     "agent",
			"kubernetes.io/hostname": cfg.Name,
			"kubernetes.io/os":       "linux",
			"kubernetes.io/arch":     arch,
			"hypefs.dev/node":        "true",
		}},
		Spec: corev1.NodeSpec{Taints: []corev1.Taint{{Key: TaintKey, Effect: corev1.TaintEffectNoSchedule}}},
		Status: corev1.NodeStatus{
			Phase: corev1.NodeRunning,
			NodeInfo: corev1.NodeSystemInfo{OperatingSystem: "linux", Architecture: arch,
				KubeletVersion: "hypefs-" + cfg.Version, ContainerRuntimeVersion: "hypefs://" + cfg.Version},
			Addresses:       []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: cfg.IP}},
			DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: cfg.Port}},
		},
	}
	p.node.mu.Lock()
	p.node.cfg = cfg
	p.node.mu.Unlock()
	p.fillNode(n, p.tree.Alive())
	return n
}

// fillNode sets capacity and conditions from the tree (down: err).
func (p *Provider) fillNode(n *corev1.Node, down error) {
	p.node.mu.Lock()
	maxPods := p.node.cfg.MaxPods
	p.node.mu.Unlock()
	var h Host
	if down == nil {
		var err error
		if h, err = p.tree.Host(); err != nil {
			down = err
		}
	}
	if down == nil {
		if h.Arch != "" {
			n.Status.NodeInfo.Architecture = h.Arch
			n.Labels["kubernetes.io/arch"] = h.Arch
		}
		rl := corev1.ResourceList{
			corev1.ResourceCPU:    *resource.NewQuantity(int64(h.CPUs), resource.DecimalSI),
			corev1.ResourceMemory: *resource.NewQuantity(h.MemoryBytes, resource.BinarySI),
			corev1.ResourcePods:   resource.MustParse(strconv.Itoa(maxPods)),
		}
		n.Status.Capacity = rl
		n.Status.Allocatable = rl.DeepCopy()
	}
	now := metav1.Now()
	ready := corev1.NodeCondition{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
		Message: "the hypefs tree at " + p.tree.Root + " answers", LastHeartbeatTime: now, LastTransitionTime: now}
	if down != nil {
		ready.Status, ready.Reason, ready.Message = corev1.ConditionFalse, "HypefsTreeUnavailable", down.Error()
	}
	conds := []corev1.NodeCondition{ready}
	for _, c := range []struct {
		t      corev1.NodeConditionType
		reason string
	}{{corev1.NodeMemoryPressure, "KubeletHasSufficientMemory"}, {corev1.NodeDiskPressure, "KubeletHasNoDiskPressure"},
		{corev1.NodePIDPressure, "KubeletHasSufficientPID"}, {corev1.NodeNetworkUnavailable, "RouteCreated"}} {
		conds = append(conds, corev1.NodeCondition{Type: c.t, Status: corev1.ConditionFalse, Reason: c.reason,
			LastHeartbeatTime: now, LastTransitionTime: now})
	}
	for i, c := range conds {
		for _, o := range n.Status.Conditions {
			if o.Type == c.Type && o.Status == c.Status {
				conds[i].LastTransitionTime = o.LastTransitionTime
			}
		}
	}
	n.Status.Conditions = conds
}

// NodeNotifier is virtual-kubelet's NodeProvider: it pushes the node's
// status when the mount comes or goes.
type NodeNotifier struct {
	mu   sync.Mutex
	cfg  NodeConfig
	cb   func(*corev1.Node)
	last *corev1.Node // the status to push, latest first
	push chan struct{}
}

// NodeProvider is what virtual-kubelet's node controller is given.
func (p *Provider) NodeProvider(node *corev1.Node) *NodeNotifier {
	p.node.mu.Lock()
	p.node.last = node.DeepCopy()
	p.node.mu.Unlock()
	return p.node
}

// Ping answers for the provider itself. The tree's health is the node's
// Ready condition, pushed when it changes, rather than a failed ping
// (which would only stop the heartbeats).
func (n *NodeNotifier) Ping(context.Context) error { return nil }

// NotifyNodeStatus registers the node controller's callback; the latest
// status is pushed at once, then at every change. The callback may block,
// so one goroutine calls it.
func (n *NodeNotifier) NotifyNodeStatus(ctx context.Context, cb func(*corev1.Node)) {
	n.mu.Lock()
	n.cb = cb
	n.push = make(chan struct{}, 1)
	push := n.push
	n.mu.Unlock()
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-push:
			}
			n.mu.Lock()
			node := n.last.DeepCopy()
			n.mu.Unlock()
			cb(node)
		}
	}()
	push <- struct{}{}
}

func (n *NodeNotifier) mountChanged(p *Provider, up bool, why string) {
	n.mu.Lock()
	if n.last == nil {
		n.mu.Unlock()
		return
	}
	node := n.last.DeepCopy()
	n.mu.Unlock()
	var down error
	if !up {
		down = errString(why)
	}
	p.fillNode(node, down)
	n.mu.Lock()
	n.last = node
	push := n.push
	n.mu.Unlock()
	if push != nil {
		select {
		case push <- struct{}{}:
		default:
		}
	}
}

type errString string

func (e errString) Error() string { return string(e) }
