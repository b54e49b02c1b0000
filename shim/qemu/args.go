package qemu

import (
	"fmt"
	"path/filepath"
	"runtime"
	"strings"

	"hypefs/shim/engine"
)

// Socket and file names inside Spec.RunDir. They are short on purpose:
// sun_path holds 108 bytes and RunDir is already a few dozen.
const (
	consoleSock = "s.con"
	qmpSock     = "s.qmp"
	stateFile   = "state.qemu" // inside a snapshot directory
	configFile  = "config.json"
)

// Args returns QEMU's command line (without the binary) for spec on this
// host's architecture. It is a pure function of spec so that it can be
// tested and printed; see docs/qemu.md for why each flag is there.
func Args(spec engine.Spec) []string { return argsFor(spec, runtime.GOARCH) }

func argsFor(spec engine.Spec, arch string) []string {
	a := []string{}
	if spec.Name != "" {
		a = append(a, "-name", opt(spec.Name))
	}
	a = append(a, machineArgs(spec, arch)...)
	// The kernel is given even when restoring: the destination of a
	// migration must have the same RAM blocks (the boot option ROM
	// among them) as the VM that was saved.
	a = append(a, "-kernel", spec.Kernel)
	if spec.Initramfs != "" {
		a = append(a, "-initrd", spec.Initramfs)
	}
	if spec.Cmdline != "" {
		a = append(a, "-append", spec.Cmdline)
	}
	if spec.RestoreFrom != "" {
		// Restoring is an incoming migration from the state file; QEMU
		// keeps the VM paused afterwards because it was saved paused.
		a = append(a, "-incoming", "exec:cat "+shellQuote(filepath.Join(spec.RestoreFrom, stateFile)))
	}
	// Console and QMP: QEMU is the client of sockets the engine already
	// listens on, so no output is lost and nobody polls for a socket.
	a = append(a,
		"-chardev", "socket,id=c0,path="+opt(filepath.Join(spec.RunDir, consoleSock))+",server=off",
		"-serial", "chardev:c0",
		"-chardev", "socket,id=qmp,path="+opt(filepath.Join(spec.RunDir, qmpSock))+",server=off",
		"-mon", "chardev=qmp,mode=control",
	)
	a = append(a, deviceArgs(spec)...)
	// The guest's entropy pool fills at once instead of stalling on boot.
	a = append(a,
		"-object", "rng-random,id=rng0,filename=/dev/urandom",
		"-device", "virtio-rng-device,rng=rng0",
	)
	return a
}

// machineArgs are the accelerator, machine, CPU model and size.
func machineArgs(spec engine.Spec, arch string) []string {
	cpus, mem := spec.CPUs, spec.MemoryMiB
	if cpus <= 0 {
		cpus = 1
	}
	if mem <= 0 {
		mem = 256
	}
	// KVM runs the host's CPU model; TCG emulates the richest model it has.
	cpu := "max"
	accel := spec.Accel
	if accel == "kvm" {
		cpu = "host"
	} else {
		accel = "tcg"
	}
	machine := "microvm"
	if arch == "arm64" {
		machine = "virt" // microvm is x86 only; virt also has virtio-mmio
		if accel == "tcg" {
			// QEMU's own pointer-authentication algorithm is ~3x faster to
			// emulate than the architected one (boot to ready 3 s vs 10 s).
			cpu = "max,pauth-impdef=on"
		}
	}
	return []string{
		"-accel", accel,
		"-M", machine,
		"-cpu", cpu,
		"-smp", fmt.Sprint(cpus),
		"-m", fmt.Sprint(mem),
		"-nodefaults", "-no-user-config", "-display", "none",
		"-no-reboot",
	}
}

// deviceArgs are the disks, in order, and the NICs.
func deviceArgs(spec engine.Spec) []string {
	var a []string
	for i, d := range spec.Disks {
		drive := fmt.Sprintf("id=d%d,file=%s,format=raw,if=none", i, opt(d.Path))
		if d.ReadOnly {
			drive += ",readonly=on"
		}
		a = append(a, "-drive", drive, "-device", fmt.Sprintf("virtio-blk-device,drive=d%d", i))
	}
	for i, n := range spec.NICs {
		netdev := fmt.Sprintf("user,id=n%d", i) // no TAP: QEMU's own NAT
		if n.Tap != "" {
			netdev = fmt.Sprintf("tap,id=n%d,ifname=%s,script=no,downscript=no", i, opt(n.Tap))
		}
		dev := fmt.Sprintf("virtio-net-device,netdev=n%d", i)
		if n.MAC != "" {
			dev += ",mac=" + n.MAC
		}
		a = append(a, "-netdev", netdev, "-device", dev)
	}
	return a
}

// opt escapes a value for QEMU's key=value,... option syntax, where a
// comma is written twice.
func opt(s string) string { return strings.ReplaceAll(s, ",", ",,") }

// shellQuote quotes s for /bin/sh, which runs QEMU's exec: migrations.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// binaryFor names the QEMU system emulator for a Go architecture.
func binaryFor(arch string) string {
	if arch == "arm64" {
		return "qemu-system-aarch64"
	}
	return "qemu-system-x86_64"
}
