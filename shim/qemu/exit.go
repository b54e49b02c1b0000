//go:build linux

package qemu

import (
	"fmt"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"hypefs/shim/engine"
)

// ending is what the engine knows when QEMU has been reaped.
type ending struct {
	status    syscall.WaitStatus
	requested bool   // Stop was called: any ending is the one asked for
	shutdown  string // "reason" of QEMU's last SHUTDOWN event, if any
	vmmTail   string // last line QEMU wrote to its log, for failures
	time      time.Time
}

// classify turns an ending into the exit record. Crashed means nobody
// asked for it: a signal from outside, QEMU failing, a guest panic.
func classify(e ending) engine.Exit {
	x := engine.Exit{Time: e.time, Code: e.status.ExitStatus()}
	if e.status.Signaled() {
		x.Code = -1
		x.Signal = unix.SignalName(e.status.Signal())
		if x.Signal == "" {
			x.Signal = fmt.Sprintf("signal %d", int(e.status.Signal()))
		}
	}
	switch {
	case e.requested:
		// Stop may have ended in SIGKILL when quit was not enough: still
		// what was asked.
		x.Reason = "stopped by request"
	case e.status.Signaled():
		x.Reason = "killed by " + x.Signal
		x.Crashed = true
	case x.Code != 0:
		x.Reason = fmt.Sprintf("qemu exited with status %d", x.Code)
		if e.vmmTail != "" {
			x.Reason += ": " + e.vmmTail
		}
		x.Crashed = true
	default:
		x.Reason, x.Crashed = shutdownReason(e.shutdown)
	}
	return x
}

// shutdownReason explains a clean QEMU exit from its SHUTDOWN event's
// reason (qapi ShutdownCause).
func shutdownReason(cause string) (string, bool) {
	switch cause {
	case "guest-shutdown":
		return "guest powered off", false
	case "guest-reset":
		// -no-reboot turns a guest's reset into an exit; with panic=-1
		// a kernel panic looks the same.
		return "guest reset itself (reboot or kernel panic)", false
	case "guest-panic":
		return "guest panicked", true
	case "host-signal":
		return "qemu ended by a signal from outside", true
	case "host-qmp-quit":
		return "qemu quit through qmp without a stop request", true
	case "host-qmp-system-reset":
		return "qemu ended on a reset request", false
	case "":
		return "qemu exited", false
	default:
		return "qemu shut down (" + cause + ")", false
	}
}
