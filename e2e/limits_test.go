package e2e

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"hypefs/internal/test9p"
	"hypefs/internal/testenv"
	"hypefs/internal/testimage"
)

// One daemon per data directory: a second mount or serve on it refuses
// with a sentence naming the first, and leaves the first working.
func TestTwoDaemons(t *testing.T) {
	d := testenv.NewDaemon(t)
	bin := filepath.Join(testenv.Bins(t), "hypefs")
	mnt2, run2 := filepath.Join(d.Dir, "mnt2"), filepath.Join(d.Dir, "run2")
	for _, args := range [][]string{
		{"mount", "--data", d.Data, "--run", run2, "--network", "off", mnt2},
		{"serve", "--data", d.Data, "--run", run2, "--network", "off", "--9p", "unix:" + filepath.Join(d.Dir, "second.sock")},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
		cancel()
		if err == nil || !strings.Contains(string(out), "another hypefs (pid ") || !strings.Contains(string(out), d.Data) {
			t.Errorf("hypefs %s on a data directory in use: %v\n%s", args[0], err, out)
		}
	}
	if err := os.Mkdir(d.Path("instances", "still"), 0o755); err != nil {
		t.Fatalf("the first daemon after the refusals: %v", err)
	}
}

// Instance names that are also names the daemon keeps in its run root (a
// 9P socket there, the namespaces i/ and h/, the lock) boot side by side
// with the daemon's own files, and a 63-character name too.
func TestNameClashes(t *testing.T) {
	d := testenv.NewDaemonWith(t, "--9p", "unix:{run}/9p.sock")
	run, sock := d.Run, filepath.Join(d.Run, "9p.sock")
	long := strings.Repeat("h", 63)
	names := []string{"9p.sock", "i", "h", "lock", long}
	for _, n := range names {
		if err := os.Mkdir(d.Path("instances", n), 0o755); err != nil {
			t.Fatalf("mkdir %s: %v", n, err)
		}
	}
	for _, n := range []string{"9p.sock", "i", long} {
		write(t, d.Inst(n, "config"), "{}")
	}
	for _, n := range []string{"9p.sock", "i", long} {
		d.WaitStatus(n, "running", 90*time.Second)
	}
	// The daemon's socket is still its own and still answers.
	if fi, err := os.Lstat(sock); err != nil || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("9P socket: %v %v", fi, err)
	}
	root, err := test9p.DialAs(t, "unix:"+sock, 0)
	if err != nil {
		t.Fatalf("9P after the clashing boots: %v", err)
	}
	if err := p9read("instances/9p.sock/status")(root); err != nil {
		t.Errorf("9P read of 9p.sock's status: %v", err)
	}
	for _, n := range []string{"9p.sock", "i", long} {
		rd := d.RunDir(n)
		if rel, _ := filepath.Rel(run, rd); !strings.HasPrefix(rel, "i/") && !strings.HasPrefix(rel, "h/") {
			t.Errorf("%s runs in %s, outside the run root's namespaces", n, rd)
		}
		write(t, d.Inst(n, "ctl"), "kill")
	}
	for _, n := range names {
		if err := os.Remove(d.Path("instances", n)); err != nil {
			t.Errorf("rmdir %s: %v", n, err)
		}
	}
	if _, err := os.Lstat(sock); err != nil {
		t.Errorf("9P socket gone after the instances were removed: %v", err)
	}
}

// Images as real registries hold them run as Docker runs them: FROM
// scratch with one static binary and no /etc/passwd as uid 0; a numeric
// USER without a passwd entry as that uid (and gid, or 0).
func TestImageShapes(t *testing.T) {
	host := registry(t)
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Skip("needs /bin/busybox (busybox-static)")
	}
	scratch := testimage.Layer([]testimage.File{{Name: "busybox", Mode: 0o755, Data: bb}})
	shapes := []struct {
		name, user, want string
	}{
		{"scratch", "", "uid=0 gid=0"},
		{"numeric", "1234:5678", "uid=1234 gid=5678"},
		{"uidonly", "4321", "uid=4321 gid=0"},
	}
	d := testenv.NewDaemon(t)
	for _, s := range shapes {
		img, err := testimage.Image(v1.Config{Entrypoint: []string{"/busybox"}, Cmd: []string{"id"}, User: s.user}, scratch)
		if err != nil {
			t.Fatal(err)
		}
		ref := host + "/shapes/" + s.name + ":1"
		testimage.Push(t, ref, img)
		if err := os.Mkdir(d.Path("instances", s.name), 0o755); err != nil {
			t.Fatal(err)
		}
		write(t, d.Inst(s.name, "config"), `{"image":"`+ref+`"}`)
	}
	for _, s := range shapes {
		d.WaitStatus(s.name, "stopped", 3*time.Minute)
		log := d.Read(d.Inst(s.name, "log"))
		if !strings.Contains(log, s.want) {
			t.Errorf("%s (USER %q): log lacks %q; tail:\n%s", s.name, s.user, s.want, log[max(0, len(log)-600):])
		}
		checkExit(t, d, s.name, 0)
	}
}

// A guest that floods its console past the cap: the log stays under it,
// keeps its newest lines behind a note saying what was dropped, and
// tail -f goes on following it; the VM, the shim and the daemon go on.
func TestConsoleFlood(t *testing.T) {
	d := testenv.NewDaemonWith(t, "--log-max", "1M")
	d.Boot("flood", "{}")
	tail := exec.Command("tail", "-F", "-n", "0", d.Inst("flood", "log"))
	out, err := tail.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := tail.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { tail.Process.Kill(); tail.Wait() }()
	seen := make(chan string, 1024)
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			if l := sc.Text(); strings.Contains(l, "flood-2-done") || strings.Contains(l, "[hypefs: ") {
				select {
				case seen <- l:
				default:
				}
			}
		}
	}()
	// About 1.5 MiB of console output (past the cap once), then a last line.
	write(t, d.Inst("flood", "console"), "i=0; while [ $i -lt 16000 ]; do echo flood-line-$i-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx; i=$((i+1)); done; echo flood-$((1+1))-done\n")
	deadline := time.After(3 * time.Minute)
	var note, done bool
	for !done {
		select {
		case l := <-seen:
			note = note || strings.Contains(l, "dropped from the start of this log")
			done = strings.Contains(l, "flood-2-done")
		case <-deadline:
			fi, _ := os.Stat(filepath.Join(d.Data, "instances", "flood", "console.log"))
			t.Fatalf("tail -f did not see the flood's end in 3 minutes (note seen: %v; log %v bytes)", note, fi.Size())
		}
	}
	if !note {
		t.Errorf("tail -f never saw the note line of a drop")
	}
	fi, err := os.Stat(filepath.Join(d.Data, "instances", "flood", "console.log"))
	if err != nil || fi.Size() > 1<<20+4096 {
		t.Fatalf("console.log is %v bytes (cap 1 MiB): %v", fi.Size(), err)
	}
	log := d.Read(d.Inst("flood", "log"))
	first, _, _ := strings.Cut(log, "\n")
	if !strings.HasPrefix(first, "[hypefs: ") || !strings.Contains(first, "dropped from the start of this log") {
		t.Errorf("the log's first line is not the note: %q", first)
	}
	if d.Status("flood") != "running" {
		t.Errorf("status after the flood: %s", d.Status("flood"))
	}
	write(t, d.Inst("flood", "console"), "echo after-$((6*7))\n")
	d.WaitLog("flood", "after-42", 1, 30*time.Second)

	// A guest that stops reading its console (paused: its serial port
	// takes nothing): typing into it fails after a few seconds with EIO
	// and a sentence, and meanwhile the daemon answers at once.
	write(t, d.Inst("flood", "ctl"), "pause")
	typed := make(chan string, 1)
	go func() {
		typed <- testenv.Errno(testenv.Shell("head -c 4M /dev/zero | tr '\\0' x > " + d.Inst("flood", "console")))
	}()
	for k := 0; k < 5; k++ {
		t0 := time.Now()
		if st := d.Status("flood"); st != "paused" {
			t.Errorf("status while typing into a paused guest: %q", st)
		}
		if dt := time.Since(t0); dt > time.Second {
			t.Errorf("reading status took %v while the console was blocked", dt)
		}
		time.Sleep(time.Second)
	}
	select {
	case e := <-typed:
		if e != "EIO" {
			t.Errorf("typing into a guest that does not read: %q, want EIO", e)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("typing into a guest that does not read still blocks after 60 s")
	}
	if msg := d.Read(d.Inst("flood", "error")); !strings.Contains(msg, "stopped reading its console") {
		t.Errorf("error after the blocked typing: %q", msg)
	}
	// Resumed, the guest takes what was typed (its shell echoes a long
	// line of x) and runs on.
	write(t, d.Inst("flood", "ctl"), "resume")
	d.WaitLog("flood", strings.Repeat("x", 80), 1, 30*time.Second)
	if st := d.Status("flood"); st != "running" {
		t.Errorf("status after resume: %q", st)
	}
}

// The host's disk fills under a guest: QEMU stops the VM on the failed
// write and it shows paused, with a sentence in error; writes that need
// the daemon's state on disk fail instead of claiming success; once space
// is freed, resume lets the guest finish.
func TestDiskFull(t *testing.T) {
	testenv.Require(t)
	host := registry(t)
	pushSmall(t, host+"/fill/app:1")
	dir, err := os.MkdirTemp("", "hfsfull")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	data := filepath.Join(dir, "data")
	os.Mkdir(data, 0o700)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=160m,mode=0700", "tmpfs", data).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs: %v %s", err, out)
	}
	defer exec.Command("umount", "-l", data).Run()
	// An explicit --max-disk: the default, the free space, would refuse a
	// disk larger than what is left, and the test wants the guest to fill it.
	d := testenv.NewDaemonWith(t, "--data", data, "--max-disk", "1G")
	d.Boot("base", "{}") // an instance whose state must survive the full disk
	if err := os.Mkdir(d.Path("instances", "filler"), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := testenv.Shell("echo pull " + host + "/fill/app:1 > " + d.Path("images", "ctl")); err != nil {
		t.Fatalf("pull: %v %s", err, out)
	}
	// Ballast leaves about 24 MiB; the guest writes 40.
	var st syscall.Statfs_t
	syscall.Statfs(data, &st)
	ballast := filepath.Join(data, "ballast")
	if free := int64(st.Bavail) * int64(st.Bsize); free > 24<<20 {
		exec.Command("dd", "if=/dev/zero", "of="+ballast, "bs=1M", fmt.Sprint("count=", (free-(24<<20))>>20)).Run()
	}
	write(t, d.Inst("filler", "config"), `{"image":"`+host+`/fill/app:1","disk":"256M","entrypoint":["/bin/sh","-c"],`+
		`"cmd":["dd if=/dev/zero of=/big bs=1M count=40 conv=fsync; echo fill-done; sleep 600"]}`)
	d.WaitStatus("filler", "paused", 3*time.Minute)
	msg := d.Read(d.Inst("filler", "error"))
	if !strings.Contains(msg, "disk is full") || !strings.Contains(msg, "resume") {
		t.Errorf("error of the paused VM: %q", msg)
	}
	// The daemon's own writes fail rather than pretend: a mkdir and a
	// config need state on disk.
	if e := testenv.Errno(testenv.Shell("mkdir " + d.Path("instances", "more"))); e != "ENOSPC" {
		t.Errorf("mkdir on a full disk: %q, want ENOSPC", e)
	}
	write(t, d.Inst("base", "ctl"), "kill")
	if e := testenv.Errno(testenv.Shell("echo '{\"cpus\":1}' > " + d.Inst("base", "config"))); e != "ENOSPC" {
		t.Errorf("config on a full disk: %q, want ENOSPC (error: %s)", e, d.Read(d.Inst("base", "error")))
	}
	if msg := d.Read(d.Inst("base", "error")); !strings.Contains(msg, "full") {
		t.Errorf("base's error after the refused config: %q", msg)
	}
	// Space comes back; resume lets the guest finish its write.
	os.Remove(ballast)
	deadline := time.Now().Add(2 * time.Minute)
	for !strings.Contains(d.Read(d.Inst("filler", "log")), "fill-done") && time.Now().Before(deadline) {
		if d.Status("filler") == "paused" {
			testenv.Shell("echo resume > " + d.Inst("filler", "ctl"))
		}
		time.Sleep(500 * time.Millisecond)
	}
	if !strings.Contains(d.Read(d.Inst("filler", "log")), "fill-done") {
		t.Fatalf("the guest did not finish after space was freed; status %s, error %q", d.Status("filler"), d.Read(d.Inst("filler", "error")))
	}
	if st := d.Status("filler"); st != "running" {
		t.Errorf("status after the resume: %s", st)
	}
	write(t, d.Inst("filler", "ctl"), "kill")
}
