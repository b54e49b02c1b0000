//go:build linux

package qemu

import (
	"syscall"
	"testing"
)

func TestClassify(t *testing.T) {
	exited := func(code int) syscall.WaitStatus { return syscall.WaitStatus(code << 8) }
	killed := func(sig syscall.Signal) syscall.WaitStatus { return syscall.WaitStatus(sig) }
	tests := []struct {
		name    string
		e       ending
		code    int
		signal  string
		reason  string
		crashed bool
	}{
		{"poweroff", ending{status: exited(0), shutdown: "guest-shutdown"}, 0, "", "guest powered off", false},
		{"stop by quit", ending{status: exited(0), requested: true, shutdown: "host-qmp-quit"}, 0, "", "stopped by request", false},
		{"stop by kill", ending{status: killed(syscall.SIGKILL), requested: true}, -1, "SIGKILL", "stopped by request", false},
		{"kill -9", ending{status: killed(syscall.SIGKILL)}, -1, "SIGKILL", "killed by SIGKILL", true},
		{"segv", ending{status: killed(syscall.SIGSEGV)}, -1, "SIGSEGV", "killed by SIGSEGV", true},
		{"sigterm", ending{status: exited(0), shutdown: "host-signal"}, 0, "", "qemu ended by a signal from outside", true},
		{"guest reboot", ending{status: exited(0), shutdown: "guest-reset"}, 0, "", "guest reset itself (reboot or kernel panic)", false},
		{"panic", ending{status: exited(0), shutdown: "guest-panic"}, 0, "", "guest panicked", true},
		{"error", ending{status: exited(1), vmmTail: "qemu: could not open disk"}, 1, "", "qemu exited with status 1: qemu: could not open disk", true},
		{"silent", ending{status: exited(0)}, 0, "", "qemu exited", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			x := classify(tt.e)
			if x.Code != tt.code || x.Signal != tt.signal || x.Reason != tt.reason || x.Crashed != tt.crashed {
				t.Errorf("classify = %+v, want code %d signal %q reason %q crashed %v", x, tt.code, tt.signal, tt.reason, tt.crashed)
			}
		})
	}
}
