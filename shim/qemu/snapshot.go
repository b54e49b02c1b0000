//go:build linux

package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"hypefs/shim/engine"
)

// snapshotConfig is written next to the state: what the state needs to
// be restored (the same machine, disks and kernel).
type snapshotConfig struct {
	Engine  string    `json:"engine"`
	QEMU    string    `json:"qemu_version"`
	Time    time.Time `json:"time"`
	Name    string    `json:"name"`
	Kernel  string    `json:"kernel"`
	Initrd  string    `json:"initramfs"`
	Cmdline string    `json:"cmdline"`
	CPUs    int       `json:"cpus"`
	Memory  int       `json:"memory_mib"`
	Accel   string    `json:"accel"`
	Disks   any       `json:"disks"`
	NICs    any       `json:"nics"`
	Args    []string  `json:"args"`
}

// Snapshot implements engine.Machine. The VM must be paused. The state is
// saved with a migration to a descriptor: the engine opens
// DIR/state.qemu and hands it to QEMU over QMP (getfd), since QEMU, in
// its sandbox, may neither open files nor start programs. Afterwards QEMU
// reports "postmigrate"; Resume continues the guest.
func (m *Machine) Snapshot(ctx context.Context, dir string) error {
	m.ctl.Lock()
	defer m.ctl.Unlock()
	st, err := m.Status(ctx)
	if err != nil {
		return fmt.Errorf("qemu snapshot: %w", err)
	}
	if st != "paused" && st != "postmigrate" {
		return fmt.Errorf("qemu snapshot: vm is %s, not paused: %w", st, engine.ErrWrongState)
	}
	// The default migration bandwidth limit (128 MiB/s) only slows a
	// local file down.
	params := map[string]any{"max-bandwidth": int64(1) << 40}
	if err := m.exec(ctx, "migrate-set-parameters", params, nil); err != nil {
		return fmt.Errorf("qemu snapshot: %w", err)
	}
	state := filepath.Join(dir, stateFile)
	f, err := os.OpenFile(state, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("qemu snapshot: %w", err)
	}
	defer f.Close()
	const fdName = "snapshot"
	if err := m.qmp.ExecuteFile(ctx, "getfd", map[string]string{"fdname": fdName}, nil, f); err != nil {
		return fmt.Errorf("qemu snapshot: hand over the state file: %w", err)
	}
	if err := m.exec(ctx, "migrate", map[string]string{"uri": "fd:" + fdName}, nil); err != nil {
		m.exec(context.WithoutCancel(ctx), "closefd", map[string]string{"fdname": fdName}, nil)
		return fmt.Errorf("qemu snapshot: %w", err)
	}
	if err := m.waitMigration(ctx); err != nil {
		return fmt.Errorf("qemu snapshot: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("qemu snapshot: %w", err)
	}
	if fi, err := os.Stat(state); err != nil || fi.Size() == 0 {
		return fmt.Errorf("qemu snapshot: state file missing or empty")
	}
	v := m.qmp.Version()
	cfg := snapshotConfig{
		Engine: "qemu", QEMU: fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Micro),
		Time: time.Now().UTC(), Name: m.spec.Name,
		Kernel: m.spec.Kernel, Initrd: m.spec.Initramfs, Cmdline: m.spec.Cmdline,
		CPUs: m.spec.CPUs, Memory: m.spec.MemoryMiB, Accel: m.spec.Accel,
		Disks: m.spec.Disks, NICs: m.spec.NICs, Args: Args(m.spec),
	}
	b, _ := json.MarshalIndent(cfg, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, configFile), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("qemu snapshot: %w", err)
	}
	return nil
}

// waitMigration polls query-migrate until the migration has finished.
func (m *Machine) waitMigration(ctx context.Context) error {
	for {
		var q struct {
			Status    string `json:"status"`
			ErrorDesc string `json:"error-desc"`
		}
		if err := m.exec(ctx, "query-migrate", nil, &q); err != nil {
			return err
		}
		switch q.Status {
		case "completed":
			return nil
		case "failed", "cancelled":
			if q.ErrorDesc == "" {
				q.ErrorDesc = "migration " + q.Status
			}
			return errors.New(q.ErrorDesc)
		}
		select {
		case <-time.After(10 * time.Millisecond):
		case <-ctx.Done():
			m.exec(context.WithoutCancel(ctx), "migrate_cancel", nil, nil)
			return ctx.Err()
		}
	}
}
