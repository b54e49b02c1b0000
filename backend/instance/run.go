package instance

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"time"

	"hypefs/backend/layout"
	"hypefs/shim/api"
	"hypefs/shim/client"
	"hypefs/shim/engine"
)

// run is one shim's life as the daemon follows it. A live instance's
// state changes only to what its shim says: the follower applies the
// shim's events, and a command applies the state its action answered
// with (applyEffect); both go through apply, in the shim's Seq order, so
// concurrent commands and events cannot leave a state the VM is not in.
// Only settle ends a run, from the shim's exit record.
//
// seq, events and applied are guarded by the instance's mu.
type run struct {
	rec     *api.Record
	client  *client.Client
	cancel  context.CancelFunc
	settled chan struct{} // closed when the follower is done (settled or stopped)

	seq     uint64        // the shim's last state sequence number applied
	events  int           // events applied
	applied chan struct{} // closed and replaced whenever an event is applied
}

// attach starts following a live shim and returns once its current state
// is applied (or after 2 s). It returns nil when the instance is gone or
// the manager is closing.
func (i *Instance) attach(rec *api.Record) *run {
	m := i.m
	ctx, cancel := context.WithCancel(m.ctx)
	r := &run{rec: rec, client: client.New(m.lay.RunFile(i.name, layout.APISock)), cancel: cancel,
		settled: make(chan struct{}), applied: make(chan struct{})}
	i.mu.Lock()
	if i.deleted || m.ctx.Err() != nil {
		i.mu.Unlock()
		cancel()
		r.client.Close()
		return nil
	}
	if old := i.cur; old != nil {
		old.cancel()
	}
	i.cur = r
	i.mu.Unlock()
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		defer close(r.settled)
		defer cancel()
		i.follow(ctx, r)
	}()
	i.waitApplied(r, func() bool { return r.events > 0 }, 2*time.Second)
	return r
}

// waitApplied waits until cond (evaluated under i.mu) holds, the run is
// over, or timeout passes; it reports whether cond held.
func (i *Instance) waitApplied(r *run, cond func() bool, timeout time.Duration) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		i.mu.Lock()
		ok, wake := cond(), r.applied
		i.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-wake:
		case <-r.settled:
			return false
		case <-deadline.C:
			return false
		}
	}
}

// applyEffect applies what an action answered with, at once: the state
// shown after a successful `echo pause > ctl` is paused, whatever the
// event stream's delay. Seq keeps it in order with the events; the
// detail is the shim's own for that state (the event's), so an event line
// reads the same whichever arrives first; detail is used where the shim
// gave none.
func (i *Instance) applyEffect(r *run, eff client.Effect, detail string) {
	if eff.State == "" || eff.Seq == 0 {
		return
	}
	if eff.Detail != "" {
		detail = eff.Detail
	}
	i.apply(r, api.Event{Time: time.Now().UTC(), State: eff.State, Detail: detail, Seq: eff.Seq})
}

// follow applies the shim's state changes until the VM ends or the shim
// disappears, then settles the final state from the exit record.
func (i *Instance) follow(ctx context.Context, r *run) {
	for {
		err := r.client.Events(ctx, func(ev api.Event) { i.apply(r, ev) })
		if ctx.Err() != nil {
			return
		}
		// The stream ended. If the shim still answers (a broken
		// connection, not a dead shim), follow it again.
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, perr := r.client.Ping(pctx)
		cancel()
		if perr == nil {
			if err != nil {
				time.Sleep(100 * time.Millisecond)
			}
			continue
		}
		if ctx.Err() != nil {
			return
		}
		i.settle(r)
		return
	}
}

// apply takes one event of the current run.
func (i *Instance) apply(r *run, ev api.Event) {
	i.mu.Lock()
	if i.cur != r || i.deleted {
		i.mu.Unlock()
		return
	}
	if r.events > 0 && ev.Seq <= r.seq {
		// Already applied (from an action's answer): events are ordered
		// by Seq, so an older one never overwrites a newer state.
		i.mu.Unlock()
		return
	}
	r.seq = ev.Seq
	r.events++
	close(r.applied)
	r.applied = make(chan struct{})
	addr := i.guestAddressLocked(ev.Address)
	changed := false
	switch ev.State {
	case api.Stopped, api.Crashed:
		// settled from the exit record when the stream ends
	default:
		if i.rec.State != ev.State {
			i.rec.State = ev.State
			i.rec.Changed = time.Now().UTC()
			changed = true
		}
		if ev.Error != "" {
			i.rec.Error = ev.Error
		}
		if changed || ev.Error != "" {
			i.saveLocked()
		}
	}
	i.mu.Unlock()
	if changed {
		i.m.changed(i.name, ev.State, ev.Detail)
	}
	if addr.IsValid() {
		for _, p := range i.m.parts {
			if w, ok := p.(AddressWatcher); ok {
				w.GuestAddress(i.name, addr)
			}
		}
	}
}

// guestAddressLocked keeps the address the guest announced (shown as
// info's ip where the host assigned none) and returns it when it is new.
// Caller holds i.mu.
func (i *Instance) guestAddressLocked(s string) netip.Prefix {
	a, err := netip.ParsePrefix(s)
	if err != nil || i.rec.Facts[factGuestIP] == a.Addr().String() {
		return netip.Prefix{}
	}
	if i.rec.Facts == nil {
		i.rec.Facts = map[string]string{}
	}
	i.rec.Facts[factGuestIP] = a.Addr().String()
	i.saveLocked()
	return a
}

// factGuestIP is the fact under which the guest's own address is kept.
const factGuestIP = "guest_ip"

// settle records how a run's VM ended: from the shim's exit record, or,
// when there is none, as a crash of the shim itself. It then cleans up
// every trace of the run under the run directory. A run that is no
// longer the instance's current one changes nothing.
func (i *Instance) settle(r *run) {
	rec := r.rec
	i.mu.Lock()
	current := i.cur == r && !i.deleted
	i.mu.Unlock()
	if !current {
		return
	}
	var ex api.ExitRecord
	got, err := api.ReadExitRecord(i.m.lay.InstanceFile(i.name, layout.ExitFile))
	if err == nil {
		ex = *got
	}
	state, msg := "", ""
	if err == nil && ex.ShimPID == rec.ShimPID {
		state = ex.State
		switch {
		case ex.Detail != "":
			msg = ex.Detail
		case state == Crashed:
			msg = "the VM crashed: " + ex.Reason
		}
	} else {
		state = Crashed
		msg = fmt.Sprintf("the shim (pid %d) ended unexpectedly; the VM is gone", rec.ShimPID)
		ex = api.ExitRecord{State: Crashed, ShimPID: rec.ShimPID, Started: rec.Started,
			Exit: engine.Exit{Time: time.Now().UTC(), Code: -1, Reason: "shim died", Crashed: true}}
		killLeftover(rec.HypervisorPID, i.m.lay.RunDir(i.name))
	}
	i.mu.Lock()
	if i.cur != r || i.deleted {
		i.mu.Unlock()
		return
	}
	i.cur = nil
	r.client.Close()
	i.rec.Exit = &ex
	if msg != "" {
		i.setErrorLocked("vm", msg)
	}
	i.mu.Unlock()
	os.RemoveAll(i.m.lay.RunDir(i.name))
	i.partsEnded()
	detail := ex.Reason
	if msg != "" {
		detail = msg
	}
	i.setState(state, detail)
}
