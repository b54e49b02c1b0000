package e2e

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"hypefs/internal/testenv"
)

// Bad input gets an errno and a sentence in error, and stops nothing.
func TestBadInput(t *testing.T) {
	d := testenv.NewDaemon(t)
	d.Boot("vm", "{}")
	pids := d.Read(d.Inst("vm", "info"))
	if err := os.Mkdir(d.Path("instances", "idle"), 0o755); err != nil {
		t.Fatal(err)
	}

	write := func(p, s string) error { return os.WriteFile(p, []byte(s), 0o644) }
	cases := []struct {
		name  string
		do    func() error
		errno syscall.Errno
		inst  string // whose error file must name the problem
		words string // a word the sentence must contain
	}{
		{"bad name upper", func() error { return os.Mkdir(d.Path("instances", "Web"), 0o755) }, syscall.EINVAL, "", ""},
		{"bad name dot", func() error { return os.Mkdir(d.Path("instances", ".web"), 0o755) }, syscall.EINVAL, "", ""},
		{"bad name long", func() error { return os.Mkdir(d.Path("instances", strings.Repeat("a", 64)), 0o755) }, syscall.EINVAL, "", ""},
		{"existing name", func() error { return os.Mkdir(d.Path("instances", "vm"), 0o755) }, syscall.EEXIST, "", ""},
		{"mkdir elsewhere", func() error { return os.Mkdir(d.Path("nope"), 0o755) }, syscall.EPERM, "", ""},
		{"not json", func() error { return write(d.Inst("idle", "config"), "memory=512M\n") }, syscall.EINVAL, "idle", "JSON"},
		{"broken json", func() error { return write(d.Inst("idle", "config"), "{\"cpus\": }\n") }, syscall.EINVAL, "idle", "JSON"},
		{"json array", func() error { return write(d.Inst("idle", "config"), "[1,2]\n") }, syscall.EINVAL, "idle", "object"},
		{"unknown key", func() error { return write(d.Inst("idle", "config"), `{"memroy":"512M"}`) }, syscall.EINVAL, "idle", `"memroy"`},
		{"cpus type", func() error { return write(d.Inst("idle", "config"), `{"cpus":"two"}`) }, syscall.EINVAL, "idle", `"cpus"`},
		{"cpus zero", func() error { return write(d.Inst("idle", "config"), `{"cpus":0}`) }, syscall.EINVAL, "idle", `"cpus"`},
		{"cpus too many", func() error { return write(d.Inst("idle", "config"), `{"cpus":100000}`) }, syscall.EINVAL, "idle", `"cpus"`},
		{"memory tiny", func() error { return write(d.Inst("idle", "config"), `{"memory":"1M"}`) }, syscall.EINVAL, "idle", `"memory"`},
		{"memory huge", func() error { return write(d.Inst("idle", "config"), `{"memory":"100T"}`) }, syscall.EINVAL, "idle", `"memory"`},
		{"memory words", func() error { return write(d.Inst("idle", "config"), `{"memory":"lots"}`) }, syscall.EINVAL, "idle", `"memory"`},
		{"accel bogus", func() error { return write(d.Inst("idle", "config"), `{"accel":"warp"}`) }, syscall.EINVAL, "idle", `"accel"`},
		{"env type", func() error { return write(d.Inst("idle", "config"), `{"env":["A=1"]}`) }, syscall.EINVAL, "idle", `"env"`},
		{"disk beyond the free space", func() error { return write(d.Inst("idle", "config"), `{"image":"busybox","disk":"1000000G"}`) }, syscall.ENOSPC, "idle", "free space"},
		{"disk that overflows", func() error { return write(d.Inst("idle", "config"), `{"disk":"99999999999999999999G"}`) }, syscall.EINVAL, "idle", `"disk"`},
		{"disk of negative size", func() error { return write(d.Inst("idle", "config"), `{"disk":"-1G"}`) }, syscall.EINVAL, "idle", `"disk"`},
		{"config while running", func() error { return write(d.Inst("vm", "config"), `{}`) }, syscall.EBUSY, "vm", "running"},
		{"bad config while running", func() error { return write(d.Inst("vm", "config"), `{"cpus":-1}`) }, syscall.EINVAL, "vm", `"cpus"`},
		{"unknown ctl", func() error { return write(d.Inst("vm", "ctl"), "explode\n") }, syscall.EINVAL, "vm", "explode"},
		{"empty ctl", func() error { return write(d.Inst("vm", "ctl"), "\n") }, syscall.EINVAL, "vm", "empty"},
		{"resume running", func() error { return write(d.Inst("vm", "ctl"), "resume") }, syscall.EBUSY, "vm", "resume"},
		{"start running", func() error { return write(d.Inst("vm", "ctl"), "start") }, syscall.EBUSY, "vm", "start"},
		{"pause new", func() error { return write(d.Inst("idle", "ctl"), "pause") }, syscall.EBUSY, "idle", "pause"},
		{"start without config", func() error { return write(d.Inst("idle", "ctl"), "start") }, syscall.EBUSY, "idle", "config"},
		{"rmdir running", func() error { return syscall.Rmdir(d.Path("instances", "vm")) }, syscall.EBUSY, "vm", "kill"},
		{"unlink status", func() error { return os.Remove(d.Inst("vm", "status")) }, syscall.EPERM, "", ""},
		{"rename log", func() error { return os.Rename(d.Inst("vm", "log"), d.Inst("vm", "log2")) }, syscall.EPERM, "", ""},
		{"create file", func() error { return write(d.Inst("vm", "newfile"), "x") }, syscall.EPERM, "", ""},
		{"write status", func() error { return write(d.Inst("vm", "status"), "running") }, syscall.EACCES, "", ""},
		{"chmod ctl", func() error { return os.Chmod(d.Inst("vm", "ctl"), 0o777) }, syscall.EPERM, "", ""},
		{"rmdir missing", func() error { return syscall.Rmdir(d.Path("instances", "ghost")) }, syscall.ENOENT, "", ""},
		{"1 GiB of JSON into config", func() error { return writeStream(d.Inst("idle", "config"), `{"env":{"A":"`, 1<<30) }, syscall.EFBIG, "idle", "bytes"},
		{"1 GiB of junk into config", func() error { return writeStream(d.Inst("idle", "config"), "", 1<<30) }, syscall.EINVAL, "idle", "JSON"},
		{"1 GiB into ctl", func() error { return writeStream(d.Inst("vm", "ctl"), "", 1<<30) }, syscall.EINVAL, "vm", "ctl"},
		{"1 GiB into console of a new instance", func() error { return writeStream(d.Inst("idle", "console"), "", 1<<30) }, syscall.EIO, "idle", "not running"},
		{"huge config", func() error {
			return write(d.Inst("idle", "config"), `{"env":{"A":"`+strings.Repeat("x", 2<<20)+`"}}`)
		}, syscall.EFBIG, "idle", "bytes"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.do()
			if !errors.Is(err, c.errno) {
				t.Fatalf("got %v, want %v", err, c.errno)
			}
			if c.inst != "" {
				msg := d.Read(d.Inst(c.inst, "error"))
				if !strings.Contains(msg, c.words) {
					t.Fatalf("error file says %q; want it to mention %s", msg, c.words)
				}
			}
		})
	}
	// The shell sees the errno too.
	out, err := testenv.Shell("echo frobnicate > " + d.Inst("vm", "ctl"))
	if err == nil || !strings.Contains(out, "Invalid argument") {
		t.Fatalf("shell: %v %q", err, out)
	}

	// Nothing stopped, nothing changed.
	if st := d.Status("vm"); st != "running" {
		t.Fatalf("vm is %q after bad input", st)
	}
	if got := d.Read(d.Inst("vm", "info")); !samePIDs(got, pids) {
		t.Fatalf("vm's processes changed:\n%s\n%s", pids, got)
	}
	if st := d.Status("idle"); st != "new" {
		t.Fatalf("idle is %q after refused configs", st)
	}
	if cfg := d.Read(d.Inst("idle", "config")); cfg != "" {
		t.Fatalf("a refused config was stored: %q", cfg)
	}
	testenv.Shell("echo 'echo still-$((3*3))' > " + d.Inst("vm", "console"))
	d.WaitLog("vm", "still-9", 1, 30*time.Second)
	testenv.Shell("echo kill > " + d.Inst("vm", "ctl"))
}

// writeStream writes prefix and then up to n bytes of 'x' in 1 MiB writes,
// stopping at the first error, as `cat bigfile > file` would.
func writeStream(path, prefix string, n int) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.Write([]byte(prefix)); err != nil {
		return err
	}
	chunk := []byte(strings.Repeat("x", 1<<20))
	for done := 0; done < n; done += len(chunk) {
		if _, err := f.Write(chunk); err != nil {
			return err
		}
	}
	return f.Close()
}

func samePIDs(a, b string) bool {
	pick := func(s string) string {
		var keep []string
		for _, l := range strings.Split(s, "\n") {
			if strings.Contains(l, "pid") {
				keep = append(keep, strings.TrimSpace(l))
			}
		}
		return strings.Join(keep, ",")
	}
	return pick(a) != "" && pick(a) == pick(b)
}

// A missing guest kernel puts the instance in error with the way out.
func TestMissingKernel(t *testing.T) {
	testenv.Require(t)
	d := testenv.NewDaemon(t)
	d.Stop()
	d.Kernels = t.TempDir()
	d.Start()
	os.Mkdir(d.Path("instances", "nok"), 0o755)
	if err := os.WriteFile(d.Inst("nok", "config"), []byte("{}"), 0o644); err != nil {
		t.Fatalf("config write: %v", err)
	}
	d.WaitStatus("nok", "error", 30*time.Second)
	if msg := d.Read(d.Inst("nok", "error")); !strings.Contains(msg, "make deps") || !strings.Contains(msg, "kernel") {
		t.Fatalf("error = %q; want it to name the kernel and make deps", msg)
	}
	if err := os.Remove(d.Path("instances", "nok")); err != nil {
		t.Fatal(err)
	}
}

// Without QEMU the instance goes to error, naming QEMU and make deps.
func TestMissingQEMU(t *testing.T) {
	testenv.Require(t)
	d := testenv.NewDaemon(t)
	d.Stop()
	// A PATH with fusermount3 (for the mount) but no QEMU.
	bin := t.TempDir()
	fm, err := exec.LookPath("fusermount3")
	if err != nil {
		t.Skip("no fusermount3")
	}
	os.Symlink(fm, filepath.Join(bin, "fusermount3"))
	d.SetEnv("PATH=" + bin)
	d.Start()
	os.Mkdir(d.Path("instances", "noq"), 0o755)
	if err := os.WriteFile(d.Inst("noq", "config"), []byte("{}"), 0o644); err != nil {
		t.Fatalf("config write: %v", err)
	}
	d.WaitStatus("noq", "error", 30*time.Second)
	if msg := d.Read(d.Inst("noq", "error")); !strings.Contains(msg, "qemu") || !strings.Contains(msg, "make deps") {
		t.Fatalf("error = %q; want it to name QEMU and make deps", msg)
	}
	if err := os.Remove(d.Path("instances", "noq")); err != nil {
		t.Fatal(err)
	}
}
