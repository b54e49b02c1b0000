package provider

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/virtual-kubelet/virtual-kubelet/errdefs"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	corev1listers "k8s.io/client-go/listers/core/v1"
)

// Options configure a Provider.
type Options struct {
	Tree     Tree
	NodeName string
	NodeIP   string // the Pods' hostIP
	// Pods lists the Pods bound to this node, from the API.
	Pods corev1listers.PodLister
	// Remove deletes a Pod's API object once its VM is gone, as the kubelet
	// does (grace period 0, UID precondition). May be nil.
	Remove func(ctx context.Context, namespace, name string, uid types.UID) error
	Log    *slog.Logger
	// Context is the provider's life: background work (restarts,
	// retries, log followers) ends with it. Default: never.
	Context context.Context
}

// Provider runs the Pods of one node as instances of one hypefs tree. It
// implements virtual-kubelet's PodLifecycleHandler and PodNotifier, and
// the logs, exec and attach calls of the kubelet API.
type Provider struct {
	opt  Options
	tree Tree
	log  *slog.Logger
	ctx  context.Context // ends with Run

	mu     sync.Mutex
	pods   map[string]*podState // by namespace/name
	byInst map[string]*podState
	notify func(*corev1.Pod)
	mount  mountState
	node   *NodeNotifier
}

// New returns a provider; Run starts following the tree.
func New(opt Options) *Provider {
	if opt.Log == nil {
		opt.Log = slog.Default()
	}
	if opt.Context == nil {
		opt.Context = context.Background()
	}
	return &Provider{opt: opt, tree: opt.Tree, log: opt.Log, ctx: opt.Context,
		pods: map[string]*podState{}, byInst: map[string]*podState{}, node: &NodeNotifier{}}
}

// podState is what the provider knows of one Pod. Fields are guarded by
// Provider.mu; op serializes the actions taken on the Pod's instance
// (create, restart, replace, delete), which run without Provider.mu.
type podState struct {
	op  sync.Mutex
	pub sync.Mutex // one status publication at a time, in order

	key      string
	pod      *corev1.Pod // the latest spec from the API
	inst     string
	cfg      Config
	cfgKnown bool // cfg is from a Pod whose env virtual-kubelet resolved
	refused  *Refusal
	failure  string // why the last create or start failed
	started  time.Time
	snap     Snapshot
	have     bool // snap is from the tree: the instance exists
	made     bool // the instance was made or found by this provider
	restarts int32
	lastTerm *corev1.ContainerStateTerminated
	handled  string        // the ended run last acted on (see runKey)
	backoff  time.Duration // the wait of the pending restart
	nextWait time.Duration // the wait before the next restart
	timer    *time.Timer
	terminal bool
	deleted  bool
	creating bool
	status   corev1.PodStatus // last published
	refresh  refresher
	logs     *logMarks
}

func podKey(namespace, name string) string { return namespace + "/" + name }

// CreatePod takes a Pod bound to this node. A Pod hypefs cannot run is
// refused on its status (phase Failed, reason UnsupportedPod) and nothing
// is made. Otherwise its instance is made and configured in the
// background; an instance already there for this Pod (after a restart of
// the provider) is taken over as it is.
func (p *Provider) CreatePod(ctx context.Context, pod *corev1.Pod) error {
	key := podKey(pod.Namespace, pod.Name)
	ps := &podState{key: key, pod: pod.DeepCopy(), started: time.Now(), logs: newLogMarks()}
	if t := pod.Status.StartTime; t != nil {
		ps.started = t.Time
	}
	seedFromStatus(ps, &pod.Status)
	if r := Check(pod); r != nil {
		ps.refused = r
	} else {
		ps.inst = InstanceName(pod.Namespace, pod.Name, pod.UID)
		ps.cfg, ps.cfgKnown = ConfigFor(pod), true
	}
	p.mu.Lock()
	if old := p.pods[key]; old != nil && old.pod.UID == pod.UID {
		p.mu.Unlock()
		return p.UpdatePod(ctx, pod)
	}
	p.pods[key] = ps
	if ps.inst != "" {
		p.byInst[ps.inst] = ps
		ps.creating = true
	}
	p.mu.Unlock()
	if ps.refused != nil {
		p.log.Info("pod refused", "pod", key, "why", ps.refused.Message)
		p.publish(ps)
		return nil
	}
	go p.create(ps)
	return nil
}

// seedFromStatus carries the restart count and the last termination over
// from the API, so that a restarted provider continues counting.
func seedFromStatus(ps *podState, st *corev1.PodStatus) {
	if len(st.ContainerStatuses) == 0 {
		return
	}
	cs := st.ContainerStatuses[0]
	ps.restarts = cs.RestartCount
	ps.lastTerm = cs.LastTerminationState.Terminated
	ps.terminal = st.Phase == corev1.PodSucceeded || st.Phase == corev1.PodFailed
}

// UpdatePod takes a changed Pod. Only the image of a container can change
// in a running Pod; a new image (or any change to what the VM runs)
// replaces the VM, as the kubelet restarts the container.
func (p *Provider) UpdatePod(ctx context.Context, pod *corev1.Pod) error {
	ps := p.lookup(pod.Namespace, pod.Name)
	if ps == nil || ps.pod.UID != pod.UID {
		return p.CreatePod(ctx, pod)
	}
	p.mu.Lock()
	ps.pod = pod.DeepCopy()
	changed, first := false, false
	if ps.refused == nil {
		if r := Check(pod); r == nil {
			cfg := ConfigFor(pod)
			first = !ps.cfgKnown
			changed = !first && !cfg.Same(ps.cfg)
			ps.cfg, ps.cfgKnown = cfg, true
		}
	}
	if first {
		ps.creating = true
	}
	p.mu.Unlock()
	switch {
	case first: // a Pod taken over at start: check its instance's config
		go p.create(ps)
	case changed:
		go p.replace(ps)
	default:
		p.kick(ps)
	}
	return nil
}

// DeletePod ends the Pod's VM and removes its instance (kill, then rmdir),
// reports the Pod terminated, and removes the Pod from the API.
func (p *Provider) DeletePod(ctx context.Context, pod *corev1.Pod) error {
	ps := p.lookup(pod.Namespace, pod.Name)
	inst := ""
	switch {
	case ps != nil:
		inst = ps.inst
	case pod.Annotations[danglingAnnotation] != "":
		inst = pod.Annotations[danglingAnnotation]
	case pod.UID != "":
		inst = InstanceName(pod.Namespace, pod.Name, pod.UID)
	}
	if ps != nil {
		p.mu.Lock()
		ps.deleted = true
		if ps.timer != nil {
			ps.timer.Stop()
			ps.timer = nil
		}
		p.mu.Unlock()
		ps.op.Lock()
		defer ps.op.Unlock()
	}
	if inst != "" {
		if err := p.removeInstance(inst); err != nil {
			return err
		}
	}
	p.mu.Lock()
	if ps != nil && p.pods[ps.key] == ps {
		delete(p.pods, ps.key)
	}
	if ps != nil && inst != "" && p.byInst[inst] == ps {
		delete(p.byInst, inst)
	}
	p.mu.Unlock()
	p.log.Info("pod deleted", "pod", podKey(pod.Namespace, pod.Name), "instance", inst)
	if pod.Annotations[danglingAnnotation] != "" {
		return nil
	}
	if ps != nil {
		p.publishDeleted(ps)
	}
	if p.opt.Remove != nil && pod.UID != "" {
		go func() {
			err := p.opt.Remove(p.ctx, pod.Namespace, pod.Name, pod.UID)
			if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) && p.ctx.Err() == nil {
				p.log.Warn("remove pod from the API", "pod", podKey(pod.Namespace, pod.Name), "err", err)
			}
		}()
	}
	return nil
}

// removeInstance kills the VM (a VM that is not running is left as it is)
// and removes the instance.
func (p *Provider) removeInstance(inst string) error {
	if ok, err := p.tree.Exists(inst); err != nil {
		return fmt.Errorf("look up instance %s: %w", inst, err)
	} else if !ok {
		return nil
	}
	if err := p.tree.Ctl(inst, "kill"); err != nil {
		if ok, _ := p.tree.Exists(inst); !ok {
			return nil
		}
		return err
	}
	return p.tree.Remove(inst)
}

func (p *Provider) lookup(namespace, name string) *podState {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pods[podKey(namespace, name)]
}

// GetPod returns the Pod with the status the provider last computed.
func (p *Provider) GetPod(_ context.Context, namespace, name string) (*corev1.Pod, error) {
	ps := p.lookup(namespace, name)
	if ps == nil {
		return nil, errdefs.NotFoundf("pod %s/%s is not on this node", namespace, name)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	pod := ps.pod.DeepCopy()
	pod.Status = *ps.status.DeepCopy()
	return pod, nil
}

// GetPodStatus returns the Pod's status as last computed.
func (p *Provider) GetPodStatus(ctx context.Context, namespace, name string) (*corev1.PodStatus, error) {
	pod, err := p.GetPod(ctx, namespace, name)
	if err != nil {
		return nil, err
	}
	return &pod.Status, nil
}

// danglingAnnotation marks the stand-in Pod GetPods returns for an
// instance of the provider's whose Pod is gone from the API; it names the
// instance, for DeletePod.
const danglingAnnotation = "hypefs.dev/dangling-instance"

// GetPods lists the provider's Pods. It also looks at the tree: an
// instance of the provider's (see Owned) that belongs to a Pod of this
// node is taken over, and one whose Pod is gone comes back as a stand-in
// Pod that is not in the API, which the pod controller then deletes. It
// is called once the Pod cache is in sync, before any Pod is synced.
func (p *Provider) GetPods(ctx context.Context) ([]*corev1.Pod, error) {
	if err := p.adopt(ctx); err != nil {
		return nil, err
	}
	p.mu.Lock()
	out := make([]*corev1.Pod, 0, len(p.pods))
	for _, ps := range p.pods {
		pod := ps.pod.DeepCopy()
		pod.Status = *ps.status.DeepCopy()
		out = append(out, pod)
	}
	p.mu.Unlock()
	names, err := p.tree.Instances()
	if err != nil {
		return out, nil
	}
	for _, n := range names {
		if !Owned(n) {
			continue
		}
		p.mu.Lock()
		known := p.byInst[n] != nil
		p.mu.Unlock()
		if !known {
			// A name with an underscore is never a Pod's, so the stand-in is
			// never found in the API.
			out = append(out, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "hypefs-dangling", Name: n,
				Annotations: map[string]string{danglingAnnotation: n}}})
		}
	}
	return out, nil
}

// adopt takes over the instances of Pods bound to this node that the
// provider does not track yet (after its own restart): Pods in a final
// phase too, whose VMs are kept until the Pod is deleted. Their config is
// checked when the pod controller hands over the Pod with its environment
// resolved (UpdatePod); until then nothing is written.
func (p *Provider) adopt(ctx context.Context) error {
	if p.opt.Pods == nil {
		return nil
	}
	names, err := p.tree.Instances()
	if err != nil {
		return nil // the tree is away: nothing to take over now
	}
	have := map[string]bool{}
	for _, n := range names {
		have[n] = true
	}
	pods, err := p.opt.Pods.List(labels.Everything())
	if err != nil {
		return fmt.Errorf("list pods: %w", err)
	}
	for _, pod := range pods {
		inst := InstanceName(pod.Namespace, pod.Name, pod.UID)
		if pod.Spec.NodeName != p.opt.NodeName || !have[inst] || Check(pod) != nil {
			continue
		}
		ps := &podState{key: podKey(pod.Namespace, pod.Name), pod: pod.DeepCopy(), inst: inst, made: true,
			started: time.Now(), logs: newLogMarks()}
		if t := pod.Status.StartTime; t != nil {
			ps.started = t.Time
		}
		seedFromStatus(ps, &pod.Status)
		p.mu.Lock()
		if p.pods[ps.key] != nil {
			p.mu.Unlock()
			continue
		}
		p.pods[ps.key], p.byInst[inst] = ps, ps
		p.mu.Unlock()
		p.log.Info("instance found", "pod", ps.key, "instance", inst)
		p.kick(ps)
	}
	return nil
}

// NotifyPods registers the callback that takes every status change.
func (p *Provider) NotifyPods(_ context.Context, cb func(*corev1.Pod)) {
	p.mu.Lock()
	p.notify = cb
	p.mu.Unlock()
}

// publish computes the Pod's status and hands it to the pod controller.
func (p *Provider) publish(ps *podState) {
	ps.pub.Lock()
	defer ps.pub.Unlock()
	p.mu.Lock()
	if ps.deleted {
		p.mu.Unlock()
		return
	}
	st := podStatus(statusInput{pod: ps.pod, instance: ps.inst, snap: ps.snap, have: ps.have, refused: ps.refused,
		failure: ps.failure, restarts: ps.restarts, lastTerm: ps.lastTerm, backoff: ps.backoff,
		terminal: ps.terminal, started: ps.started, hostIP: p.opt.NodeIP})
	keepTransitions(&st, &ps.status)
	ps.status = st
	pod := ps.pod.DeepCopy()
	pod.Status = *st.DeepCopy()
	cb := p.notify
	p.mu.Unlock()
	if cb != nil {
		cb(pod)
	}
}

// publishDeleted reports a deleted Pod's container as killed.
func (p *Provider) publishDeleted(ps *podState) {
	ps.pub.Lock()
	defer ps.pub.Unlock()
	p.mu.Lock()
	pod := ps.pod.DeepCopy()
	st := *ps.status.DeepCopy()
	cb := p.notify
	p.mu.Unlock()
	now := metav1.Now()
	for i := range st.ContainerStatuses {
		cs := &st.ContainerStatuses[i]
		if cs.State.Terminated == nil {
			t := &corev1.ContainerStateTerminated{ExitCode: exitKilled, Reason: "Killed",
				Message:    "the Pod was deleted: its VM was killed and its instance removed",
				FinishedAt: now, ContainerID: cs.ContainerID}
			if cs.State.Running != nil {
				t.StartedAt = cs.State.Running.StartedAt
			}
			cs.State = corev1.ContainerState{Terminated: t}
		}
		cs.Ready = false
	}
	if st.Phase != corev1.PodSucceeded {
		st.Phase = corev1.PodFailed
	}
	for i := range st.Conditions {
		if st.Conditions[i].Type == corev1.PodReady || st.Conditions[i].Type == corev1.ContainersReady {
			st.Conditions[i].Status = corev1.ConditionFalse
			st.Conditions[i].LastTransitionTime = now
		}
	}
	pod.Status = st
	if cb != nil {
		cb(pod)
	}
}

// keepTransitions keeps each condition's transition time while its
// status does not change.
func keepTransitions(st, prev *corev1.PodStatus) {
	now := metav1.Now()
	for i := range st.Conditions {
		c := &st.Conditions[i]
		c.LastTransitionTime = now
		for _, o := range prev.Conditions {
			if o.Type == c.Type && o.Status == c.Status {
				c.LastTransitionTime = o.LastTransitionTime
			}
		}
	}
}

// SetPods gives the provider the lister of the Pods bound to its node
// (made with the node, after the provider).
func (p *Provider) SetPods(l corev1listers.PodLister) {
	p.mu.Lock()
	p.opt.Pods = l
	p.mu.Unlock()
}
