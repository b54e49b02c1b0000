// Package shim is the per-VM supervisor: it owns one hypervisor engine,
// the VM's serial console (appended to the instance's log and fanned out
// to live readers), the exit record, and an HTTP API on a Unix socket that
// follows Cloud Hypervisor's (package api).
//
// A shim is started detached by the daemon and outlives it. It writes its
// record (Config.RecordPath) atomically before it reports ready, and it is
// the only waiter on the hypervisor, so it alone can record how the VM
// ended (Config.ExitPath). When the VM has ended it writes the exit record,
// closes its sockets and exits.
//
// The shim never imports the filesystem packages.
package shim

import (
	"encoding/json"
	"fmt"
	"os"
	"time"

	"hypefs/shim/engine"
)

// ReadyMarker is the console line with which hypefs-init says the guest is up.
const ReadyMarker = "hypefs: guest ready"

// Config is what the daemon hands a shim (as a JSON file).
type Config struct {
	Engine        engine.Spec `json:"engine"`
	Hypervisor    string      `json:"hypervisor"`     // "qemu" or "vz"
	APISocket     string      `json:"api_socket"`     // HTTP API
	ConsoleSocket string      `json:"console_socket"` // live console: output from connect on; input typed into the guest
	VsockSocket   string      `json:"vsock_socket"`   // CONNECT-port proxy, where the engine has vsock
	LogPath       string      `json:"log_path"`       // the console log, appended to
	RecordPath    string      `json:"record_path"`    // Record, written before ready
	ExitPath      string      `json:"exit_path"`      // ExitRecord, written when the VM ends
	MachineIDPath string      `json:"machine_id_path,omitempty"`
}

// Record is what a shim says about itself once it is up.
type Record struct {
	APIVersion    int       `json:"api_version"`
	ShimPID       int       `json:"shim_pid"`
	HypervisorPID int       `json:"hypervisor_pid"`
	BootID        string    `json:"boot_id"`
	Started       time.Time `json:"started"`
	Hypervisor    string    `json:"hypervisor"`
	Accel         string    `json:"accel"`
}

// APIVersion is raised when the daemon/shim protocol changes incompatibly.
const APIVersion = 1

// ExitRecord is written when the VM has ended.
type ExitRecord struct {
	engine.Exit
	State   string    `json:"state"` // "stopped" or "crashed"
	ShimPID int       `json:"shim_pid"`
	Started time.Time `json:"started"`
	Detail  string    `json:"detail,omitempty"` // e.g. "did not shut down within 30s; killed"
	// GuestExit is the exit status of the guest's program, when its init
	// reported one (ExitMarker) before the VM ended.
	GuestExit *int `json:"guest_exit,omitempty"`
}

// LoadConfig reads a Config file.
func LoadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read shim config: %w", err)
	}
	var c Config
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("parse shim config %s: %w", path, err)
	}
	if c.APISocket == "" || c.ConsoleSocket == "" || c.LogPath == "" || c.RecordPath == "" || c.ExitPath == "" {
		return nil, fmt.Errorf("shim config %s: a socket or file path is missing", path)
	}
	return &c, nil
}
