// Package api holds the wire types of the shim's HTTP API.
//
// Paths, status codes and bodies follow Cloud Hypervisor's API (its
// OpenAPI spec, vmm/src/api/openapi/cloud-hypervisor.yaml), so its clients
// work against a hypefs shim unchanged. hypefs' own extensions live under
// the same prefix and are named hypefs.*.
package api

import (
	"time"

	"hypefs/shim/engine"
)

// Prefix is the path prefix of every endpoint.
const Prefix = "/api/v1/"

// Endpoints, as Cloud Hypervisor names them.
const (
	PathPing        = Prefix + "vmm.ping"        // GET
	PathVMMShutdown = Prefix + "vmm.shutdown"    // PUT: end the VM (if any) and the shim
	PathInfo        = Prefix + "vm.info"         // GET
	PathPause       = Prefix + "vm.pause"        // PUT
	PathResume      = Prefix + "vm.resume"       // PUT
	PathShutdown    = Prefix + "vm.shutdown"     // PUT: end the VM now
	PathPowerButton = Prefix + "vm.power-button" // PUT
	PathReboot      = Prefix + "vm.reboot"       // PUT
	PathSnapshot    = Prefix + "vm.snapshot"     // PUT VmSnapshotConfig

	// Extensions.
	PathStatus       = Prefix + "hypefs.status"        // GET Status
	PathEvents       = Prefix + "hypefs.events"        // GET: a stream of Event JSON lines
	PathGracefulStop = Prefix + "hypefs.graceful-stop" // PUT GracefulStop
)

// Cloud Hypervisor's spelling of VM states.
const (
	StateRunning  = "Running"
	StatePaused   = "Paused"
	StateShutdown = "Shutdown"
)

// VmmPingResponse is Cloud Hypervisor's ping answer.
type VmmPingResponse struct {
	BuildVersion string   `json:"build_version,omitempty"`
	Version      string   `json:"version"`
	PID          int      `json:"pid,omitempty"`
	Features     []string `json:"features,omitempty"`
}

// VmInfo is Cloud Hypervisor's vm.info answer.
type VmInfo struct {
	Config           VmConfig `json:"config"`
	State            string   `json:"state"`
	MemoryActualSize int64    `json:"memory_actual_size,omitempty"`
}

// VmConfig is the subset of Cloud Hypervisor's VmConfig a shim fills in.
type VmConfig struct {
	CPUs    CpusConfig    `json:"cpus"`
	Memory  MemoryConfig  `json:"memory"`
	Payload PayloadConfig `json:"payload"`
	Disks   []DiskConfig  `json:"disks,omitempty"`
	Net     []NetConfig   `json:"net,omitempty"`
	Serial  ConsoleConfig `json:"serial"`
	Console ConsoleConfig `json:"console"`
	Vsock   *VsockConfig  `json:"vsock,omitempty"`
	Rng     *RngConfig    `json:"rng,omitempty"`
}

type CpusConfig struct {
	BootVcpus int `json:"boot_vcpus"`
	MaxVcpus  int `json:"max_vcpus"`
}

type MemoryConfig struct {
	Size int64 `json:"size"` // bytes
}

type PayloadConfig struct {
	Kernel    string `json:"kernel,omitempty"`
	Initramfs string `json:"initramfs,omitempty"`
	Cmdline   string `json:"cmdline,omitempty"`
}

type DiskConfig struct {
	Path     string `json:"path"`
	Readonly bool   `json:"readonly,omitempty"`
}

type NetConfig struct {
	Tap string `json:"tap,omitempty"`
	MAC string `json:"mac,omitempty"`
}

type ConsoleConfig struct {
	Mode   string `json:"mode"` // "Off", "Pty", "Tty", "File", "Socket", "Null"
	File   string `json:"file,omitempty"`
	Socket string `json:"socket,omitempty"`
}

type VsockConfig struct {
	CID    int64  `json:"cid"`
	Socket string `json:"socket"`
}

type RngConfig struct {
	Src string `json:"src"`
}

// VmSnapshotConfig is the body of vm.snapshot.
type VmSnapshotConfig struct {
	DestinationURL string `json:"destination_url"` // file:///dir
}

// hypefs' own states, finer than Cloud Hypervisor's.
const (
	Booting  = "booting" // hypervisor up, guest init not ready yet
	Running  = "running" // guest init said it is ready
	Paused   = "paused"
	Stopping = "stopping" // power button pressed, waiting for the guest
	Stopped  = "stopped"  // ended normally
	Crashed  = "crashed"  // ended in a way nobody asked for
)

// Status is the hypefs.status answer: what the daemon needs to know.
type Status struct {
	State         string       `json:"state"`
	Hypervisor    string       `json:"hypervisor"`
	Accel         string       `json:"accel"`
	ShimPID       int          `json:"shim_pid"`
	HypervisorPID int          `json:"hypervisor_pid"`
	BootID        string       `json:"boot_id"`
	Started       time.Time    `json:"started"`
	Ready         *time.Time   `json:"ready,omitempty"`
	Exit          *engine.Exit `json:"exit,omitempty"`
	// Seq counts the shim's state changes; see Event.Seq.
	Seq uint64 `json:"seq"`
	// Address is the guest's IPv4 address and prefix length
	// ("192.168.64.5/24") as its init last announced it on the console
	// (shim.AddressMarker), e.g. after DHCP; empty until it has.
	Address string `json:"address,omitempty"`
}

// Event is one line of the hypefs.events stream. The first line carries
// the state at the time of the request.
type Event struct {
	Time   time.Time `json:"time"`
	State  string    `json:"state"`
	Detail string    `json:"detail,omitempty"`
	// Seq numbers state changes, from 1. A successful action answers
	// with the header SeqHeader naming the Seq of the state it led to, so
	// a client following the events knows when it has seen its effect.
	Seq uint64 `json:"seq"`
	// Address is Status.Address at the time of the event. A new address
	// comes as an event of its own (same state, detail "guest address").
	Address string `json:"address,omitempty"`
	// Error, when set, is a sentence for the instance's error file: the
	// change happened to the VM without anyone asking (the hypervisor
	// paused it because the host's disk is full).
	Error string `json:"error,omitempty"`
}

// SeqHeader, StateHeader and DetailHeader carry, on a successful action,
// the Seq, the state after the action and the detail of that state's
// event, so a client that applies the answer before the event says the
// same thing the event would.
const (
	SeqHeader    = "Hypefs-Seq"
	StateHeader  = "Hypefs-State"
	DetailHeader = "Hypefs-Detail"
)

// GracefulStop is the body of hypefs.graceful-stop: press the power
// button, and end the VM if it has not ended after Timeout.
type GracefulStop struct {
	TimeoutSeconds float64 `json:"timeout_seconds"`
}

// Error is the body of every 4xx/5xx answer.
type Error struct {
	Error string `json:"error"`
}
