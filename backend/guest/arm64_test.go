package guest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"hypefs/backend/layout"
)

// arm64 holds what the arm64 tests share: one Fetch (through a private
// apt, see apt.go), one cross-built init and one Prepare per test binary.
var arm64 struct {
	once sync.Once
	qemu string
	boot *Boot
	init string
	skip string
	err  error
}

// arm64Boot takes the arm64 kernel and busybox that make deps fetched
// into the shared cache, cross-builds hypefs-init for linux/arm64 and
// prepares a boot, skipping when qemu-system-aarch64 or the kernel is
// missing.
func arm64Boot(t *testing.T) *Boot {
	t.Helper()
	arm64.once.Do(func() {
		var err error
		if arm64.qemu, err = exec.LookPath("qemu-system-aarch64"); err != nil {
			arm64.skip = "no qemu-system-aarch64 (apt-get install --no-install-recommends qemu-system-arm)"
			return
		}
		// Tests never download: make deps fetches the arm64 kernel into
		// the shared cache when qemu-system-aarch64 is installed.
		kernels := os.Getenv("HYPEFS_KERNELS")
		if kernels == "" {
			kernels = DefaultKernelsDir
		}
		v := cachedVersion(kernels, "arm64")
		if v == "" {
			arm64.skip = "no arm64 guest kernel in " + kernels + " (run \"make deps\", which fetches it when qemu-system-aarch64 is installed)"
			return
		}
		ctx := context.Background()
		arm64.init = filepath.Join(shared.dir, "hypefs-init-arm64")
		start := time.Now()
		cmd := exec.Command("go", "build", "-o", arm64.init, "hypefs/cmd/hypefs-init")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=arm64")
		if out, err := cmd.CombinedOutput(); err != nil {
			arm64.err = err
			t.Logf("go build hypefs-init (linux/arm64): %s", out)
			return
		}
		t.Logf("go build hypefs-init (linux/arm64): %v", time.Since(start))
		start = time.Now()
		arm64.boot, arm64.err = Prepare(ctx, Options{KernelsDir: kernels, Init: arm64.init, Arch: "arm64", KernelVersion: v})
		t.Logf("Prepare arm64: %v", time.Since(start))
	})
	if arm64.skip != "" {
		t.Skip(arm64.skip)
	}
	if arm64.err != nil {
		t.Fatal(arm64.err)
	}
	return arm64.boot
}

// TestArm64Fetch checks what Fetch made of Debian's arm64 packages: a raw
// Image, the modules (virtio-mmio and the gpio power key among them) and
// a static arm64 busybox, which Prepare picked by default.
func TestArm64Fetch(t *testing.T) {
	b := arm64Boot(t)
	if filepath.Base(b.Kernel) != "Image" {
		t.Errorf("kernel %s; want Image", b.Kernel)
	}
	f, err := os.Open(b.Kernel)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := checkArm64Image(f); err != nil {
		t.Error(err)
	}
	kdir := filepath.Dir(b.Kernel)
	order, _ := os.ReadFile(filepath.Join(kdir, layout.KernelModOrder))
	missing, _ := os.ReadFile(filepath.Join(kdir, layout.KernelModMissing))
	have := map[string]bool{}
	for _, m := range strings.Fields(string(order)) {
		have[m] = true
	}
	for _, m := range []string{"virtio_mmio", "virtio_pci", "virtio_console", "virtio_blk", "virtio_net", "ext4", "9pnet_virtio", "vmw_vsock_virtio_transport", "evdev", "gpio_keys"} {
		if !have[m] {
			t.Errorf("module %s not in order %q", m, order)
		}
	}
	t.Logf("modules/order: %s", strings.Join(strings.Fields(string(order)), " "))
	t.Logf("modules/missing: %s", strings.Join(strings.Fields(string(missing)), " "))
	bb, err := os.ReadFile(BusyboxPath(filepath.Dir(kdir), "arm64"))
	if err != nil {
		t.Fatal(err)
	}
	if err := checkStaticELF(bb, "arm64"); err != nil {
		t.Errorf("busybox-arm64: %v", err)
	}
	if !strings.HasPrefix(b.Cmdline, "console=ttyAMA0 ") {
		t.Errorf("cmdline %q; want console=ttyAMA0 first", b.Cmdline)
	}
}

// startArm64VM boots b on QEMU's virt machine under TCG.
//
// -cpu max emulates pointer authentication with the architected QARMA
// cipher, which makes TCG several times slower (measured: 11 s against
// 2.7 s for this kernel to reach its root mount);
// pauth-impdef=on switches to QEMU's cheap implementation-defined one.
// HYPEFS_TEST_AARCH64_CPU overrides the model, e.g. to time plain "max".
func startArm64VM(t *testing.T, b *Boot) *testVM {
	t.Helper()
	cpu := os.Getenv("HYPEFS_TEST_AARCH64_CPU")
	if cpu == "" {
		cpu = "max,pauth-impdef=on"
	}
	return launchVM(t, arm64.qemu, 5*time.Minute,
		"-accel", "tcg", "-M", "virt", "-cpu", cpu, "-m", "256",
		"-kernel", b.Kernel, "-initrd", b.Initramfs, "-append", b.Cmdline,
	)
}

// TestArm64BootPowerButton boots the arm64 guest, runs a command in its
// shell and presses the power button (virt: a gpio-keys KEY_POWER).
func TestArm64BootPowerButton(t *testing.T) {
	if testing.Short() {
		t.Skip("boots an emulated arm64 guest; skipped with -short")
	}
	vm := startArm64VM(t, arm64Boot(t))
	vm.send(t, "echo hi-$((6*7)) $(uname -m)\n")
	vm.waitFor(t, "hi-42 aarch64", 60*time.Second)
	vm.qmp(t, "system_powerdown")
	vm.waitExit(t, 60*time.Second)
	vm.waitFor(t, "hypefs: powering off (power button)", time.Second)
}

// TestArm64BootShellExit leaves the shell: the init powers off (PSCI
// SYSTEM_OFF on virt) and QEMU exits.
func TestArm64BootShellExit(t *testing.T) {
	if testing.Short() {
		t.Skip("boots an emulated arm64 guest; skipped with -short")
	}
	vm := startArm64VM(t, arm64Boot(t))
	vm.send(t, "exit\n")
	vm.waitExit(t, 60*time.Second)
	vm.waitFor(t, "hypefs: powering off (shell exited: status 0)", time.Second)
}

// cachedVersion names a kernel version for arch in the cache, or "".
func cachedVersion(kernels, arch string) string {
	ents, _ := os.ReadDir(kernels)
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(kernels, e.Name(), "arch"))
		if err == nil && strings.TrimSpace(string(b)) == arch {
			return e.Name()
		}
	}
	return ""
}
