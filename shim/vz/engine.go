package vz

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"

	"hypefs/shim/engine"
)

// Engine boots VMs with Virtualization.framework. New (darwin only)
// returns one bound to the real framework.
type Engine struct {
	hv hypervisor
}

var (
	_ engine.Engine  = (*Engine)(nil)
	_ engine.Machine = (*Machine)(nil)
	_ VsockDialer    = (*Machine)(nil)
)

// Name implements engine.Engine.
func (e *Engine) Name() string { return "vz" }

// Boot implements engine.Engine. With spec.RestoreFrom it restores that
// snapshot into a fresh VM and returns it paused; otherwise it boots the
// kernel and returns once the framework reports the VM running.
//
// The machine identifier comes from spec.MachineID when the shim has one
// persisted, from the snapshot when restoring, and is created otherwise;
// Machine.MachineID reports it so the shim can persist it.
func (e *Engine) Boot(ctx context.Context, spec engine.Spec, console io.Writer) (engine.Machine, error) {
	if err := e.hv.supported(); err != nil {
		return nil, err
	}
	if console == nil {
		console = io.Discard
	}
	cfg, err := configFromSpec(spec, e.hv.limits())
	if err != nil {
		return nil, fmt.Errorf("vm configuration: %w", err)
	}
	statePath := ""
	switch {
	case spec.RestoreFrom != "":
		saved, err := loadSnapshot(spec.RestoreFrom)
		if err != nil {
			return nil, fmt.Errorf("restore: %w", err)
		}
		restored, err := restoreConfig(saved, cfg, spec.MachineID)
		if err != nil {
			return nil, fmt.Errorf("restore: %w", err)
		}
		// The boot loader plays no part in a restore; the current kernel
		// paths are used so a pruned kernel cache cannot block it.
		restored.Kernel, restored.Initrd, restored.Cmdline = cfg.Kernel, cfg.Initrd, cfg.Cmdline
		cfg = restored
		statePath = filepath.Join(spec.RestoreFrom, SnapshotStateFile)
	case len(spec.MachineID) > 0:
		cfg.MachineID = bytes.Clone(spec.MachineID)
	default:
		id, err := e.hv.newMachineID()
		switch {
		case err == nil:
			cfg.MachineID = id
		case errors.Is(err, engine.ErrUnsupported):
			// macOS 12: the VM boots without one; Snapshot says why it cannot.
		default:
			return nil, fmt.Errorf("machine identifier: %w", err)
		}
	}
	m, err := newMachine(e.hv, cfg, console, spec.VMMLog)
	if err != nil {
		return nil, err
	}
	if err := m.start(ctx, statePath); err != nil {
		m.abandon()
		return nil, err
	}
	return m, nil
}
