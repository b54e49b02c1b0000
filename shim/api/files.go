package api

import (
	"encoding/json"
	"fmt"
	"os"
	"time"

	"hypefs/shim/engine"
)

// The daemon and a shim also speak through three files in the instance's
// directories: the daemon writes Config before it starts the shim, the
// shim writes Record once the VM runs and ExitRecord when it has ended.

// APIVersion is raised when the daemon/shim protocol (these files, the
// hypefs.* endpoints) changes incompatibly. A daemon follows only shims
// whose Record carries its own version.
const APIVersion = 1

// Config is what the daemon hands a shim (as a JSON file).
type Config struct {
	Engine        engine.Spec `json:"engine"`
	APISocket     string      `json:"api_socket"`     // HTTP API
	ConsoleSocket string      `json:"console_socket"` // live console: output from connect on; input typed into the guest
	VsockSocket   string      `json:"vsock_socket"`   // CONNECT-port proxy, where the engine has vsock
	LogPath       string      `json:"log_path"`       // the console log, appended to
	RecordPath    string      `json:"record_path"`    // Record, written before ready
	ExitPath      string      `json:"exit_path"`      // ExitRecord, written when the VM ends
	MachineIDPath string      `json:"machine_id_path,omitempty"`
	// LogMax caps each log the shim writes (the console log, the
	// hypervisor's log, its own) in bytes; past it the oldest part is
	// dropped (internal/logcap). Zero: no cap.
	LogMax int64 `json:"log_max,omitempty"`
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

// ExitRecord is written when the VM has ended.
type ExitRecord struct {
	engine.Exit
	State   string    `json:"state"` // "stopped" or "crashed"
	ShimPID int       `json:"shim_pid"`
	Started time.Time `json:"started"`
	Detail  string    `json:"detail,omitempty"` // e.g. "did not shut down within 30s; killed"
	// GuestExit is the exit status of the guest's program, when its init
	// reported one before the VM ended.
	GuestExit *int `json:"guest_exit,omitempty"`
}

// LoadConfig reads a Config file.
func LoadConfig(path string) (*Config, error) {
	var c Config
	if err := readJSON(path, &c); err != nil {
		return nil, fmt.Errorf("shim config: %w", err)
	}
	if c.APISocket == "" || c.ConsoleSocket == "" || c.LogPath == "" || c.RecordPath == "" || c.ExitPath == "" {
		return nil, fmt.Errorf("shim config %s: a socket or file path is missing", path)
	}
	return &c, nil
}

// ReadRecord reads a shim's Record.
func ReadRecord(path string) (*Record, error) {
	var r Record
	if err := readJSON(path, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// ReadExitRecord reads a shim's ExitRecord.
func ReadExitRecord(path string) (*ExitRecord, error) {
	var ex ExitRecord
	if err := readJSON(path, &ex); err != nil {
		return nil, err
	}
	return &ex, nil
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("parse %s: %w", path, err)
	}
	return nil
}
