package provider

import (
	"errors"
	"strconv"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// Restart back-off, the kubelet's: the first restart at once, then 10 s,
// doubling up to 5 minutes; a run of 10 minutes or more starts over.
const (
	backoffFirst = 10 * time.Second
	backoffMax   = 5 * time.Minute
	backoffReset = 10 * time.Minute
	// retryMax bounds the wait between attempts to make an instance when
	// the tree refuses for a passing reason (it is away, a pull failed).
	retryMax = 30 * time.Second
)

// create makes the Pod's instance and writes its config, or takes over
// the instance already there. Passing failures (the tree is away, an
// image pull fails) are retried with back-off and shown on the Pod's
// status meanwhile; a config the daemon refuses fails the Pod.
func (p *Provider) create(ps *podState) {
	wait := time.Second
	for {
		ps.op.Lock()
		if p.isDeleted(ps) {
			ps.op.Unlock()
			return
		}
		err := p.ensure(ps)
		ps.op.Unlock()
		p.mu.Lock()
		ps.creating = false
		ps.failure = ""
		if err != nil {
			var r *Refusal
			if errors.As(err, &r) {
				ps.refused = r
			} else {
				ps.failure = err.Error()
				ps.creating = true
			}
		}
		p.mu.Unlock()
		if err == nil {
			p.kick(ps)
			return
		}
		p.log.Warn("make instance", "pod", ps.key, "instance", ps.inst, "err", err)
		p.publish(ps)
		if ps.refused != nil || !p.sleep(wait) {
			return
		}
		wait = min(2*wait, retryMax)
	}
}

func (p *Provider) isDeleted(ps *podState) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return ps.deleted
}

// sleep waits d unless the provider stops first.
func (p *Provider) sleep(d time.Duration) bool {
	select {
	case <-p.ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

// ensure gets the Pod's instance to exist with its config. Called with
// ps.op held.
func (p *Provider) ensure(ps *podState) error {
	p.mu.Lock()
	inst, cfg, pull := ps.inst, ps.cfg, ps.pod.Spec.Containers[0].ImagePullPolicy == corev1.PullAlways
	if !ps.cfgKnown { // taken over at start and never handed over since
		cfg = ConfigFor(ps.pod)
	}
	p.mu.Unlock()
	exists, err := p.tree.Exists(inst)
	if err != nil {
		return err
	}
	if exists {
		have, ok, err := p.tree.Config(inst)
		if err != nil {
			return err
		}
		if ok && have.Same(cfg) {
			p.log.Info("instance taken over", "pod", ps.key, "instance", inst)
			p.markMade(ps)
			return nil
		}
		if ok {
			return p.reconfigure(ps, inst, cfg)
		}
	}
	if pull {
		if err := p.tree.Pull(cfg.Image); err != nil {
			return err
		}
	}
	if !exists {
		if err := p.tree.Create(inst); err != nil && !errors.Is(err, syscall.EEXIST) {
			return err
		}
	}
	if err := p.tree.Configure(inst, cfg.JSON()); err != nil {
		return p.configRefused(inst, err)
	}
	p.log.Info("instance made", "pod", ps.key, "instance", inst, "image", cfg.Image)
	p.markMade(ps)
	return nil
}

func (p *Provider) markMade(ps *podState) {
	p.mu.Lock()
	ps.made = true
	p.mu.Unlock()
}

// configRefused turns a config the daemon refused (EINVAL, EFBIG: the
// same write would fail again) into a Refusal, removing the instance so
// that nothing is left half made. Other errors pass.
func (p *Provider) configRefused(inst string, err error) error {
	if !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.EFBIG) {
		return err
	}
	p.tree.Remove(inst)
	var te *TreeError
	msg := err.Error()
	if errors.As(err, &te) && te.Sentence != "" {
		msg = te.Sentence
	}
	return &Refusal{Message: "refused by hypefs: " + msg}
}

// reconfigure gives an existing instance a new config: the VM is killed,
// the config replaced and the instance started again.
func (p *Provider) reconfigure(ps *podState, inst string, cfg Config) error {
	if err := p.tree.Ctl(inst, "kill"); err != nil {
		return err
	}
	if err := p.tree.Configure(inst, cfg.JSON()); err != nil {
		return p.configRefused(inst, err)
	}
	if err := p.tree.Ctl(inst, "start"); err != nil {
		return err
	}
	p.log.Info("instance reconfigured", "pod", ps.key, "instance", inst)
	p.markMade(ps)
	return nil
}

// replace applies a changed Pod to its running instance: a restart of the
// container, counted as one.
func (p *Provider) replace(ps *podState) {
	ps.op.Lock()
	if p.isDeleted(ps) {
		ps.op.Unlock()
		return
	}
	p.mu.Lock()
	inst, cfg := ps.inst, ps.cfg
	p.mu.Unlock()
	snap, err := p.tree.Snapshot(inst)
	if err == nil {
		err = p.reconfigure(ps, inst, cfg)
	}
	ps.op.Unlock()
	p.mu.Lock()
	if err == nil {
		ps.restarts++
		ps.lastTerm = terminated(snap, inst)
		ps.lastTerm.ExitCode, ps.lastTerm.Reason = exitKilled, "Killed"
		ps.lastTerm.Message = "the Pod changed: the VM was replaced"
		ps.terminal = false
		ps.failure = ""
	} else {
		ps.failure = err.Error()
	}
	p.mu.Unlock()
	if err != nil {
		p.log.Warn("replace instance", "pod", ps.key, "err", err)
	}
	p.kick(ps)
}

// refresher coalesces refreshes of one Pod: one runs at a time, and a
// request during a run makes one more run.
type refresher struct {
	running, again bool
}

// kick rereads the Pod's instance, acts on it (restart policy) and
// publishes its status, soon and in order.
func (p *Provider) kick(ps *podState) {
	p.mu.Lock()
	if ps.refresh.running {
		ps.refresh.again = true
		p.mu.Unlock()
		return
	}
	ps.refresh.running = true
	p.mu.Unlock()
	go func() {
		for {
			p.refreshOnce(ps)
			p.mu.Lock()
			if !ps.refresh.again {
				ps.refresh.running = false
				p.mu.Unlock()
				return
			}
			ps.refresh.again = false
			p.mu.Unlock()
		}
	}()
}

// refreshOnce reads the instance and applies what it says.
func (p *Provider) refreshOnce(ps *podState) {
	p.mu.Lock()
	inst, skip := ps.inst, ps.refused != nil || ps.deleted
	p.mu.Unlock()
	if skip {
		p.publish(ps)
		return
	}
	snap, err := p.tree.Snapshot(inst)
	switch {
	case errors.Is(err, ErrGone):
		p.gone(ps)
	case err != nil:
		return // the tree is away; the resync after it comes back rereads
	default:
		p.mu.Lock()
		ps.snap, ps.have = snap, true
		p.decide(ps)
		p.mu.Unlock()
		if snap.State == stBooting || snap.State == stRunning {
			p.followConsole(ps)
		}
	}
	p.publish(ps)
}

// gone handles an instance that disappeared: removed behind the
// provider's back (or not made yet). A made instance that vanished counts
// as a killed run: the restart policy decides whether it is made again.
func (p *Provider) gone(ps *podState) {
	p.mu.Lock()
	defer p.mu.Unlock()
	ps.have = false
	if !ps.made || ps.creating || ps.deleted || ps.terminal {
		return
	}
	ps.made = false
	t := terminated(Snapshot{State: stStopped, Changed: time.Now(), Info: ps.snap.Info}, ps.inst)
	t.Reason, t.Message = "Removed", "the instance was removed from the hypefs tree"
	if ps.pod.Spec.RestartPolicy == corev1.RestartPolicyNever {
		ps.terminal = true
		ps.snap = Snapshot{State: stStopped, Changed: t.FinishedAt.Time, Info: ps.snap.Info}
		ps.have = true
		return
	}
	ps.restarts++
	ps.lastTerm = t
	ps.creating = true
	go p.create(ps)
}

// runKey names one ended run: its end state and when it was recorded.
func runKey(s Snapshot) string {
	return s.State + "@" + strconv.FormatInt(s.Changed.UnixNano(), 10)
}

// decide applies the restart policy to a run that ended, once per run:
// the Pod is done, or a restart is scheduled after the back-off. Called
// with p.mu held.
func (p *Provider) decide(ps *podState) {
	s := ps.snap
	if !ended(s.State) || ps.terminal || ps.deleted || ps.timer != nil || ps.handled == runKey(s) {
		return
	}
	ps.handled = runKey(s)
	t := terminated(s, ps.inst)
	if !restartWanted(ps.pod.Spec.RestartPolicy, t) {
		ps.terminal = true
		return
	}
	wait := ps.nextWait
	if !t.StartedAt.IsZero() && t.FinishedAt.Sub(t.StartedAt.Time) >= backoffReset {
		wait = 0
	}
	ps.nextWait = min(max(2*wait, backoffFirst), backoffMax)
	ps.backoff = wait
	ps.timer = time.AfterFunc(wait, func() { p.restart(ps, t) })
}

// restart starts the instance again after a run ended.
func (p *Provider) restart(ps *podState, t *corev1.ContainerStateTerminated) {
	ps.op.Lock()
	p.mu.Lock()
	ps.timer = nil
	if ps.deleted {
		p.mu.Unlock()
		ps.op.Unlock()
		return
	}
	ps.restarts++
	ps.lastTerm = t
	ps.backoff = 0
	inst, n := ps.inst, ps.restarts
	p.mu.Unlock()
	err := p.tree.Ctl(inst, "start")
	ps.op.Unlock()
	p.mu.Lock()
	ps.failure = ""
	if err != nil && !errors.Is(err, syscall.EBUSY) {
		ps.failure = err.Error()
		ps.handled = "" // try again at the next look
	}
	p.mu.Unlock()
	if err != nil {
		p.log.Warn("restart", "pod", ps.key, "instance", inst, "err", err)
	} else {
		p.log.Info("restarted", "pod", ps.key, "instance", inst, "restarts", n)
	}
	p.kick(ps)
}
