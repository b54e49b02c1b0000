package vz

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

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

// errNoSnapshots answers vm.snapshot and a restore on vz. The framework
// restores Linux guests unreliably (only with the machine identifier they
// were saved with, and not with fresh console file handles), and its saved
// state is encrypted to the Mac that wrote it; docs/macos.md has the
// decision.
var errNoSnapshots = fmt.Errorf("vz does not save or restore VMs: Virtualization.framework restores Linux guests unreliably, and a saved state opens only on the Mac that wrote it (pause the VM instead): %w", engine.ErrUnsupported)

// Name implements engine.Engine.
func (e *Engine) Name() string { return "vz" }

// Boot implements engine.Engine: it boots the kernel and returns once the
// framework reports the VM running. A restore (spec.RestoreFrom) is
// refused with an error wrapping engine.ErrUnsupported.
//
// The machine identifier comes from spec.MachineID when the shim has one
// persisted and the framework accepts it, and is created otherwise;
// Machine.MachineID reports it so the shim can persist it.
func (e *Engine) Boot(ctx context.Context, spec engine.Spec, console io.Writer) (engine.Machine, error) {
	if spec.RestoreFrom != "" {
		return nil, fmt.Errorf("restore: %w", errNoSnapshots)
	}
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
	var notes []string
	if len(spec.MachineID) > 0 {
		if err := e.hv.checkMachineID(spec.MachineID); err != nil {
			notes = append(notes, fmt.Sprintf("the instance's machine identifier is unusable (%v); booting with a new one", err))
		} else {
			cfg.MachineID = bytes.Clone(spec.MachineID)
		}
	}
	if cfg.MachineID == nil {
		id, err := e.hv.newMachineID()
		switch {
		case err == nil:
			cfg.MachineID = id
		case errors.Is(err, engine.ErrUnsupported):
			// macOS 12: the VM boots without one.
		default:
			return nil, fmt.Errorf("machine identifier: %w", err)
		}
	}
	m, err := newMachine(e.hv, cfg, console, spec.VMMLog, spec.LogMax)
	if err != nil {
		return nil, err
	}
	for _, n := range notes {
		m.logf("%s", n)
	}
	if err := m.start(ctx); err != nil {
		m.abandon()
		return nil, err
	}
	return m, nil
}
