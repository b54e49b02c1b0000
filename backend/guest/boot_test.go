package guest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"hypefs/backend/layout"
)

// defaultTestDeb is the kernel package this host has downloaded already;
// HYPEFS_TEST_DEB overrides it.
const defaultTestDeb = "/tmp/kdeb/linux-image-6.1.0-56-amd64_6.1.192-2_amd64.deb"

// shared holds what the boot tests share: one FetchDeb and one init build
// per test binary, under a temp dir TestMain removes.
var shared struct {
	dir  string
	once sync.Once
	boot *Boot
	skip string
	err  error
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "hypefs-guest-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	shared.dir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// testBoot fetches the test kernel and builds hypefs-init once, then
// prepares a boot from them, skipping the test if the deb or QEMU is
// missing.
func testBoot(t *testing.T) *Boot {
	t.Helper()
	shared.once.Do(func() {
		deb := os.Getenv("HYPEFS_TEST_DEB")
		if deb == "" {
			deb = defaultTestDeb
		}
		kernels := filepath.Join(shared.dir, "kernels")
		if _, err := os.Stat(deb); err == nil {
			start := time.Now()
			if _, shared.err = FetchDeb(context.Background(), kernels, deb); shared.err != nil {
				return
			}
			t.Logf("FetchDeb: %v", time.Since(start))
		} else {
			// No package at hand (tests never download): boot what make
			// deps put into the shared cache.
			kernels = os.Getenv("HYPEFS_KERNELS")
			if kernels == "" {
				kernels = DefaultKernelsDir
			}
			if cachedVersion(kernels, runtime.GOARCH) == "" {
				shared.skip = fmt.Sprintf("no kernel package (%v; set HYPEFS_TEST_DEB) and no %s kernel in %s (run \"make deps\")", err, runtime.GOARCH, kernels)
				return
			}
		}
		initBin := filepath.Join(shared.dir, "hypefs-init")
		cmd := exec.Command("go", "build", "-o", initBin, "hypefs/cmd/hypefs-init")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			shared.err = fmt.Errorf("go build hypefs-init: %v: %s", err, out)
			return
		}
		start := time.Now()
		shared.boot, shared.err = Prepare(context.Background(), Options{KernelsDir: kernels, Init: initBin})
		t.Logf("Prepare (cold): %v", time.Since(start))
	})
	if shared.skip != "" {
		t.Skip(shared.skip)
	}
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	return shared.boot
}

func TestFetchDebResult(t *testing.T) {
	b := testBoot(t)
	f, err := os.Open(b.Kernel)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if ok, err := hasPVHNote(f); err != nil || !ok {
		t.Errorf("kernel %s: PVH note %v, %v; want present", b.Kernel, ok, err)
	}
	order, err := os.ReadFile(filepath.Join(filepath.Dir(b.Kernel), layout.KernelModOrder))
	if err != nil {
		t.Fatal(err)
	}
	mods := strings.Fields(string(order))
	pos := map[string]int{}
	for i, m := range mods {
		pos[m] = i
	}
	for _, pair := range [][2]string{{"virtio_ring", "virtio_blk"}, {"jbd2", "ext4"}, {"crc32c_generic", "ext4"}, {"9pnet", "9pnet_virtio"}, {"vsock", "vmw_vsock_virtio_transport"}, {"button", "evdev"}} {
		a, aok := pos[pair[0]]
		b, bok := pos[pair[1]]
		if !aok || !bok || a > b {
			t.Errorf("module order %v: want %s before %s", mods, pair[0], pair[1])
		}
	}
	fi, _ := os.Stat(b.Initramfs)
	t.Logf("%d modules; initramfs %d bytes", len(mods), fi.Size())
	start := time.Now()
	if _, err := Prepare(context.Background(), Options{KernelsDir: filepath.Dir(filepath.Dir(b.Kernel)), Init: filepath.Join(shared.dir, "hypefs-init")}); err != nil {
		t.Fatal(err)
	}
	t.Logf("Prepare (warm): %v", time.Since(start))
}

// TestBootPowerButton boots the guest, runs commands in its shell,
// interrupts one, and presses the ACPI power button: QEMU must exit by
// itself.
func TestBootPowerButton(t *testing.T) {
	t.Parallel()
	vm := startVM(t, testBoot(t))
	vm.send(t, "echo hello-$((6*7))\n")
	vm.waitFor(t, "hello-42", 30*time.Second)
	// Ctrl-C reaches the foreground job: the console is the shell's
	// controlling tty.
	vm.send(t, "sleep 60\n")
	time.Sleep(500 * time.Millisecond)
	vm.send(t, "\x03echo after-$((1+1))\n")
	vm.waitFor(t, "after-2", 15*time.Second)
	vm.qmp(t, "system_powerdown")
	vm.waitExit(t, 20*time.Second)
	vm.waitFor(t, "hypefs: powering off (power button)", time.Second)
}

// TestBootShellExit boots the guest and leaves its shell: the VM ends.
func TestBootShellExit(t *testing.T) {
	t.Parallel()
	vm := startVM(t, testBoot(t))
	vm.send(t, "exit\n")
	vm.waitExit(t, 20*time.Second)
	vm.waitFor(t, "hypefs: powering off (shell exited: status 0)", time.Second)
	// The kernel's power-off (not the restart fallback) ended QEMU.
	vm.waitFor(t, "reboot: Power down", time.Second)
}

type testVM struct {
	cmd     *exec.Cmd
	dir     string
	console net.Conn
	out     lockedBuffer
	exited  chan error
	start   time.Time
	ready   time.Duration // from QEMU's start to the ready line
}

// startVM boots b under TCG the way DESIGN §4 shows, with the serial
// console on a unix socket the test listens on before QEMU starts, and
// waits for the ready line.
func startVM(t *testing.T, b *Boot) *testVM {
	t.Helper()
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Skip("no qemu-system-x86_64")
	}
	khz, err := hostTSCkHz()
	if err != nil {
		t.Fatal(err)
	}
	return launchVM(t, qemu, 60*time.Second,
		"-accel", "tcg", "-M", "microvm", "-cpu", "max", "-m", "256",
		"-kernel", b.Kernel, "-initrd", b.Initramfs,
		"-append", b.Cmdline+" tsc_early_khz="+strconv.Itoa(khz),
	)
}

// serialConsole puts the console (chardev c0) on the machine's UART.
var serialConsole = []string{"-serial", "chardev:c0"}

// launchVM runs qemu with args plus a QMP socket and the console on a
// unix socket the test listens on before QEMU starts (chardev c0, which
// console attaches to the guest), and waits up to ready for the guest's
// ready line and shell prompt.
func launchVM(t *testing.T, qemu string, ready time.Duration, args ...string) *testVM {
	t.Helper()
	vm := startQEMU(t, qemu, serialConsole, args...)
	vm.waitReady(t, ready)
	vm.waitFor(t, "hypefs:~# ", 10*time.Second)
	return vm
}

// startQEMU runs qemu with args, a QMP socket and the console on a unix
// socket (chardev c0) attached as console says, and copies the console's
// output into vm.out. It does not wait for the guest.
func startQEMU(t *testing.T, qemu string, console []string, args ...string) *testVM {
	t.Helper()
	dir, err := os.MkdirTemp("", "g") // short: sun_path is 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	ln, err := net.Listen("unix", filepath.Join(dir, "serial.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	vm := &testVM{dir: dir, exited: make(chan error, 1), start: time.Now()}
	args = append(args,
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-qmp", "unix:"+filepath.Join(dir, "qmp.sock")+",server=on,wait=off",
		"-chardev", "socket,id=c0,path="+filepath.Join(dir, "serial.sock"))
	vm.cmd = exec.Command(qemu, append(args, console...)...)
	var stderr lockedBuffer
	vm.cmd.Stderr = &stderr
	if err := vm.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { vm.exited <- vm.cmd.Wait() }()
	t.Cleanup(func() {
		vm.cmd.Process.Kill()
		err := <-vm.exited
		vm.exited <- err
		if t.Failed() {
			t.Logf("console:\n%s\nqemu stderr:\n%s", vm.out.String(), stderr.String())
		}
	})
	ln.(*net.UnixListener).SetDeadline(time.Now().Add(10 * time.Second))
	if vm.console, err = ln.Accept(); err != nil {
		t.Fatalf("console: %v (qemu: %s)", err, stderr.String())
	}
	t.Cleanup(func() { vm.console.Close() })
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := vm.console.Read(buf)
			vm.out.Write(buf[:n])
			if err != nil {
				return
			}
		}
	}()
	return vm
}

// waitReady waits for the init's ready line and records when it came.
func (vm *testVM) waitReady(t *testing.T, d time.Duration) {
	t.Helper()
	vm.waitFor(t, "hypefs: guest ready", d)
	vm.ready = time.Since(vm.start)
	t.Logf("boot to ready: %.2fs", vm.ready.Seconds())
}

func (vm *testVM) send(t *testing.T, s string) {
	t.Helper()
	if _, err := vm.console.Write([]byte(s)); err != nil {
		t.Fatalf("console write: %v", err)
	}
}

func (vm *testVM) waitFor(t *testing.T, s string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !strings.Contains(vm.out.String(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q on the console within %v", s, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (vm *testVM) waitExit(t *testing.T, d time.Duration) {
	t.Helper()
	start := time.Now()
	select {
	case err := <-vm.exited:
		vm.exited <- err // for Cleanup
		if err != nil {
			t.Errorf("qemu: %v", err)
		}
		t.Logf("qemu exited %.2fs after the request", time.Since(start).Seconds())
	case <-time.After(d):
		t.Fatalf("qemu still running %v after the request", d)
	}
}

// qmp runs one QMP command (after the capabilities handshake) and
// returns its reply, skipping asynchronous events.
func (vm *testVM) qmp(t *testing.T, command string) {
	t.Helper()
	c, err := net.Dial("unix", filepath.Join(vm.dir, "qmp.sock"))
	if err != nil {
		t.Fatalf("qmp: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	if _, err := r.ReadBytes('\n'); err != nil { // greeting
		t.Fatalf("qmp greeting: %v", err)
	}
	for _, cmd := range []string{"qmp_capabilities", command} {
		fmt.Fprintf(c, `{"execute":%q}`+"\n", cmd)
		for {
			line, err := r.ReadBytes('\n')
			if err != nil {
				t.Fatalf("qmp %s: %v", cmd, err)
			}
			var reply struct {
				Return json.RawMessage `json:"return"`
				Error  json.RawMessage `json:"error"`
			}
			json.Unmarshal(line, &reply)
			if reply.Error != nil {
				t.Fatalf("qmp %s: %s", cmd, reply.Error)
			}
			if reply.Return != nil {
				break
			}
		}
	}
}

// hostTSCkHz is the host's TSC rate as the guest's tsc_early_khz=: under
// TCG, microvm guests otherwise can hang calibrating it.
func hostTSCkHz() (int, error) {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if ok && strings.TrimSpace(k) == "cpu MHz" {
			mhz, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				return 0, fmt.Errorf("cpu MHz %q: %w", v, err)
			}
			return int(mhz * 1000), nil
		}
	}
	return 0, fmt.Errorf("no cpu MHz in /proc/cpuinfo")
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
