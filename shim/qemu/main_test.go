//go:build linux

package qemu

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"hypefs/backend/guest"
	"hypefs/shim/engine"
)

const readyMarker = "hypefs: guest ready"

// kit is the kernel, initramfs and command line every test boots; one
// kernel cache serves the whole package. skipReason is set instead when
// the host cannot run these tests.
var (
	kit        *guest.Boot
	skipReason string
)

func TestMain(m *testing.M) {
	if os.Getenv(shimChildEnv) != "" {
		runShimChild()
		return
	}
	dir, err := os.MkdirTemp("", "qemu-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	flag.Parse()
	t0 := time.Now()
	skipReason = prepareKit(dir)
	if testing.Verbose() && skipReason == "" {
		fmt.Printf("test kit (kernel %s, initramfs) ready in %v\n", kit.KernelVersion, time.Since(t0).Round(time.Millisecond))
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// prepareKit fills kit, or returns why the VM tests must skip. The kernel
// comes from the guest kernel cache that make deps fills (HYPEFS_KERNELS,
// default guest.DefaultKernelsDir), as the daemon's own boots take it; a
// linux-image .deb named by HYPEFS_TEST_DEB is unpacked instead. Tests
// never download.
func prepareKit(dir string) string {
	if _, err := exec.LookPath(binaryFor("amd64")); err != nil {
		return "qemu-system-x86_64 is not installed"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	kernels := os.Getenv("HYPEFS_KERNELS")
	if kernels == "" {
		kernels = guest.DefaultKernelsDir
	}
	if deb := os.Getenv("HYPEFS_TEST_DEB"); deb != "" {
		kernels = filepath.Join(dir, "kernels")
		if _, err := guest.FetchDeb(ctx, kernels, deb); err != nil {
			return "guest.FetchDeb: " + err.Error()
		}
	}
	initBin := filepath.Join(dir, "hypefs-init")
	build := exec.CommandContext(ctx, "go", "build", "-o", initBin, "hypefs/cmd/hypefs-init")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return "building hypefs-init: " + err.Error() + ": " + string(out)
	}
	b, err := guest.Prepare(ctx, guest.Options{KernelsDir: kernels, Init: initBin, Busybox: "/bin/busybox", Arch: "amd64"})
	if err != nil {
		return "no guest kernel to boot (run \"make deps\"): " + err.Error()
	}
	b.Cmdline += " tsc_early_khz=" + hostTSCkHz()
	kit = b
	return ""
}

// hostTSCkHz reads the host's clock rate: under TCG the microvm guest can
// hang calibrating its TSC without it.
func hostTSCkHz() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "2000000"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == "cpu MHz" {
			mhz, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err == nil {
				return strconv.Itoa(int(mhz * 1000))
			}
		}
	}
	return "2000000"
}

// console collects guest output and lets a test wait for a string.
type console struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	more chan struct{}
}

func newConsole() *console { return &console{more: make(chan struct{})} }

func (c *console) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.buf.Write(p)
	close(c.more)
	c.more = make(chan struct{})
	c.mu.Unlock()
	return len(p), nil
}

func (c *console) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.Len()
}

func (c *console) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.String()
}

// waitFor waits until s appears in the output after offset from and
// returns the offset just past it.
func (c *console) waitFor(t testing.TB, s string, from int, timeout time.Duration) int {
	t.Helper()
	deadline := time.After(timeout)
	for {
		c.mu.Lock()
		data := c.buf.Bytes()[from:]
		i := bytes.Index(data, []byte(s))
		more := c.more
		c.mu.Unlock()
		if i >= 0 {
			return from + i + len(s)
		}
		select {
		case <-more:
		case <-deadline:
			t.Fatalf("no %q on the console after %v; console so far:\n%s", s, timeout, c.String())
		}
	}
}

// boot starts a VM of the test kit in a fresh run directory. The VM is
// stopped when the test ends.
func boot(t testing.TB, edit func(*engine.Spec)) (*Machine, *console, engine.Spec) {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
	// A short run directory: socket paths must fit in sun_path.
	run, err := os.MkdirTemp("", "q")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(run) })
	spec := engine.Spec{
		Name: "t", RunDir: run, Kernel: kit.Kernel, Initramfs: kit.Initramfs, Cmdline: kit.Cmdline,
		CPUs: 1, MemoryMiB: 256, Accel: "tcg", VMMLog: filepath.Join(run, "vmm.log"), User: testUser(),
	}
	if edit != nil {
		edit(&spec)
	}
	con := newConsole()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	em, err := New().Boot(ctx, spec, con)
	if err != nil {
		t.Fatalf("boot: %v", err)
	}
	m := em.(*Machine)
	t.Cleanup(func() {
		m.Stop(context.Background())
		if t.Failed() {
			log, _ := os.ReadFile(spec.VMMLog)
			t.Logf("vmm.log:\n%s", log)
		}
	})
	return m, con, spec
}

// testUser is who test VMs run as: nobody, as the daemon runs them by
// default, where the tests run as root.
func testUser() *engine.User {
	if os.Geteuid() != 0 {
		return nil
	}
	return &engine.User{UID: 65534, GID: 65534}
}

func waitDone(t *testing.T, m *Machine, timeout time.Duration) engine.Exit {
	t.Helper()
	select {
	case <-m.Done():
		return m.Exit()
	case <-time.After(timeout):
		t.Fatalf("vm did not end within %v", timeout)
		return engine.Exit{}
	}
}
