// Package e2e drives hypefs as its users do: a real daemon on a real FUSE
// mount, real shims, real QEMU guests, shell commands and plain file I/O.
package e2e

import (
	"bufio"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"

	"hypefs/internal/testenv"
)

// The life of one VM, the way the README shows it.
func TestLifecycle(t *testing.T) {
	d := testenv.NewDaemon(t)
	const n = "hello"
	if _, err := testenv.Shell("mkdir " + d.Path("instances", n)); err != nil {
		t.Fatal(err)
	}
	if got := d.Status(n); got != "new" {
		t.Fatalf("status after mkdir = %q, want new", got)
	}
	if out, err := testenv.Shell("echo '{}' > " + d.Inst(n, "config")); err != nil {
		t.Fatalf("echo '{}' > config: %v %s", err, out)
	}
	if st := d.Status(n); st != "booting" && st != "running" {
		t.Fatalf("status right after config = %q, want booting", st)
	}
	d.WaitStatus(n, "running", 90*time.Second)
	d.WaitLog(n, "hypefs: guest ready", 1, time.Second)

	// The normalized config reads back with defaults filled in.
	var cfg map[string]any
	if err := json.Unmarshal([]byte(d.Read(d.Inst(n, "config"))), &cfg); err != nil {
		t.Fatalf("config does not read back as JSON: %v", err)
	}
	if cfg["memory"] != "256M" || cfg["cpus"] != float64(1) || cfg["accel"] != "auto" {
		t.Fatalf("normalized config = %v", cfg)
	}

	// Console: what is written is typed into the guest's shell; the
	// answer shows in log, and in a live reader of console.
	con, err := os.Open(d.Inst(n, "console"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := testenv.Shell("echo 'echo hi-$((6*7))' > " + d.Inst(n, "console")); err != nil {
		t.Fatal(err)
	}
	d.WaitLog(n, "hi-42", 1, 30*time.Second)
	got := make(chan string, 1)
	go func() {
		r := bufio.NewReader(con)
		for {
			l, err := r.ReadString('\n')
			if strings.Contains(l, "hi-42") || err != nil {
				got <- l
				return
			}
		}
	}()
	select {
	case l := <-got:
		if !strings.Contains(l, "hi-42") {
			t.Fatalf("console reader got %q", l)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("live console reader saw no answer")
	}
	con.Close()

	// uname, as the README shows.
	testenv.Shell("echo 'uname -r' > " + d.Inst(n, "console"))
	d.WaitLog(n, "-amd64", 1, 30*time.Second)

	// pause / resume.
	ctl := func(cmd string) {
		t.Helper()
		if out, err := testenv.Shell("echo " + cmd + " > " + d.Inst(n, "ctl")); err != nil {
			t.Fatalf("echo %s > ctl: %v %s (error: %s)", cmd, err, out, d.Read(d.Inst(n, "error")))
		}
	}
	ctl("pause")
	if st := d.Status(n); st != "paused" {
		t.Fatalf("status after pause = %q", st)
	}
	if cmds := d.Read(d.Inst(n, "ctl")); !strings.Contains(cmds, "resume") || strings.Contains(cmds, "pause") {
		t.Fatalf("ctl of a paused VM lists %q", cmds)
	}
	// A paused guest does not answer.
	testenv.Shell("echo 'echo while-paused-$((1+1))' > " + d.Inst(n, "console"))
	time.Sleep(500 * time.Millisecond)
	if strings.Contains(d.Read(d.Inst(n, "log")), "while-paused-2") {
		t.Fatal("a paused guest ran a command")
	}
	ctl("resume")
	if st := d.Status(n); st != "running" {
		t.Fatalf("status after resume = %q", st)
	}
	d.WaitLog(n, "while-paused-2", 1, 30*time.Second)

	// reboot: the guest comes up again.
	ctl("reboot")
	d.WaitLog(n, "hypefs: guest ready", 2, 90*time.Second)
	d.WaitStatus(n, "running", 10*time.Second)

	// rmdir of a running VM is refused.
	if err := syscall.Rmdir(d.Path("instances", n)); err != syscall.EBUSY {
		t.Fatalf("rmdir of a running VM: %v, want EBUSY", err)
	}

	// shutdown: the ACPI power button; the guest powers off.
	ctl("shutdown")
	d.WaitStatus(n, "stopped", 30*time.Second)
	var info struct {
		State string `json:"state"`
		Exit  struct {
			Reason  string `json:"reason"`
			Crashed bool   `json:"crashed"`
		} `json:"exit"`
	}
	if err := json.Unmarshal([]byte(d.Read(d.Inst(n, "info"))), &info); err != nil {
		t.Fatal(err)
	}
	if info.Exit.Reason != "guest powered off" || info.Exit.Crashed {
		t.Fatalf("exit after shutdown = %+v", info.Exit)
	}
	// shutdown and kill of a stopped VM succeed and do nothing.
	ctl("shutdown")
	ctl("kill")

	// start again, then kill.
	ctl("start")
	d.WaitStatus(n, "running", 90*time.Second)
	ctl("kill")
	if st := d.Status(n); st != "stopped" {
		t.Fatalf("status after kill = %q", st)
	}
	if err := os.Remove(d.Path("instances", n)); err != nil {
		t.Fatalf("rmdir after kill: %v", err)
	}
	if _, err := os.Stat(d.Path("instances", n)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("instance still there after rmdir: %v", err)
	}
	assertNothingLeft(t, d)
}

// assertNothingLeft checks that no process, socket or file of a VM remains.
func assertNothingLeft(t *testing.T, d *testenv.Daemon) {
	t.Helper()
	if !testenv.WaitFor(5*time.Second, func() bool { return len(testenv.Processes(d.Run+"/")) == 0 }) {
		t.Fatalf("processes left running: %v", testenv.Processes(d.Run+"/"))
	}
	var left []string
	filepath.Walk(d.Run, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			left = append(left, p)
		}
		return nil
	})
	if len(left) > 0 {
		t.Fatalf("files left under the run dir: %v", left)
	}
	ents, _ := os.ReadDir(filepath.Join(d.Data, "instances"))
	if len(ents) > 0 {
		t.Fatalf("instance data left: %v", ents)
	}
}

// kill -9 of the daemon: mounting again finds the VM where it was.
func TestDaemonRestart(t *testing.T) {
	d := testenv.NewDaemon(t)
	d.Boot("keep", "{}")
	before := d.Read(d.Inst("keep", "info"))
	d.Kill()
	if _, err := os.Stat(d.Path("version")); err == nil {
		t.Fatal("mount still answers after kill -9 of the daemon")
	}
	// The VM runs on without the daemon; what it prints meanwhile is not
	// lost. (Typed through the shim's own console socket: no daemon.)
	con, err := net.Dial("unix", filepath.Join(d.RunDir("keep"), "console.sock"))
	if err != nil {
		t.Fatal(err)
	}
	con.Write([]byte("echo while-down-$((20+3))\n"))
	time.Sleep(2 * time.Second)
	con.Close()
	d.Start()
	d.WaitLog("keep", "while-down-23", 1, 10*time.Second)
	if st := d.Status("keep"); st != "running" {
		t.Fatalf("status after restart = %q", st)
	}
	var a, b struct {
		ShimPID, HypervisorPID int `json:"-"`
		S                      int `json:"shim_pid"`
		H                      int `json:"hypervisor_pid"`
	}
	json.Unmarshal([]byte(before), &a)
	json.Unmarshal([]byte(d.Read(d.Inst("keep", "info"))), &b)
	if a.S == 0 || a.S != b.S || a.H != b.H {
		t.Fatalf("pids changed across restart: %+v -> %+v", a, b)
	}
	testenv.Shell("echo 'echo back-$((40+2))' > " + d.Inst("keep", "console"))
	d.WaitLog("keep", "back-42", 1, 30*time.Second)

	// SIGTERM: the daemon unmounts and exits; the VM keeps running.
	d.Stop()
	if _, err := os.Stat(d.Path("version")); err == nil {
		t.Fatal("still mounted after SIGTERM")
	}
	if len(testenv.Processes(d.Run+"/")) == 0 {
		t.Fatal("the VM ended with the daemon")
	}
	d.Start()
	if st := d.Status("keep"); st != "running" {
		t.Fatalf("status after second restart = %q", st)
	}
	testenv.Shell("echo kill > " + d.Inst("keep", "ctl"))
	if err := os.Remove(d.Path("instances", "keep")); err != nil {
		t.Fatal(err)
	}
	assertNothingLeft(t, d)
}

// kill -9 of QEMU, and of a shim: the instance says crashed, and why.
func TestCrash(t *testing.T) {
	d := testenv.NewDaemon(t)
	for _, victim := range []string{"hypervisor_pid", "shim_pid"} {
		n := strings.ReplaceAll(victim, "_", "-")
		d.Boot(n, "{}")
		var info map[string]any
		json.Unmarshal([]byte(d.Read(d.Inst(n, "info"))), &info)
		pid := int(info[victim].(float64))
		// Automation learns of it: an event line and an inotify wake.
		events, err := os.Open(d.Inst(n, "events"))
		if err != nil {
			t.Fatal(err)
		}
		w, err := fsnotify.NewWatcher()
		if err != nil {
			t.Fatal(err)
		}
		w.Add(d.Inst(n, "status"))
		syscall.Kill(pid, syscall.SIGKILL)
		d.WaitStatus(n, "crashed", 2*time.Second)
		testenv.WaitNotify(t, w, d.Inst(n, "status"), fsnotify.Chmod)
		w.Close()
		line := make([]byte, 4096)
		k, _ := events.Read(line)
		events.Close()
		if !strings.Contains(string(line[:k]), n+" crashed") {
			t.Fatalf("%s: events file shows %q, want a crashed line", n, line[:k])
		}
		if e := d.Read(d.Inst(n, "error")); e == "" {
			t.Fatalf("%s: crashed with an empty error file", n)
		}
		if err := os.Remove(d.Path("instances", n)); err != nil {
			t.Fatalf("rmdir of a crashed instance: %v", err)
		}
	}
	assertNothingLeft(t, d)
}
