package vz

import (
	"time"

	"hypefs/shim/engine"
)

// State is a framework VM state. The values mirror VZVirtualMachineState;
// the darwin adapter maps vz's constants onto them by name.
type State int

const (
	StateStopped State = iota
	StateRunning
	StatePaused
	StateError
	StateStarting
	StatePausing
	StateResuming
	StateStopping
	StateSaving
	StateRestoring
)

var stateNames = [...]string{
	StateStopped:   "stopped",
	StateRunning:   "running",
	StatePaused:    "paused",
	StateError:     "error",
	StateStarting:  "starting",
	StatePausing:   "pausing",
	StateResuming:  "resuming",
	StateStopping:  "stopping",
	StateSaving:    "saving",
	StateRestoring: "restoring",
}

func (s State) String() string {
	if s >= 0 && int(s) < len(stateNames) {
		return stateNames[s]
	}
	return "unknown"
}

// Terminal reports whether the VM has ended in state s. A VM that was
// running never leaves Stopped or Error on its own.
func (s State) Terminal() bool { return s == StateStopped || s == StateError }

// stopCause records what the shim asked for before the VM ended, so the
// end can be told apart from one nobody asked for.
type stopCause int

const (
	causeNone        stopCause = iota
	causePowerButton           // PowerButton was pressed
	causeStop                  // Stop was called
)

// exitFor describes how a VM that reached the terminal state st ended.
//
// An in-process VM has no exit status of its own: Code is 0 for a VM that
// stopped and 1 for one the framework failed. Only the framework's error
// state counts as a crash. A guest that powers itself off (or reboots or
// panics: vz has no reset, so the VM simply stops) ended on its own, which
// the daemon shows as "stopped", like QEMU's -no-reboot exit on Linux.
func exitFor(st State, cause stopCause, at time.Time) engine.Exit {
	e := engine.Exit{Time: at}
	switch {
	case st == StateError:
		e.Code, e.Crashed = 1, true
		e.Reason = "virtualization framework stopped the vm with an error"
	case cause == causeStop:
		e.Reason = "vm stopped by request"
	case cause == causePowerButton:
		e.Reason = "guest powered off after the power button"
	default:
		e.Reason = "guest powered off"
	}
	return e
}
