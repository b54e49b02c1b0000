package host

import (
	"bufio"
	"bytes"
	"os"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

func probe() Facts {
	f := Facts{OS: runtime.GOOS, Arch: runtime.GOARCH, CPUs: runtime.NumCPU(), Hypervisor: "qemu"}
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) == nil {
		f.MemoryBytes = uint64(si.Totalram) * uint64(si.Unit)
	}
	cpuinfo, _ := os.ReadFile("/proc/cpuinfo")
	f.TSCkHz = tscKHz(cpuinfo)
	f.Accel, f.AccelReason = kvmVerdict(kvmFacts{
		devKVM:  exists("/dev/kvm"),
		pvm:     exists("/sys/module/kvm_pvm"),
		virtExt: hasVirtExtensions(cpuinfo),
		arch:    runtime.GOARCH,
		create:  tryCreateVM,
	})
	return f
}

// kvmFacts are the inputs of the KVM decision, separated for testing.
type kvmFacts struct {
	devKVM  bool
	pvm     bool
	virtExt bool
	arch    string
	create  func() error
}

// kvmVerdict decides between kvm and tcg. /dev/kvm alone proves nothing:
// kvm_pvm (paging-based KVM on a CPU without vmx/svm) exposes it but cannot
// run ordinary guests, so it is refused by name, then hardware support is
// required, then a VM must really be created.
func kvmVerdict(k kvmFacts) (accel, reason string) {
	switch {
	case !k.devKVM:
		return "tcg", "no /dev/kvm, using TCG (software emulation)"
	case k.pvm:
		return "tcg", "/dev/kvm is kvm_pvm (paging-based KVM), which cannot run ordinary guests; using TCG (software emulation)"
	case k.arch == "amd64" && !k.virtExt:
		return "tcg", "/dev/kvm exists but the CPU has no vmx/svm; using TCG (software emulation)"
	}
	if err := k.create(); err != nil {
		return "tcg", "/dev/kvm cannot create a VM (" + err.Error() + "); using TCG (software emulation)"
	}
	return "kvm", "/dev/kvm works"
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func hasVirtExtensions(cpuinfo []byte) bool {
	sc := bufio.NewScanner(bytes.NewReader(cpuinfo))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "flags") {
			continue
		}
		for _, fl := range strings.Fields(line) {
			if fl == "vmx" || fl == "svm" {
				return true
			}
		}
		return false
	}
	return false
}

// tscKHz reads the first "cpu MHz" of /proc/cpuinfo. With a constant TSC
// this is the TSC rate closely enough for tsc_early_khz.
func tscKHz(cpuinfo []byte) int {
	sc := bufio.NewScanner(bytes.NewReader(cpuinfo))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || strings.TrimSpace(k) != "cpu MHz" {
			continue
		}
		mhz, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil || mhz <= 0 {
			return 0
		}
		return int(mhz * 1000)
	}
	return 0
}

const (
	kvmGetAPIVersion = 0xAE00
	kvmCreateVM      = 0xAE01
)

// tryCreateVM opens /dev/kvm and creates (then drops) an empty VM.
func tryCreateVM() error {
	fd, err := unix.Open("/dev/kvm", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	v, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), kvmGetAPIVersion, 0)
	if errno != 0 {
		return errno
	}
	if v != 12 {
		return unix.ENOTSUP
	}
	vm, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), kvmCreateVM, 0)
	if errno != 0 {
		return errno
	}
	unix.Close(int(vm))
	return nil
}
