package qemu

import (
	"slices"
	"strings"
	"testing"

	"hypefs/shim/engine"
)

func TestArgs(t *testing.T) {
	base := engine.Spec{
		Name: "vm1", RunDir: "/run/h/vm1", Kernel: "/k/vmlinux", Initramfs: "/k/initrd.gz",
		Cmdline: "console=ttyS0 panic=-1", CPUs: 2, MemoryMiB: 512, Accel: "tcg",
	}
	tests := []struct {
		name    string
		arch    string
		spec    func(s *engine.Spec)
		want    []string // consecutive runs that must appear
		notWant []string
	}{
		{"tcg", "amd64", nil, []string{
			"-name vm1", "-accel tcg -M microvm -cpu max -smp 2 -m 512",
			"-nodefaults -no-user-config -display none -no-reboot",
			"-kernel /proc/self/fd/3 -initrd /proc/self/fd/4 -append console=ttyS0 panic=-1",
			"-chardev socket,id=c0,fd=5 -serial chardev:c0",
			"-chardev socket,id=qmp,fd=6 -mon chardev=qmp,mode=control",
			"-device virtio-rng-device,rng=rng0",
			"-sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
		}, []string{"-incoming", "-drive", "-netdev", "/run/h/vm1", "/k/"}},
		{"kvm", "amd64", func(s *engine.Spec) { s.Accel = "kvm" }, []string{"-accel kvm -M microvm -cpu host"}, nil},
		{"defaults", "amd64", func(s *engine.Spec) { s.CPUs, s.MemoryMiB, s.Name, s.Initramfs = 0, 0, "", "" },
			[]string{"-smp 1 -m 256", "-kernel /proc/self/fd/3 -append", "-chardev socket,id=c0,fd=4 -serial"}, []string{"-name", "-initrd"}},
		{"disks", "amd64", func(s *engine.Spec) {
			s.Disks = []engine.Disk{{Path: "/d/root,1.img", ReadOnly: true}, {Path: "/d/data.img"}}
		}, []string{
			"-add-fd fd=7,set=1 -drive id=d0,file=/dev/fdset/1,format=raw,if=none,readonly=on -device virtio-blk-device,drive=d0",
			"-add-fd fd=8,set=2 -add-fd fd=9,set=2 -drive id=d1,file=/dev/fdset/2,format=raw,if=none,werror=enospc,rerror=report -device virtio-blk-device,drive=d1",
		}, []string{"/d/"}},
		{"nics", "amd64", func(s *engine.Spec) {
			s.NICs = []engine.NIC{{Tap: "hf0", MAC: "52:54:00:12:34:56"}, {MAC: "52:54:00:00:00:01"}}
		}, []string{
			"-netdev tap,id=n0,fd=7 -device virtio-net-device,netdev=n0,mac=52:54:00:12:34:56",
			"-netdev user,id=n1 -device virtio-net-device,netdev=n1,mac=52:54:00:00:00:01",
		}, nil},
		{"restore", "amd64", func(s *engine.Spec) { s.RestoreFrom = "/snap/it's" }, []string{
			"-kernel /proc/self/fd/3", "-incoming fd:7",
		}, []string{"exec:", "/snap"}},
		{"arm64", "arm64", nil, []string{"-accel tcg -M virt -cpu max,pauth-impdef=on"}, []string{"microvm"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := base
			if tt.spec != nil {
				tt.spec(&s)
			}
			args := argsFor(s, tt.arch)
			line := " " + strings.Join(args, " ") + " "
			for _, w := range tt.want {
				if !strings.Contains(line, " "+w+" ") {
					t.Errorf("missing %q in\n%s", w, line)
				}
			}
			for _, w := range tt.notWant {
				if slices.Contains(args, w) || strings.Contains(line, w) {
					t.Errorf("unexpected %q in\n%s", w, line)
				}
			}
		})
	}
}

func TestBinaryFor(t *testing.T) {
	if binaryFor("amd64") != "qemu-system-x86_64" || binaryFor("arm64") != "qemu-system-aarch64" {
		t.Fatal("wrong binary names")
	}
}
