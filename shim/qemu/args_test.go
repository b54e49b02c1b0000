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
			"-kernel /k/vmlinux -initrd /k/initrd.gz -append console=ttyS0 panic=-1",
			"-chardev socket,id=c0,path=/run/h/vm1/s.con,server=off -serial chardev:c0",
			"-chardev socket,id=qmp,path=/run/h/vm1/s.qmp,server=off -mon chardev=qmp,mode=control",
			"-device virtio-rng-device,rng=rng0",
		}, []string{"-incoming", "-drive", "-netdev"}},
		{"kvm", "amd64", func(s *engine.Spec) { s.Accel = "kvm" }, []string{"-accel kvm -M microvm -cpu host"}, nil},
		{"defaults", "amd64", func(s *engine.Spec) { s.CPUs, s.MemoryMiB, s.Name, s.Initramfs = 0, 0, "", "" },
			[]string{"-smp 1 -m 256"}, []string{"-name", "-initrd"}},
		{"disks", "amd64", func(s *engine.Spec) {
			s.Disks = []engine.Disk{{Path: "/d/root,1.img", ReadOnly: true}, {Path: "/d/data.img"}}
		}, []string{
			"-drive id=d0,file=/d/root,,1.img,format=raw,if=none,readonly=on -device virtio-blk-device,drive=d0",
			"-drive id=d1,file=/d/data.img,format=raw,if=none -device virtio-blk-device,drive=d1",
		}, nil},
		{"nics", "amd64", func(s *engine.Spec) {
			s.NICs = []engine.NIC{{Tap: "hf0", MAC: "52:54:00:12:34:56"}, {MAC: "52:54:00:00:00:01"}}
		}, []string{
			"-netdev tap,id=n0,ifname=hf0,script=no,downscript=no -device virtio-net-device,netdev=n0,mac=52:54:00:12:34:56",
			"-netdev user,id=n1 -device virtio-net-device,netdev=n1,mac=52:54:00:00:00:01",
		}, nil},
		{"restore", "amd64", func(s *engine.Spec) { s.RestoreFrom = "/snap/it's" }, []string{
			"-kernel /k/vmlinux", `-incoming exec:cat '/snap/it'\''s/state.qemu'`,
		}, nil},
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
