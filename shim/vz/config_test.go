package vz

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"hypefs/shim/engine"
)

// writeImage writes a minimal file that passes for a raw arm64 Image.
func writeImage(t *testing.T, dir string) string {
	t.Helper()
	b := make([]byte, 128)
	copy(b[56:], arm64ImageMagic)
	p := filepath.Join(dir, "Image")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func writeFile(t *testing.T, p string, b []byte) string {
	t.Helper()
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// baseSpec returns a spec that vz accepts, with its files in a temp dir.
func baseSpec(t *testing.T) engine.Spec {
	t.Helper()
	dir := t.TempDir()
	return engine.Spec{
		Name:      "web",
		RunDir:    dir,
		Kernel:    writeImage(t, dir),
		Initramfs: writeFile(t, filepath.Join(dir, "initrd.gz"), []byte{0x1f, 0x8b}),
		Cmdline:   "console=ttyAMA0 panic=-1 quiet",
		CPUs:      2,
		MemoryMiB: 512,
		Accel:     "hvf",
		Disks:     []engine.Disk{{Path: writeFile(t, filepath.Join(dir, "rootfs.img"), make([]byte, 4096))}},
		NICs:      []engine.NIC{{MAC: "52:54:00:AB:CD:EF"}},
	}
}

var testLimits = limits{MinCPUs: 1, MaxCPUs: 8, MinMemory: 128 * mib, MaxMemory: 8192 * mib}

func TestConfigFromSpec(t *testing.T) {
	spec := baseSpec(t)
	spec.Disks = append(spec.Disks, engine.Disk{Path: spec.Disks[0].Path, ReadOnly: true})
	got, err := configFromSpec(spec, testLimits)
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		Kernel:      spec.Kernel,
		Initrd:      spec.Initramfs,
		Cmdline:     "panic=-1 quiet console=hvc0",
		CPUs:        2,
		MemoryBytes: 512 * mib,
		Disks: []DiskConfig{
			{Path: spec.Disks[0].Path, Caching: "cached"},
			{Path: spec.Disks[0].Path, ReadOnly: true, Caching: "cached"},
		},
		NICs:    []NICConfig{{MAC: "52:54:00:ab:cd:ef"}},
		Entropy: true, Balloon: true, Vsock: true,
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("config\n got %+v\nwant %+v", got, want)
	}
}

func TestConfigFromSpecRefuses(t *testing.T) {
	cases := []struct {
		name   string
		change func(t *testing.T, s *engine.Spec)
		want   string
		is     error
	}{
		{"gzip kernel", func(t *testing.T, s *engine.Spec) {
			writeFile(t, s.Kernel, append([]byte{0x1f, 0x8b, 8}, make([]byte, 100)...))
		}, "gzip-compressed", nil},
		{"zboot kernel", func(t *testing.T, s *engine.Spec) {
			writeFile(t, s.Kernel, append([]byte("MZ\x00\x00zimg"), make([]byte, 100)...))
		}, "EFI zboot-compressed", nil},
		{"x86 kernel", func(t *testing.T, s *engine.Spec) {
			writeFile(t, s.Kernel, append([]byte("\x7fELF"), make([]byte, 100)...))
		}, "not an arm64 Image", nil},
		{"short kernel", func(t *testing.T, s *engine.Spec) { writeFile(t, s.Kernel, []byte("tiny")) }, "not an arm64 Image", nil},
		{"missing kernel", func(t *testing.T, s *engine.Spec) { s.Kernel = "/nonexistent/Image" }, "kernel:", os.ErrNotExist},
		{"missing initramfs", func(t *testing.T, s *engine.Spec) { s.Initramfs = "/nonexistent/initrd" }, "initramfs:", os.ErrNotExist},
		{"accel", func(t *testing.T, s *engine.Spec) { s.Accel = "kvm" }, `accel "kvm"`, nil},
		{"zero cpus", func(t *testing.T, s *engine.Spec) { s.CPUs = 0 }, "cpus 0", nil},
		{"too many cpus", func(t *testing.T, s *engine.Spec) { s.CPUs = 64 }, "cpus 64: outside this Mac's range 1-8", nil},
		{"too little memory", func(t *testing.T, s *engine.Spec) { s.MemoryMiB = 64 }, "memory 64 MiB", nil},
		{"too much memory", func(t *testing.T, s *engine.Spec) { s.MemoryMiB = 1 << 20 }, "memory 1048576 MiB", nil},
		{"tap", func(t *testing.T, s *engine.Spec) { s.NICs[0].Tap = "tap0" }, "nic 0: tap device", engine.ErrUnsupported},
		{"bad mac", func(t *testing.T, s *engine.Spec) { s.NICs[0].MAC = "52:54:00" }, "nic 0: mac", nil},
		{"long mac", func(t *testing.T, s *engine.Spec) { s.NICs[0].MAC = "00:00:00:00:fe:80:00:00" }, "6-byte", nil},
		{"multicast mac", func(t *testing.T, s *engine.Spec) { s.NICs[0].MAC = "01:00:5e:00:00:01" }, "multicast", nil},
		{"relative disk", func(t *testing.T, s *engine.Spec) { s.Disks[0].Path = "rootfs.img" }, "disk 0: path", nil},
		{"missing disk", func(t *testing.T, s *engine.Spec) { s.Disks[0].Path = "/nonexistent/d.img" }, "disk 0:", os.ErrNotExist},
		{"qcow2 disk", func(t *testing.T, s *engine.Spec) {
			writeFile(t, s.Disks[0].Path, append([]byte("QFI\xfb"), make([]byte, 100)...))
		}, "qcow2", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			spec := baseSpec(t)
			c.change(t, &spec)
			_, err := configFromSpec(spec, testLimits)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
			if c.is != nil && !errors.Is(err, c.is) {
				t.Fatalf("error %v does not wrap %v", err, c.is)
			}
		})
	}
}

func TestHvcCmdline(t *testing.T) {
	for in, want := range map[string]string{
		"":                                 "console=hvc0",
		"console=ttyAMA0 panic=-1 quiet":   "panic=-1 quiet console=hvc0",
		"quiet console=tty0 console=ttyS0": "quiet console=hvc0",
		"console=hvc0 init=/init":          "init=/init console=hvc0",
	} {
		if got := HVCCmdline(in); got != want {
			t.Errorf("HVCCmdline(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestStableMAC(t *testing.T) {
	a, err := stableMAC("", "web", 0)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := stableMAC("", "web", 0)
	other, _ := stableMAC("", "db", 0)
	second, _ := stableMAC("", "web", 1)
	if a != again {
		t.Fatalf("derived MAC not stable: %s then %s", a, again)
	}
	if a == other || a == second {
		t.Fatalf("derived MACs collide: %s %s %s", a, other, second)
	}
	if !strings.HasPrefix(a, "52:54:00:") {
		t.Fatalf("derived MAC %s lacks the locally administered 52:54:00 prefix", a)
	}
}

func TestStateMapping(t *testing.T) {
	for st := StateStopped; st <= StateRestoring; st++ {
		if st.String() == "unknown" {
			t.Errorf("state %d has no name", st)
		}
		if want := st == StateStopped || st == StateError; st.Terminal() != want {
			t.Errorf("%s.Terminal() = %v", st, !want)
		}
	}
	if State(99).String() != "unknown" {
		t.Error("out-of-range state should be unknown")
	}
}

func TestExitFor(t *testing.T) {
	cases := []struct {
		st      State
		cause   stopCause
		reason  string
		crashed bool
		code    int
	}{
		{StateStopped, causeNone, "guest powered off", false, 0},
		{StateStopped, causeStop, "vm stopped by request", false, 0},
		{StateStopped, causePowerButton, "guest powered off after the power button", false, 0},
		{StateError, causeNone, "virtualization framework stopped the vm with an error", true, 1},
		{StateError, causeStop, "virtualization framework stopped the vm with an error", true, 1},
	}
	for _, c := range cases {
		e := exitFor(c.st, c.cause, testTime)
		if e.Reason != c.reason || e.Crashed != c.crashed || e.Code != c.code || !e.Time.Equal(testTime) {
			t.Errorf("exitFor(%s, %d) = %+v", c.st, c.cause, e)
		}
	}
}
