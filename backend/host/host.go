// Package host reports facts about the machine hypefs runs on and decides
// which accelerator a VM can really use.
package host

import (
	"fmt"
	"runtime"
	"sync"
)

// Facts describes the host as /host shows it.
type Facts struct {
	OS          string // runtime.GOOS
	Arch        string // runtime.GOARCH
	CPUs        int
	MemoryBytes uint64
	// Accel is what "auto" resolves to: "kvm", "hvf" or "tcg".
	Accel string
	// AccelReason says why, as a sentence fragment ("/dev/kvm works", ...).
	AccelReason string
	Hypervisor  string // "qemu" on Linux, "vz" on macOS
	// TSCkHz is the host's TSC rate in kHz (x86 only, 0 if unknown); TCG
	// guests on microvm need it as tsc_early_khz.
	TSCkHz int
}

var (
	probeOnce sync.Once
	probed    Facts
)

// Probe returns the host's facts. The accelerator check runs once per process.
func Probe() Facts {
	probeOnce.Do(func() { probed = probe() })
	return probed
}

// ResolveAccel turns a config's accel ("auto", "kvm", "tcg", "hvf") into
// the one to use, or an error when the request cannot be met here.
func ResolveAccel(requested string) (string, error) {
	f := Probe()
	switch requested {
	case "", "auto":
		return f.Accel, nil
	case "tcg":
		if f.OS == "darwin" {
			return "", fmt.Errorf("accel %q is not available on macOS (hint: use \"auto\" or \"hvf\")", requested)
		}
		return "tcg", nil
	case f.Accel:
		return f.Accel, nil
	case "kvm", "hvf":
		return "", fmt.Errorf("accel %q is not usable on this host: %s (hint: use \"auto\")", requested, f.AccelReason)
	}
	return "", fmt.Errorf("accel %q is unknown (valid: auto, kvm, tcg, hvf)", requested)
}

// DefaultHypervisor is the engine that runs VMs on this OS.
func DefaultHypervisor() string {
	if runtime.GOOS == "darwin" {
		return "vz"
	}
	return "qemu"
}
