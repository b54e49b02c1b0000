package qemu

import (
	"fmt"
	"runtime"
	"strings"

	"hypefs/shim/engine"
)

// Files the engine keeps in a snapshot directory.
const (
	stateFile  = "state.qemu"
	configFile = "config.json"
)

// Sandbox is QEMU's seccomp policy: beside the default denials, no
// obsolete system calls, no change of user or group, no new processes or
// programs, no changes to scheduling or resource limits. QEMU needs none:
// it is started as its user, and every file it uses, the saved state of a
// snapshot or a restore included, is handed to it open.
const Sandbox = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"

// fdBase is the first descriptor QEMU inherits after stdin, stdout and
// stderr: exec.Cmd.ExtraFiles[k] is descriptor fdBase+k.
const fdBase = 3

// handoff numbers the files QEMU is handed open, as descriptors from
// fdBase in this order: the kernel, the initramfs, its console and QMP
// sockets, each disk (a writable one twice: read-write and read-only,
// since QEMU picks by access mode), each NIC's TAP, the state to restore.
// -1 means none.
type handoff struct {
	kernel, initrd int
	console, qmp   int
	disks          [][]int
	taps           []int
	incoming       int
	count          int
}

func planHandoff(spec engine.Spec) handoff {
	h := handoff{initrd: -1, incoming: -1}
	next := func() int { h.count++; return fdBase + h.count - 1 }
	h.kernel = next()
	if spec.Initramfs != "" {
		h.initrd = next()
	}
	h.console, h.qmp = next(), next()
	for _, d := range spec.Disks {
		fds := []int{next()}
		if !d.ReadOnly {
			fds = append(fds, next())
		}
		h.disks = append(h.disks, fds)
	}
	for _, n := range spec.NICs {
		t := -1
		if n.Tap != "" {
			t = next()
		}
		h.taps = append(h.taps, t)
	}
	if spec.RestoreFrom != "" {
		h.incoming = next()
	}
	return h
}

// fdPath names an inherited descriptor as a path QEMU opens by name (the
// kernel and initramfs loaders take only paths).
func fdPath(fd int) string { return fmt.Sprintf("/proc/self/fd/%d", fd) }

// Args returns QEMU's command line (without the binary) for spec on this
// host's architecture. It is a pure function of spec so that it can be
// tested and printed; see docs/qemu.md for why each flag is there. The
// files it names are descriptors (planHandoff), opened by the engine.
func Args(spec engine.Spec) []string { return argsFor(spec, runtime.GOARCH) }

func argsFor(spec engine.Spec, arch string) []string {
	h := planHandoff(spec)
	a := []string{}
	if spec.Name != "" {
		a = append(a, "-name", opt(spec.Name))
	}
	a = append(a, machineArgs(spec, arch)...)
	// The kernel is given even when restoring: the destination of a
	// migration must have the same RAM blocks (the boot option ROM
	// among them) as the VM that was saved.
	a = append(a, "-kernel", fdPath(h.kernel))
	if h.initrd >= 0 {
		a = append(a, "-initrd", fdPath(h.initrd))
	}
	if spec.Cmdline != "" {
		a = append(a, "-append", spec.Cmdline)
	}
	if h.incoming >= 0 {
		// Restoring is an incoming migration from the state file; QEMU
		// keeps the VM paused afterwards because it was saved paused.
		a = append(a, "-incoming", fmt.Sprintf("fd:%d", h.incoming))
	}
	// Console and QMP: one end of a socket pair each, connected before
	// QEMU starts, so no output is lost and nobody polls for a socket.
	a = append(a,
		"-chardev", fmt.Sprintf("socket,id=c0,fd=%d", h.console),
		"-serial", "chardev:c0",
		"-chardev", fmt.Sprintf("socket,id=qmp,fd=%d", h.qmp),
		"-mon", "chardev=qmp,mode=control",
	)
	a = append(a, deviceArgs(spec, h)...)
	// The guest's entropy pool fills at once instead of stalling on boot.
	a = append(a,
		"-object", "rng-random,id=rng0,filename=/dev/urandom",
		"-device", "virtio-rng-device,rng=rng0",
		"-sandbox", Sandbox,
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

// deviceArgs are the disks, in order, and the NICs. A disk is a QEMU fd
// set of its descriptors; a write the host cannot take for want of space
// stops the VM (werror=enospc, QEMU's default, said explicitly) instead
// of failing inside the guest, so the shim can show it and resume later.
func deviceArgs(spec engine.Spec, h handoff) []string {
	var a []string
	for i, d := range spec.Disks {
		set := i + 1
		for _, fd := range h.disks[i] {
			a = append(a, "-add-fd", fmt.Sprintf("fd=%d,set=%d", fd, set))
		}
		drive := fmt.Sprintf("id=d%d,file=/dev/fdset/%d,format=raw,if=none", i, set)
		if d.ReadOnly {
			drive += ",readonly=on"
		} else {
			drive += ",werror=enospc,rerror=report"
		}
		a = append(a, "-drive", drive, "-device", fmt.Sprintf("virtio-blk-device,drive=d%d", i))
	}
	for i, n := range spec.NICs {
		netdev := fmt.Sprintf("user,id=n%d", i) // no TAP: QEMU's own NAT
		if h.taps[i] >= 0 {
			netdev = fmt.Sprintf("tap,id=n%d,fd=%d", i, h.taps[i])
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

// binaryFor names the QEMU system emulator for a Go architecture.
func binaryFor(arch string) string {
	if arch == "arm64" {
		return "qemu-system-aarch64"
	}
	return "qemu-system-x86_64"
}
