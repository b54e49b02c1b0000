package ninep

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"

	"hypefs/internal/testenv"
)

// A real daemon serving FUSE and 9P: the life of a VM driven over 9P,
// and seen on the FUSE side at once.
func TestDaemonOver9P(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "9p.sock")
	d := testenv.NewDaemonWith(t, "--9p", "unix:"+sock)
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("9p socket: %v %v", fi, err)
	}
	root := Dial(t, "unix:"+sock)

	top := strings.Join(names(t, root, ""), " ")
	for _, want := range []string{"README", "host", "instances", "version"} {
		if !strings.Contains(" "+top+" ", " "+want+" ") {
			t.Fatalf("root lists %q, lacks %s", top, want)
		}
	}
	if v := readAll(t, root, "version"); v != d.Read(d.Path("version")) {
		t.Fatalf("version over 9P %q, over FUSE %q", v, d.Read(d.Path("version")))
	}

	const n = "nine"
	// Automation watching the FUSE side learns of what 9P does.
	w, err := fsnotify.NewWatcher()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := w.Add(d.Path("instances")); err != nil {
		t.Fatal(err)
	}
	inst := walk(t, root, "instances")
	if _, err := inst.Mkdir(n, 0o755, 0, 0); err != nil {
		t.Fatalf("mkdir over 9P: %v", err)
	}
	testenv.WaitNotify(t, w, d.Path("instances", n), fsnotify.Create)
	if err := w.Add(d.Inst(n, "status")); err != nil {
		t.Fatal(err)
	}
	// Seen on the FUSE side at once.
	if st := d.Status(n); st != "new" {
		t.Fatalf("FUSE status of an instance made over 9P = %q", st)
	}
	_, err = inst.Mkdir(n, 0o755, 0, 0)
	wantErrno(t, "mkdir of an existing name", err, linux.EEXIST)
	_, err = inst.Mkdir("Bad!", 0o755, 0, 0)
	wantErrno(t, "mkdir of a bad name", err, linux.EINVAL)
	if got := names(t, root, "instances"); len(got) != 1 || got[0] != n {
		t.Fatalf("instances lists %v", got)
	}
	status := func() string { return strings.TrimSpace(readAll(t, root, "instances/"+n+"/status")) }
	if st := status(); st != "new" {
		t.Fatalf("status = %q", st)
	}

	// Config as `echo '{}' > config` sends it: open, truncate, write.
	cfg := open(t, root, "instances/"+n+"/config", p9.WriteOnly)
	if err := cfg.SetAttr(p9.SetAttrMask{Size: true}, p9.SetAttr{}); err != nil {
		t.Fatalf("truncate config: %v", err)
	}
	if _, err := cfg.WriteAt([]byte("{}\n"), 0); err != nil {
		t.Fatalf("write config: %v (error: %s)", err, readAll(t, root, "instances/"+n+"/error"))
	}
	cfg.Close()
	if st := status(); st != "booting" && st != "running" {
		t.Fatalf("status right after config = %q", st)
	}
	if !testenv.WaitFor(90*time.Second, func() bool { return status() == "running" }) {
		t.Fatalf("status %q after 90 s; error %q", status(), readAll(t, root, "instances/"+n+"/error"))
	}
	if !testenv.WaitFor(10*time.Second, func() bool {
		return strings.Contains(readAll(t, root, "instances/"+n+"/log"), "hypefs: guest ready")
	}) {
		t.Fatalf("log over 9P lacks the ready line: %q", readAll(t, root, "instances/"+n+"/log"))
	}

	ctl := func(cmd string) error {
		f := open(t, root, "instances/"+n+"/ctl", p9.WriteOnly)
		defer f.Close()
		if err := f.SetAttr(p9.SetAttrMask{Size: true}, p9.SetAttr{}); err != nil {
			return err
		}
		_, err := f.WriteAt([]byte(cmd+"\n"), 0)
		return err
	}
	// Drop the wakes of earlier state changes: only the pause's counts below.
	for drained := false; !drained; {
		select {
		case <-w.Events:
		case <-time.After(300 * time.Millisecond):
			drained = true
		}
	}
	if err := ctl("pause"); err != nil {
		t.Fatalf("pause: %v", err)
	}
	if st := status(); st != "paused" {
		t.Fatalf("status after pause = %q", st)
	}
	if st := d.Status(n); st != "paused" {
		t.Fatalf("FUSE status after pause over 9P = %q", st)
	}
	testenv.WaitNotify(t, w, d.Inst(n, "status"), fsnotify.Chmod)
	wantErrno(t, "bad ctl word", ctl("explode"), linux.EINVAL)
	if e := readAll(t, root, "instances/"+n+"/error"); !strings.Contains(e, "explode") {
		t.Fatalf("error after a bad ctl word = %q", e)
	}
	wantErrno(t, "pause of a paused VM", ctl("pause"), linux.EBUSY)
	if err := ctl("resume"); err != nil {
		t.Fatalf("resume: %v", err)
	}

	// The console over 9P: what is written is typed into the guest's
	// shell; the answer comes back on a live read.
	con := open(t, root, "instances/"+n+"/console", p9.ReadWrite)
	if _, err := con.WriteAt([]byte("echo nine-$((6*7))\n"), 0); err != nil {
		t.Fatalf("console write: %v", err)
	}
	var seen strings.Builder
	buf := make([]byte, 8192)
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(seen.String(), "nine-42") {
		if time.Now().After(deadline) {
			t.Fatalf("console over 9P never showed the answer; saw %q", seen.String())
		}
		k, err := con.ReadAt(buf, 0)
		seen.Write(buf[:k])
		if err != nil && !errors.Is(err, linux.EINTR) && !errors.Is(err, linux.EAGAIN) {
			t.Fatalf("console read: %v", err)
		}
	}
	con.Close()

	// rmdir of a running VM: EBUSY; kill then rmdir.
	wantErrno(t, "rmdir of a running VM", inst.UnlinkAt(n, atRemoveDir), linux.EBUSY)
	if err := ctl("kill"); err != nil {
		t.Fatalf("kill: %v", err)
	}
	if st := status(); st != "stopped" {
		t.Fatalf("status after kill = %q", st)
	}
	// A console opened on a stopped VM ends at once.
	con = open(t, root, "instances/"+n+"/console", p9.ReadOnly)
	if _, err := con.ReadAt(buf, 0); err != io.EOF {
		t.Fatalf("console read of a stopped VM: %v, want EOF", err)
	}
	con.Close()
	if err := inst.UnlinkAt(n, atRemoveDir); err != nil {
		t.Fatalf("rmdir over 9P: %v", err)
	}
	// The FUSE side caches instance names and learns of changes made
	// elsewhere from the daemon's waker (DESIGN 2.3), within moments.
	start := time.Now()
	if !testenv.WaitFor(2*time.Second, func() bool {
		_, err := os.Stat(d.Path("instances", n))
		return errors.Is(err, os.ErrNotExist)
	}) {
		t.Fatal("FUSE still shows the instance removed over 9P after 2 s")
	}
	t.Logf("FUSE saw the rmdir made over 9P after %s", time.Since(start))
	testenv.WaitNotify(t, w, d.Path("instances", n), fsnotify.Remove)
	_, _, err = root.Walk([]string{"instances", n})
	wantErrno(t, "walk to a removed instance", err, linux.ENOENT)
}

// `hypefs serve --9p`: the tree over 9P only, no FUSE mount; SIGTERM ends
// it and removes the socket.
func TestServeOnly(t *testing.T) {
	testenv.Require(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "9p.sock")
	cmd := exec.Command(filepath.Join(testenv.Bins(t), "hypefs"), "serve", "--9p", "unix:"+sock,
		"--data", filepath.Join(dir, "data"), "--run", filepath.Join(dir, "run"), "--kernels", testenv.Kernels(), "--network", "off")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	if !testenv.WaitFor(20*time.Second, func() bool { _, err := os.Stat(sock); return err == nil }) {
		t.Fatalf("no 9p socket; output:\n%s", out.String())
	}
	root := Dial(t, "unix:"+sock)
	if _, err := walk(t, root, "instances").Mkdir("solo", 0o755, 0, 0); err != nil {
		t.Fatal(err)
	}
	if st := readAll(t, root, "instances/solo/status"); st != "new\n" {
		t.Fatalf("status = %q", st)
	}
	if err := walk(t, root, "instances").UnlinkAt("solo", atRemoveDir); err != nil {
		t.Fatal(err)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("hypefs serve exited with %v; output:\n%s", err, out.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("hypefs serve still runs 10 s after SIGTERM (a client is still connected); output:\n%s", out.String())
	}
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket left after exit: %v", err)
	}
}
