package guest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"hypefs/internal/runcfg"
	"hypefs/shim"
	"hypefs/shim/vz"
)

// The vz rig: the arm64 guest booted under qemu-system-aarch64 the way
// Virtualization.framework presents a machine, so that what the init does
// on a Mac is exercised on Linux:
//
//   - no UART (-serial none); the console is a virtio console (hvc0) on
//     PCI, and virtio_console is a module, so /dev/console cannot be
//     opened when the init starts;
//   - the kernel command line is the one the vz engine builds
//     (vz.HVCCmdline: console=hvc0) with no hypefs.ip: the address can
//     only come from DHCP;
//   - a virtio-net NIC on PCI on QEMU's user network (slirp), whose DHCP
//     server stands in for vmnet's NAT and hands out an address, a router
//     and a name server as vmnet's does; an entropy device; disks on
//     virtio-blk PCI. QEMU runs in a network namespace of its own with
//     nothing but a loopback that is down, so nothing the guest might send
//     can leave it (slirp's restrict=on would do that too, but then its
//     DHCP offers no router and no name server).
//
// What only a Mac can show (the framework itself, entitlements, macFUSE)
// is listed in docs/macos.md.

// vzShapedArgs are QEMU's arguments for a vz-shaped machine booting b
// with extra kernel arguments.
func vzShapedArgs(t *testing.T, b *Boot, extra string) []string {
	t.Helper()
	cpu := os.Getenv("HYPEFS_TEST_AARCH64_CPU")
	if cpu == "" {
		cpu = "max,pauth-impdef=on"
	}
	cmdline := vz.HVCCmdline(b.Cmdline + extra)
	if strings.Contains(cmdline, "hypefs.ip=") || strings.Contains(cmdline, "ttyAMA0") {
		t.Fatalf("cmdline %q: a vz guest has no UART and no static address", cmdline)
	}
	return []string{
		"-accel", "tcg", "-M", "virt", "-cpu", cpu, "-m", "256",
		"-kernel", b.Kernel, "-initrd", b.Initramfs, "-append", cmdline,
		"-netdev", "user,id=n0",
		"-device", "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56",
		"-device", "virtio-rng-pci",
	}
}

// startVzShaped starts QEMU with args in a fresh network namespace (see
// above), skipping where none can be made.
func startVzShaped(t *testing.T, args []string) *testVM {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: QEMU's user network runs in a network namespace of its own")
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skip("needs unshare (util-linux)")
	}
	return startQEMU(t, unshare, vzConsole, append([]string{"--net", "--", arm64.qemu}, args...)...)
}

// vzConsole is the console as vz has it: no UART, a virtio console.
var vzConsole = []string{"-serial", "none", "-device", "virtio-serial-pci", "-device", "virtconsole,chardev=c0"}

// addressLine finds the init's address announcement on the console.
var addressLine = regexp.MustCompile(regexp.QuoteMeta(shim.AddressMarker) + `(\S+) on (\S+) via (\S+) \(dhcp\)`)

// checkDHCP checks the announced address: a DHCP lease from QEMU's user
// network (10.0.2.0/24, gateway 10.0.2.2) on the first NIC.
func checkDHCP(t *testing.T, vm *testVM) {
	t.Helper()
	m := addressLine.FindStringSubmatch(vm.out.String())
	if m == nil {
		t.Fatalf("no %q line with a DHCP address on the console", shim.AddressMarker)
	}
	p, err := netip.ParsePrefix(m[1])
	if err != nil || !netip.MustParsePrefix("10.0.2.0/24").Contains(p.Addr()) || p.Bits() != 24 || m[2] != "eth0" || m[3] != "10.0.2.2" {
		t.Fatalf("address line %q: want a 10.0.2.x/24 lease on eth0 via 10.0.2.2", m[0])
	}
	t.Logf("DHCP: %s", m[0])
	if i, j := strings.Index(vm.out.String(), m[0]), strings.Index(vm.out.String(), shim.ReadyMarker); i > j {
		t.Errorf("the address came after the ready line: hosts read it at ready")
	}
}

// TestVzShapedShell boots the built-in shell on a vz-shaped machine: the
// ready line and the shell reach hvc0, the NIC has a DHCP lease, and
// leaving the shell powers the machine off.
func TestVzShapedShell(t *testing.T) {
	if testing.Short() {
		t.Skip("boots an emulated arm64 guest; skipped with -short")
	}
	b := arm64Boot(t)
	vm := startVzShaped(t, vzShapedArgs(t, b, ""))
	vm.waitReady(t, 2*time.Minute)
	vm.waitFor(t, "hypefs:~# ", 30*time.Second)
	checkDHCP(t, vm)
	vm.send(t, "echo hi-$((6*7)) $(tty); ip -4 -o addr show dev eth0; ip route; cat /etc/resolv.conf /run/hypefs/lease\n")
	vm.waitFor(t, "hi-42 /dev/hvc0", 60*time.Second)
	vm.waitFor(t, "nameserver 10.0.2.3", 10*time.Second)
	vm.waitFor(t, "default via 10.0.2.2 dev eth0", 10*time.Second)
	if !regexp.MustCompile(`inet 10\.0\.2\.\d+/24`).MatchString(vm.out.String()) {
		t.Errorf("eth0 has no 10.0.2.x/24 address")
	}
	shutdown := vm.shutdownReason(t)
	vm.send(t, "exit\n")
	vm.waitExit(t, 60*time.Second)
	vm.waitFor(t, "hypefs: powering off (shell exited: status 0)", time.Second)
	checkPowerOff(t, shutdown)
}

// checkPowerOff checks that the machine ended by a power-off (PSCI
// SYSTEM_OFF), not a reset: with -no-reboot a panicking guest also ends
// QEMU, and on hvc0 the kernel's own last words do not come through (the
// virtio console is shut down before them).
func checkPowerOff(t *testing.T, reason <-chan string) {
	t.Helper()
	select {
	case r := <-reason:
		if r != "guest-shutdown" {
			t.Fatalf("QEMU's SHUTDOWN event says %q; want guest-shutdown (a power-off)", r)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no SHUTDOWN event from QEMU")
	}
}

// shutdownReason follows QMP's events and sends the reason of the
// SHUTDOWN event ("guest-shutdown" for a power-off, "guest-reset" for a
// reboot under -no-reboot).
func (vm *testVM) shutdownReason(t *testing.T) <-chan string {
	t.Helper()
	c, err := net.Dial("unix", filepath.Join(vm.dir, "qmp.sock"))
	if err != nil {
		t.Fatalf("qmp: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	r := bufio.NewReader(c)
	if _, err := r.ReadBytes('\n'); err != nil { // greeting
		t.Fatalf("qmp greeting: %v", err)
	}
	fmt.Fprintf(c, `{"execute":"qmp_capabilities"}`+"\n")
	ch := make(chan string, 1)
	go func() {
		for {
			line, err := r.ReadBytes('\n')
			if err != nil {
				return
			}
			var ev struct {
				Event string `json:"event"`
				Data  struct {
					Reason string `json:"reason"`
				} `json:"data"`
			}
			if json.Unmarshal(line, &ev) == nil && ev.Event == "SHUTDOWN" {
				ch <- ev.Data.Reason
				return
			}
		}
	}()
	return ch
}

// TestVzShapedImage runs a program from an image's disks on a vz-shaped
// machine: its output and the init's exit status line reach hvc0, and the
// machine powers off when the program ends.
func TestVzShapedImage(t *testing.T) {
	if testing.Short() {
		t.Skip("boots an emulated arm64 guest; skipped with -short")
	}
	b := arm64Boot(t)
	dir := t.TempDir()
	base, rw, cfg := filepath.Join(dir, "base.erofs"), filepath.Join(dir, "rw.ext4"), filepath.Join(dir, "run.cfg")
	makeImageDisks(t, dir, base, rw, cfg, runcfg.Config{
		Args: []string{"/bin/busybox", "sh", "-c", "echo program-on-$(busybox tty); busybox ip -4 -o addr show dev eth0; exit 3"},
		Env:  []string{"PATH=/bin"}, Workdir: "/", Image: "rig"})
	args := vzShapedArgs(t, b, " hypefs.run=image")
	for i, d := range []struct {
		path string
		ro   bool
	}{{base, true}, {rw, false}, {cfg, true}} {
		drive := "file=" + d.path + ",if=none,format=raw,id=d" + string(rune('0'+i))
		if d.ro {
			drive += ",readonly=on"
		}
		args = append(args, "-drive", drive, "-device", "virtio-blk-pci,drive=d"+string(rune('0'+i)))
	}
	vm := startVzShaped(t, args)
	shutdown := vm.shutdownReason(t)
	vm.waitReady(t, 2*time.Minute)
	checkDHCP(t, vm)
	vm.waitFor(t, "program-on-/dev/hvc0", 60*time.Second)
	vm.waitFor(t, shim.ExitMarker+"3", 30*time.Second)
	vm.waitExit(t, 60*time.Second)
	vm.waitFor(t, "hypefs: powering off (program exited: status 3)", time.Second)
	checkPowerOff(t, shutdown)
	if !regexp.MustCompile(`inet 10\.0\.2\.\d+/24`).MatchString(vm.out.String()) {
		t.Errorf("the program saw no 10.0.2.x/24 address on eth0")
	}
}

// makeImageDisks makes the three disks hypefs.run=image boots with: an
// erofs base holding the arm64 busybox, an empty ext4 writable disk and
// the run config.
func makeImageDisks(t *testing.T, dir, base, rw, cfg string, rc runcfg.Config) {
	t.Helper()
	for _, tool := range []string{"mkfs.erofs", "mkfs.ext4"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("no %s (make deps)", tool)
		}
	}
	root := filepath.Join(dir, "root")
	os.MkdirAll(filepath.Join(root, "bin"), 0o755)
	bb, err := os.ReadFile(BusyboxPath(filepath.Dir(filepath.Dir(arm64.boot.Kernel)), "arm64"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "bin", "busybox"), bb, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mkfs.erofs", base, root).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.erofs: %v: %s", err, out)
	}
	f, err := os.Create(rw)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(64 << 20)
	f.Close()
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", rw).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	b, err := runcfg.Encode(rc)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestVzShapedNoDHCPServer: a NIC whose network has no DHCP server costs
// the boot the DHCP wait, not the boot: the init says so and goes on to
// ready (the NIC here is on an empty QEMU hub).
func TestVzShapedNoDHCPServer(t *testing.T) {
	if testing.Short() {
		t.Skip("boots an emulated arm64 guest; skipped with -short")
	}
	args := vzShapedArgs(t, arm64Boot(t), " hypefs.run=poweroff")
	i := slices.Index(args, "user,id=n0")
	if i < 0 {
		t.Fatalf("no user network in %q", args)
	}
	args[i] = "hubport,id=n0,hubid=0"
	vm := startVzShaped(t, args)
	shutdown := vm.shutdownReason(t)
	vm.waitReady(t, 2*time.Minute)
	vm.waitFor(t, "hypefs: network: no DHCP lease for eth0 within 5s; the boot goes on without an address (udhcpc keeps asking)", time.Second)
	if strings.Contains(vm.out.String(), shim.AddressMarker) {
		t.Fatal("an address was announced without a DHCP server")
	}
	vm.waitExit(t, 60*time.Second)
	vm.waitFor(t, "hypefs: powering off (hypefs.run=poweroff)", time.Second)
	checkPowerOff(t, shutdown)
}
