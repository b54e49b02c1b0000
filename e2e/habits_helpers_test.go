package e2e

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"hypefs/internal/testenv"
)

// The habits suite drives the tree with the programs people already type
// (coreutils, tar, zip, rsync, vim, ed, sed, python3, inotify-tools, gio,
// mc). Every program runs under a timeout in its own process group: a
// hang fails the test instead of hanging the suite.

// needTools skips unless every program is installed (scripts/deps.sh
// installs them).
func needTools(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			t.Skipf("needs %s (run \"make deps\")", n)
		}
	}
}

// run runs a bash command line under timeout and returns its combined
// output and error. A command still running at the timeout is killed
// with its whole process group and fails the test.
func run(t *testing.T, timeout time.Duration, line string, env ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/bash", "-c", line)
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 2 * time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() == context.DeadlineExceeded {
		t.Fatalf("%s: still running after %s (it hangs); output so far:\n%s", line, timeout, out)
	}
	return string(out), err
}

// mustRun is run that fails the test on a non-zero exit.
func mustRun(t *testing.T, timeout time.Duration, line string, env ...string) string {
	t.Helper()
	out, err := run(t, timeout, line, env...)
	if err != nil {
		t.Fatalf("%s: %v\n%s", line, err, out)
	}
	return out
}

// background starts a bash command line in its own process group, with
// its output in a file; stop ends it (and is also run at cleanup).
type background struct {
	cmd  *exec.Cmd
	out  string
	done chan struct{}
}

func startBackground(t *testing.T, line string) *background {
	t.Helper()
	out := filepath.Join(t.TempDir(), "out")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/bin/bash", "-c", line)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	b := &background{cmd: cmd, out: out, done: make(chan struct{})}
	go func() { cmd.Wait(); close(b.done) }()
	t.Cleanup(b.stop)
	return b
}

func (b *background) output() string {
	data, _ := os.ReadFile(b.out)
	return string(data)
}

func (b *background) stop() {
	syscall.Kill(-b.cmd.Process.Pid, syscall.SIGKILL)
	<-b.done
}

// waitOutput waits until the background command's output contains s
// count times.
func (b *background) waitOutput(t *testing.T, s string, count int, timeout time.Duration) {
	t.Helper()
	if !testenv.WaitFor(timeout, func() bool { return strings.Count(b.output(), s) >= count }) {
		t.Fatalf("%s: output lacks %q (x%d) after %s:\n%s", b.cmd.Args[2], s, count, timeout, tailOf(b.output(), 2000))
	}
}

func tailOf(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// stopped boots an instance and kills it, leaving it stopped with its log.
func stopped(t *testing.T, d *testenv.Daemon, name, config string) {
	t.Helper()
	d.Boot(name, config)
	ctl(t, d, name, "kill")
	d.WaitStatus(name, "stopped", 10*time.Second)
}

// ctl writes a command the way a user does, and fails the test if refused.
func ctl(t *testing.T, d *testenv.Daemon, name, cmd string) {
	t.Helper()
	if out, err := testenv.Shell("echo " + cmd + " > " + d.Inst(name, "ctl")); err != nil {
		t.Fatalf("echo %s > ctl: %v %s (error: %s)", cmd, err, out, d.Read(d.Inst(name, "error")))
	}
}

// readUntil reads from f in the background until the data contains s,
// f ends, or timeout passes; it returns what was read and whether f ended
// (EOF or an error) before s appeared.
func readUntil(f *os.File, s string, timeout time.Duration) (got string, ended bool) {
	type res struct {
		data  string
		ended bool
	}
	ch := make(chan res, 1)
	go func() {
		r := bufio.NewReader(f)
		var all []byte
		b := make([]byte, 4096)
		for {
			n, err := r.Read(b)
			all = append(all, b[:n]...)
			if strings.Contains(string(all), s) {
				ch <- res{string(all), false}
				return
			}
			if err != nil {
				ch <- res{string(all), true}
				return
			}
		}
	}()
	select {
	case r := <-ch:
		return r.data, r.ended
	case <-time.After(timeout):
		f.Close() // ends the reader
		r := <-ch
		return r.data, false
	}
}

// fuseMounts lists the FUSE mounts whose mount point is mnt, bottom first.
func fuseMounts(mnt string) []string {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 10 || f[4] != mnt {
			continue
		}
		for k, x := range f {
			if x == "-" && k+1 < len(f) && strings.HasPrefix(f[k+1], "fuse") {
				out = append(out, l)
			}
		}
	}
	return out
}
