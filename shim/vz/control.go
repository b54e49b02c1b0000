package vz

import (
	"context"
	"fmt"
	"time"

	"hypefs/shim/engine"
)

// Pause implements engine.Machine.
func (m *Machine) Pause(ctx context.Context) error {
	return m.transition(ctx, "pause", StateRunning, StatePaused, func(v vmHandle) error { return v.Pause() })
}

// Resume implements engine.Machine.
func (m *Machine) Resume(ctx context.Context) error {
	return m.transition(ctx, "resume", StatePaused, StateRunning, func(v vmHandle) error { return v.Resume() })
}

func (m *Machine) transition(ctx context.Context, what string, from, to State, op func(vmHandle) error) error {
	m.ops.Lock()
	defer m.ops.Unlock()
	r, st, err := m.current()
	if err != nil {
		return err
	}
	if st != from {
		return fmt.Errorf("%s vm in state %s: %w", what, st, engine.ErrWrongState)
	}
	if err := callVM(ctx, func() error { return op(r.vm) }); err != nil {
		return fmt.Errorf("%s vm: %w", what, err)
	}
	m.setState(r, to)
	return nil
}

// PowerButton implements engine.Machine: the framework's request-stop.
func (m *Machine) PowerButton(ctx context.Context) error {
	m.ops.Lock()
	defer m.ops.Unlock()
	r, st, err := m.current()
	if err != nil {
		return err
	}
	if st != StateRunning {
		return fmt.Errorf("power button in state %s: %w", st, engine.ErrWrongState)
	}
	prev := m.setCause(causePowerButton)
	if err := callVM(ctx, r.vm.RequestStop); err != nil {
		m.setCause(prev)
		return fmt.Errorf("power button: %w", err)
	}
	return nil
}

func (m *Machine) setCause(c stopCause) stopCause {
	m.mu.Lock()
	defer m.mu.Unlock()
	prev := m.cause
	m.cause = c
	return prev
}

// Stop implements engine.Machine. It returns once the VM has ended.
func (m *Machine) Stop(ctx context.Context) error {
	m.ops.Lock()
	defer m.ops.Unlock()
	r, _, err := m.current()
	if err != nil {
		return err
	}
	prev := m.setCause(causeStop)
	if err := callVM(ctx, r.vm.Stop); err != nil {
		m.setCause(prev)
		return fmt.Errorf("stop vm: %w", err)
	}
	select {
	case <-m.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stop vm: waiting for the framework to report it stopped: %w", ctx.Err())
	}
}

// Reboot implements engine.Machine. The framework cannot reset a VM, so
// the VM is stopped and a fresh one with the same configuration and
// machine identifier boots on the same console; the shim's pid stays.
func (m *Machine) Reboot(ctx context.Context) error {
	m.ops.Lock()
	defer m.ops.Unlock()
	old, _, err := m.current()
	if err != nil {
		return err
	}
	m.mu.Lock()
	m.rebooting = true
	m.mu.Unlock()
	if err := callVM(ctx, old.vm.Stop); err != nil {
		m.abortReboot(old)
		return fmt.Errorf("reboot: stop vm: %w", err)
	}
	select {
	case <-old.ended:
	case <-ctx.Done():
		m.abortReboot(old)
		return fmt.Errorf("reboot: waiting for the vm to stop: %w", ctx.Err())
	}
	m.logf("reboot: old vm stopped, booting a fresh one")
	vm, err := m.hv.newVM(m.cfg, m.consoleFiles())
	if err != nil {
		err = fmt.Errorf("reboot: vm configuration: %w", err)
		m.finish(crashExit(err))
		return err
	}
	r := newRun(vm)
	m.mu.Lock()
	m.cur, m.state, m.cause = r, StateStarting, causeNone
	m.mu.Unlock()
	go m.watch(r)
	if err := bootVM(ctx, vm, vm.Start); err != nil {
		close(r.quit)
		err = fmt.Errorf("reboot: start vm: %w", err)
		m.finish(crashExit(err))
		return err
	}
	m.mu.Lock()
	m.rebooting = false
	m.mu.Unlock()
	m.arm(r, StateRunning)
	return nil
}

// abortReboot undoes the rebooting mark; if the old VM ended meanwhile,
// the machine ends with it.
func (m *Machine) abortReboot(old *run) {
	m.mu.Lock()
	m.rebooting = false
	ended, term, cause := old.hasEnded && m.cur == old, old.terminal, m.cause
	m.mu.Unlock()
	if ended {
		m.finish(exitFor(term, cause, time.Now()))
	}
}

func crashExit(err error) engine.Exit {
	return engine.Exit{Time: time.Now(), Code: 1, Reason: err.Error(), Crashed: true}
}

// Snapshot implements engine.Machine: vz refuses it with an error
// wrapping engine.ErrUnsupported (see errNoSnapshots).
func (m *Machine) Snapshot(ctx context.Context, dir string) error {
	if _, _, err := m.current(); err != nil {
		return err
	}
	return fmt.Errorf("snapshot: %w", errNoSnapshots)
}

// SnapshotSupported tells the shim, before it checks the VM's state, that
// vz cannot snapshot at all.
func (m *Machine) SnapshotSupported() error { return fmt.Errorf("snapshot: %w", errNoSnapshots) }
