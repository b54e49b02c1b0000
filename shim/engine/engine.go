// Package engine defines what a hypervisor engine must do for the shim.
//
// The shim (package shim) owns the API socket, the console log and its
// live readers, the exit record and the state machine. An engine owns one
// hypervisor: QEMU as a child process on Linux (package qemu), an
// in-process Virtualization.framework VM on macOS (package vz). The shim
// never needs to know which one it drives.
package engine

import (
	"context"
	"errors"
	"io"
	"time"
)

// Spec is everything an engine needs to boot one VM. Paths are absolute.
type Spec struct {
	Name      string // instance name, for logs and process titles
	RunDir    string // private directory for the engine's sockets and files
	Kernel    string // kernel image (PVH vmlinux on x86-64, raw Image on arm64)
	Initramfs string // compressed newc cpio
	Cmdline   string // kernel command line, complete
	CPUs      int
	MemoryMiB int
	Accel     string // resolved: "kvm", "tcg" or "hvf"
	VMMLog    string // file that receives the hypervisor's own output
	LogMax    int64  // cap of VMMLog in bytes (internal/logcap); 0: none
	Disks     []Disk
	NICs      []NIC
	// MachineID is an opaque, persisted machine identifier (vz needs the
	// same one to restore a saved Linux guest). Engines that have no use
	// for it ignore it; an engine that creates one reports it through
	// Machine.MachineID so the shim can persist it.
	MachineID []byte
	// RestoreFrom, when set, names a directory written by Snapshot: the
	// engine restores that state instead of booting the kernel.
	RestoreFrom string
	// User, when set, is who a hypervisor process runs as (an
	// unprivileged user; the engine hands it every file open). Nil: the
	// shim's own user. In-process engines (vz) ignore it.
	User *User `json:"user,omitempty"`
}

// User is a numeric user and group a hypervisor runs as.
type User struct {
	UID uint32 `json:"uid"`
	GID uint32 `json:"gid"`
}

// RunDirEnv is set in a hypervisor process's environment to its Spec's
// RunDir, so that a daemon finding a hypervisor whose shim died can tell
// it is the one of that run directory (and no other) before ending it.
const RunDirEnv = "HYPEFS_RUN_DIR"

// Disk is a block device given to the guest, in order (vda, vdb, ...).
type Disk struct {
	Path     string
	ReadOnly bool
}

// NIC is a network interface given to the guest.
type NIC struct {
	Tap string // host TAP device (Linux); empty means the engine's default (NAT on vz)
	MAC string // "52:54:00:xx:xx:xx"
}

// Exit describes how a hypervisor ended.
type Exit struct {
	Time time.Time `json:"time"`
	// Code is the hypervisor's exit status, or -1 if it was killed by a signal.
	Code   int    `json:"code"`
	Signal string `json:"signal,omitempty"`
	// Reason is a short sentence: "guest powered off", "killed by SIGKILL", ...
	Reason string `json:"reason"`
	// Crashed is true when the hypervisor ended in a way nobody asked for
	// (killed from outside, died on an error).
	Crashed bool `json:"crashed"`
}

// Machine is one booted VM.
//
// Methods may be called from several goroutines. After Done is closed,
// control methods return ErrNotRunning; a control method the VM's state
// forbids returns an error wrapping ErrWrongState.
type Machine interface {
	// Console is the guest's console input: bytes written here are typed
	// into the guest's serial console.
	Console() io.Writer
	Pause(ctx context.Context) error
	Resume(ctx context.Context) error
	// PowerButton presses the ACPI power button (a request the guest may ignore).
	PowerButton(ctx context.Context) error
	// Reboot resets the guest. An engine that cannot reset in place may
	// restart its hypervisor; PID then changes.
	Reboot(ctx context.Context) error
	// Stop ends the VM now.
	Stop(ctx context.Context) error
	// Snapshot saves the paused VM's state into dir (which exists and is empty).
	Snapshot(ctx context.Context, dir string) error
	// PID is the hypervisor's process id (the shim's own for in-process engines).
	PID() int
	// MachineID returns the identifier the VM runs with (see Spec.MachineID).
	MachineID() []byte
	// Done is closed when the VM has ended; Exit then tells how.
	Done() <-chan struct{}
	Exit() Exit
}

// Halt is the hypervisor pausing a guest by itself: a write to a disk
// failed (NoSpace: the host's disk is full) and the guest waits, paused,
// until someone resumes it.
type Halt struct {
	Disk    string // the hypervisor's name of the disk
	NoSpace bool
	Reason  string // the hypervisor's words, if any
}

// Halter is a Machine that can pause its guest by itself; Halts delivers
// each such pause (a burst may come as one).
type Halter interface {
	Halts() <-chan Halt
}

// Engine boots machines. Boot returns once the hypervisor runs the guest;
// every byte the guest writes to its console, from the first, is written
// to console (which must not block for long).
type Engine interface {
	Name() string // "qemu" or "vz"
	Boot(ctx context.Context, spec Spec, console io.Writer) (Machine, error)
}

var (
	// ErrNotRunning: the VM has ended.
	ErrNotRunning = errors.New("vm is not running")
	// ErrUnsupported: the engine cannot do this on this host.
	ErrUnsupported = errors.New("not supported by this engine")
	// ErrWrongState: the VM's current state forbids this (pause a
	// paused VM, snapshot a running one). The shim's own state checks
	// and both engines return it; the API answers it with 405.
	ErrWrongState = errors.New("wrong state")
)
