//go:build linux

package qemu

import (
	"context"
	"errors"
	"fmt"
	"time"

	"hypefs/shim/engine"
	"hypefs/shim/qmp"
)

// quitGrace is how long Stop lets QEMU quit on its own before it kills
// the process group.
const quitGrace = 2 * time.Second

func isClosed(err error) bool { return errors.Is(err, qmp.ErrClosed) }

// Stop implements engine.Machine: QMP quit, then SIGKILL of the process
// group if QEMU has not ended within quitGrace. It returns once the exit
// record is written (or ctx ends).
func (m *Machine) Stop(ctx context.Context) error {
	if m.ended() {
		return engine.ErrNotRunning
	}
	m.mu.Lock()
	m.stopping = true
	m.mu.Unlock()

	qctx, cancel := context.WithTimeout(ctx, quitGrace)
	defer cancel()
	// QEMU may close the socket before its reply reaches us: ignore the
	// outcome and judge by the process.
	m.qmp.Execute(qctx, "quit", nil, nil)
	select {
	case <-m.exited:
	case <-qctx.Done():
		m.kill()
	}
	select {
	case <-m.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("qemu stop: %w", ctx.Err())
	}
}

// Reboot implements engine.Machine with an in-place reset: QEMU runs with
// -no-reboot so that a guest's own reset (or panic) ends the VM, and a
// reset requested under that policy would end it too. The policy is
// switched to "reset" just for this request (QMP set-action) and back:
// QEMU decides what a reset request means when the request is made, so the
// guest resets in the same process (PID unchanged, same console).
func (m *Machine) Reboot(ctx context.Context) error {
	m.ctl.Lock()
	defer m.ctl.Unlock()
	if err := m.exec(ctx, "set-action", map[string]string{"reboot": "reset"}, nil); err != nil {
		return fmt.Errorf("qemu reboot: %w", err)
	}
	err := m.exec(ctx, "system_reset", nil, nil)
	// Restore the policy even if ctx has ended: a later guest reset
	// must still end the VM.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if rerr := m.exec(rctx, "set-action", map[string]string{"reboot": "shutdown"}, nil); err == nil && rerr != nil {
		err = rerr
	}
	if err != nil {
		return fmt.Errorf("qemu reboot: %w", err)
	}
	return nil
}

// waitIncoming waits until a restoring QEMU has loaded the saved state.
func (m *Machine) waitIncoming(ctx context.Context) error {
	for {
		st, err := m.Status(ctx)
		if err != nil {
			return fmt.Errorf("qemu restore: %w", err)
		}
		if st != "inmigrate" {
			if st != "paused" && st != "running" {
				return fmt.Errorf("qemu restore: vm is %s after loading the state", st)
			}
			return nil
		}
		select {
		case <-time.After(20 * time.Millisecond):
		case <-ctx.Done():
			return fmt.Errorf("qemu restore: %w", ctx.Err())
		}
	}
}
