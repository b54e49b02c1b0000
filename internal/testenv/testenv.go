// Package testenv builds hypefs' binaries and runs a real daemon on a real
// FUSE mount for end-to-end tests and benchmarks, each in private data and
// run directories. It skips, with the reason, where root, /dev/fuse, QEMU
// or the guest kernel are missing (make deps installs them).
package testenv

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"

	"hypefs/backend/layout"
)

// TB is what testenv needs of testing.T and testing.B.
type TB interface {
	testing.TB
}

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// Root is the repository root.
func Root() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(filepath.Dir(file)))
}

// Kernels is the guest kernel cache tests share with make deps.
func Kernels() string {
	if k := os.Getenv("HYPEFS_KERNELS"); k != "" {
		return k
	}
	return "/var/lib/hypefs/kernels"
}

// Require skips unless a real VM can run under a real mount here.
func Require(t TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (FUSE mounts with allow_other, QEMU, sockets under /run)")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("needs /dev/fuse")
	}
	for _, tool := range []string{"fusermount3", qemuBinary()} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (run \"make deps\")", tool)
		}
	}
	if m, _ := filepath.Glob(filepath.Join(Kernels(), "*", "vmlinux")); len(m) == 0 {
		t.Skipf("needs a guest kernel in %s (run \"make deps\")", Kernels())
	}
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Skip("needs /bin/busybox from busybox-static (run \"make deps\")")
	}
}

func qemuBinary() string {
	if runtime.GOARCH == "arm64" {
		return "qemu-system-aarch64"
	}
	return "qemu-system-x86_64"
}

// Bins builds hypefs, hypefs-shim and hypefs-init once per test binary
// and returns their directory.
func Bins(t TB) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "hypefs-bin")
		if buildErr != nil {
			return
		}
		for _, b := range []struct {
			out, pkg string
			static   bool
		}{
			{"hypefs", "./cmd/hypefs", false},
			{"hypefs-shim", "./cmd/hypefs-shim", false},
			{"hypefs-init", "./cmd/hypefs-init", true},
		} {
			cmd := exec.Command("go", "build", "-o", filepath.Join(binDir, b.out), b.pkg)
			cmd.Dir = Root()
			cmd.Env = os.Environ()
			if b.static {
				cmd.Env = append(cmd.Env, "CGO_ENABLED=0")
			}
			if out, err := cmd.CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("build %s: %v\n%s", b.pkg, err, out)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

// Daemon is a running hypefs mount.
type Daemon struct {
	t        TB
	Dir      string // holds data/, run/, mnt/
	Mnt      string
	Data     string
	Run      string
	Kernels  string
	cmd      *exec.Cmd
	exited   chan struct{} // closed when the daemon process has been reaped
	logPath  string
	extraEnv []string
	args     []string // extra mount flags (NewDaemonWith)
}

// NewDaemon prepares private directories (short paths: socket paths must
// fit sun_path) and mounts. Cleanup kills every VM it started and unmounts.
func NewDaemon(t TB) *Daemon {
	t.Helper()
	return NewDaemonWith(t)
}

// NewDaemonWith is NewDaemon with extra flags for `hypefs mount`, such as
// "--9p", "unix:"+path; "{run}" and "{dir}" in them stand for the run
// directory and the daemon's directory.
func NewDaemonWith(t TB, args ...string) *Daemon {
	t.Helper()
	Require(t)
	dir, err := os.MkdirTemp("", "hfs")
	if err != nil {
		t.Fatal(err)
	}
	d := &Daemon{t: t, Dir: dir, Mnt: filepath.Join(dir, "mnt"), Data: filepath.Join(dir, "data"),
		Run: filepath.Join(dir, "run"), Kernels: Kernels(), logPath: filepath.Join(dir, "daemon.log"), args: args}
	t.Cleanup(d.cleanup)
	d.Start()
	return d
}

// Start mounts (again).
func (d *Daemon) Start() {
	d.t.Helper()
	logf, err := os.OpenFile(d.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		d.t.Fatal(err)
	}
	defer logf.Close()
	// Networking is off unless d.args turn it on (the last flag wins):
	// tests never make bridges or NAT rules in the host's namespace.
	args := []string{"mount", "--data", d.Data, "--run", d.Run, "--kernels", d.Kernels, "--network", "off"}
	for _, a := range d.args {
		// {run} and {dir} stand for the daemon's run directory and the
		// directory that holds it all (a 9P socket inside the run root).
		args = append(args, strings.NewReplacer("{run}", d.Run, "{dir}", d.Dir).Replace(a))
	}
	cmd := exec.Command(filepath.Join(Bins(d.t), "hypefs"), append(args, d.Mnt)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), d.extraEnv...)
	if err := cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	d.cmd = cmd
	exited := make(chan struct{})
	d.exited = exited
	go func() { cmd.Wait(); close(exited) }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if b, err := os.ReadFile(filepath.Join(d.Mnt, "version")); err == nil && len(b) > 0 {
			return
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("hypefs did not mount within 20 s; its log:\n%s", d.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Kill ends the daemon with SIGKILL, leaving a dead mount behind.
func (d *Daemon) Kill() {
	d.cmd.Process.Kill()
	<-d.exited
}

// Stop ends the daemon with SIGTERM and waits for it to unmount.
func (d *Daemon) Stop() {
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(10 * time.Second):
		d.t.Fatalf("hypefs did not exit within 10 s of SIGTERM; its log:\n%s", d.Log())
	}
}

// Log is the daemon's output so far.
func (d *Daemon) Log() string {
	b, _ := os.ReadFile(d.logPath)
	return string(b)
}

// SetEnv sets extra environment for the next Start.
func (d *Daemon) SetEnv(kv ...string) { d.extraEnv = append(d.extraEnv, kv...) }

func (d *Daemon) cleanup() {
	// VMs first: every shim whose config lives under our run dir.
	killMatching(d.Run + "/")
	if d.cmd != nil && d.cmd.Process != nil {
		d.cmd.Process.Signal(syscall.SIGTERM)
		time.Sleep(200 * time.Millisecond)
		d.cmd.Process.Kill()
	}
	exec.Command("fusermount3", "-uz", d.Mnt).Run()
	if d.t.Failed() {
		d.t.Logf("daemon log:\n%s", d.Log())
	}
	os.RemoveAll(d.Dir)
}

// killMatching SIGKILLs every process whose command line mentions s.
func killMatching(s string) {
	for _, pid := range Processes(s) {
		syscall.Kill(pid, syscall.SIGKILL)
	}
}

// Processes lists pids whose command line or environment mentions s (a
// hypervisor names its run directory only in its environment).
func Processes(s string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if !bytes.Contains(b, []byte(s)) {
			env, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
			if !bytes.Contains(env, []byte(s)) {
				continue
			}
		}
		var pid int
		fmt.Sscan(e.Name(), &pid)
		if pid > 0 && pid != os.Getpid() {
			pids = append(pids, pid)
		}
	}
	return pids
}

// RunDir is an instance's run directory (its sockets, the shim's record).
func (d *Daemon) RunDir(name string) string { return layout.Layout{Run: d.Run}.RunDir(name) }

// Path joins names under the mount.
func (d *Daemon) Path(names ...string) string {
	return filepath.Join(append([]string{d.Mnt}, names...)...)
}

// Inst is the path of a file of an instance.
func (d *Daemon) Inst(name, file string) string { return d.Path("instances", name, file) }

// Read returns a file's content, or "" when it cannot be read.
func (d *Daemon) Read(p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		return ""
	}
	return string(b)
}

// Status is an instance's status word.
func (d *Daemon) Status(name string) string {
	return strings.TrimSpace(d.Read(d.Inst(name, "status")))
}

// Shell runs a command line in bash, as a user would type it. (dash reports
// every failed write as "I/O error", hiding the errno.)
func Shell(line string) (string, error) {
	out, err := exec.Command("/bin/bash", "-c", line).CombinedOutput()
	return string(out), err
}

// WaitFor polls cond every 10 ms until it holds or timeout passes.
func WaitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// WaitStatus waits until the instance's status is want.
func (d *Daemon) WaitStatus(name, want string, timeout time.Duration) {
	d.t.Helper()
	if !WaitFor(timeout, func() bool { return d.Status(name) == want }) {
		d.t.Fatalf("%s: status %q, want %q after %s; error: %q; log tail:\n%s", name, d.Status(name), want, timeout,
			d.Read(d.Inst(name, "error")), tail(d.Read(d.Inst(name, "log")), 1500))
	}
}

// WaitLog waits until the instance's log contains s (count times).
func (d *Daemon) WaitLog(name, s string, count int, timeout time.Duration) {
	d.t.Helper()
	if !WaitFor(timeout, func() bool { return strings.Count(d.Read(d.Inst(name, "log")), s) >= count }) {
		d.t.Fatalf("%s: log lacks %q (x%d) after %s; tail:\n%s", name, s, count, timeout, tail(d.Read(d.Inst(name, "log")), 1500))
	}
}

// Boot creates an instance and writes config to it, then waits until it runs.
func (d *Daemon) Boot(name, config string) {
	d.t.Helper()
	if err := os.Mkdir(d.Path("instances", name), 0o755); err != nil {
		d.t.Fatal(err)
	}
	if err := os.WriteFile(d.Inst(name, "config"), []byte(config), 0o644); err != nil {
		d.t.Fatalf("write config: %v (error: %s)", err, d.Read(d.Inst(name, "error")))
	}
	d.WaitStatus(name, "running", 90*time.Second)
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// WaitNotify waits (at most 10 s) for an inotify event of op on name.
func WaitNotify(t TB, w *fsnotify.Watcher, name string, op fsnotify.Op) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case ev := <-w.Events:
			if ev.Name == name && ev.Has(op) {
				return
			}
		case <-deadline:
			t.Fatalf("no inotify %v for %s", op, name)
		}
	}
}
