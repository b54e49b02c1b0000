package host

import (
	"runtime"

	"golang.org/x/sys/unix"
)

// probe reads the Mac's facts from sysctl. VMs run through
// Virtualization.framework (engine "vz"), whose accelerator is the
// hypervisor framework ("hvf"). hypefs's guests are arm64 Linux, so only
// Apple silicon can run them: an Intel Mac reports accel "none" with a
// reason, and ResolveAccel refuses "hvf" there with that reason.
func probe() Facts {
	f := Facts{OS: runtime.GOOS, Arch: runtime.GOARCH, CPUs: runtime.NumCPU(), Hypervisor: "vz"}
	if n, err := unix.SysctlUint32("hw.ncpu"); err == nil && n > 0 {
		f.CPUs = int(n)
	}
	if m, err := unix.SysctlUint64("hw.memsize"); err == nil {
		f.MemoryBytes = m
	}
	hv, err := unix.SysctlUint32("kern.hv_support")
	f.Accel, f.AccelReason = hvfVerdict(runtime.GOARCH, err == nil && hv == 1)
	return f
}

// hvfVerdict decides whether VMs can run on this Mac.
func hvfVerdict(arch string, hvSupport bool) (accel, reason string) {
	switch {
	case arch != "arm64":
		return "none", "this is an Intel Mac: hypefs runs arm64 Linux guests with Virtualization.framework, which needs Apple silicon"
	case !hvSupport:
		return "none", "kern.hv_support is 0: this Mac offers no hardware virtualization (is it itself a VM without nested virtualization?)"
	}
	return "hvf", "Apple silicon with Virtualization.framework"
}
