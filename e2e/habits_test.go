package e2e

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"hypefs/internal/testenv"
)

// 1. A reader of log sees the log it opened, whenever it was opened:
// tail -f and tail -F started before the first boot follow it.
func TestHabitFollowFirstBoot(t *testing.T) {
	needTools(t, "tail")
	d := testenv.NewDaemon(t)
	if err := os.Mkdir(d.Path("instances", "m1"), 0o755); err != nil {
		t.Fatal(err)
	}
	logp := d.Inst("m1", "log")
	tf := startBackground(t, "tail -f "+logp)
	tF := startBackground(t, "tail -F "+logp)
	early, err := os.Open(logp) // a program's own reader, opened before the boot
	if err != nil {
		t.Fatal(err)
	}
	defer early.Close()
	time.Sleep(300 * time.Millisecond)
	mustRun(t, 10*time.Second, "echo '{}' > "+d.Inst("m1", "config"))
	d.WaitStatus("m1", "running", 90*time.Second)
	tf.waitOutput(t, "hypefs: guest ready", 1, 20*time.Second)
	tF.waitOutput(t, "hypefs: guest ready", 1, 20*time.Second)
	var all []byte
	b := make([]byte, 64<<10)
	for k := 0; k < 100 && !strings.Contains(string(all), "hypefs: guest ready"); k++ {
		n, _ := early.Read(b)
		all = append(all, b[:n]...)
		if n == 0 {
			time.Sleep(50 * time.Millisecond)
		}
	}
	if !strings.Contains(string(all), "hypefs: guest ready") {
		fi, _ := early.Stat()
		t.Fatalf("a reader opened before the boot read %d bytes (fstat says %d), without the ready line", len(all), fi.Size())
	}
	// And what the guest prints later reaches both tails.
	mustRun(t, 10*time.Second, "echo 'echo later-$((6*7))' > "+d.Inst("m1", "console"))
	tf.waitOutput(t, "later-42", 1, 30*time.Second)
	tF.waitOutput(t, "later-42", 1, 30*time.Second)
	ctl(t, d, "m1", "kill")
}

// 2. Copying, archiving and searching finish; following stays one command.
// Long: it runs each tool of the habit in turn over the same two instances
// (booting them is what costs), then the followers that must still work.
func TestHabitCopyArchiveSearch(t *testing.T) {
	needTools(t, "cp", "tar", "zip", "rsync", "grep", "find", "wc", "du", "gio", "python3")
	d := testenv.NewDaemon(t)
	stopped(t, d, "off", "{}")
	d.Boot("on", "{}")
	dst := t.TempDir()
	const limit = 30 * time.Second
	for _, name := range []string{"off", "on"} {
		dir := d.Path("instances", name)
		mustRun(t, limit, fmt.Sprintf("cp -r %s %s/cp-r-%s", dir, dst, name))
		mustRun(t, limit, fmt.Sprintf("cp -a %s %s/cp-a-%s", dir, dst, name))
		run(t, limit, fmt.Sprintf("tar czf %s/%s.tgz -C %s %s", dst, name, d.Path("instances"), name)) // finishes; rc checked in 3
		mustRun(t, limit, fmt.Sprintf("cd %s && zip -qr %s/%s.zip %s", d.Path("instances"), dst, name, name))
		mustRun(t, limit, fmt.Sprintf("rsync -a %s/ %s/rsync-%s/", dir, dst, name))
		mustRun(t, limit, "wc -c "+dir+"/*")
		if got := d.Read(filepath.Join(dst, "cp-r-"+name, "log")); !strings.Contains(got, "hypefs: guest ready") {
			t.Fatalf("cp -r of %s copied a log without the boot: %q", name, tailOf(got, 300))
		}
		if _, err := os.Stat(filepath.Join(dst, "rsync-"+name, "config")); err != nil {
			t.Fatalf("rsync of %s: %v", name, err)
		}
		// The streams are not listed, but found by name.
		ents, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			if e.Name() == "console" || e.Name() == "events" {
				t.Fatalf("%s lists the follow file %s", dir, e.Name())
			}
		}
		for _, f := range []string{"console", "events"} {
			if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
				t.Fatalf("stat %s/%s: %v", name, f, err)
			}
		}
	}
	out := mustRun(t, limit, "grep -r 'hypefs: guest ready' "+d.Mnt+"/")
	if !strings.Contains(out, "instances/on/log") {
		t.Fatalf("grep -r did not find the ready line in on/log:\n%s", out)
	}
	mustRun(t, limit, "find "+d.Mnt+" -type f -exec head -c 100 {} \\; > /dev/null")
	mustRun(t, limit, "du -a "+d.Mnt)
	mustRun(t, limit, "ls -lR "+d.Mnt)
	// The GIO walk: a tree listing, then every file's type and content.
	out = mustRun(t, limit, "gio tree -h "+d.Mnt)
	if strings.Contains(out, "console") {
		t.Fatalf("gio tree lists console:\n%s", out)
	}
	var files []string
	filepath.Walk(d.Mnt, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			files = append(files, p)
		}
		return nil
	})
	for _, f := range files {
		mustRun(t, 10*time.Second, "gio info -a standard::content-type "+f+" > /dev/null && gio cat "+f+" > /dev/null")
	}

	// Following stays one command: cat console, cat events, /events.
	con := startBackground(t, "cat "+d.Inst("on", "console"))
	ev := startBackground(t, "cat "+d.Inst("on", "events"))
	all := startBackground(t, "cat "+d.Path("events"))
	time.Sleep(300 * time.Millisecond)
	mustRun(t, 10*time.Second, "echo 'echo followed-$((6*7))' > "+d.Inst("on", "console"))
	con.waitOutput(t, "followed-42", 1, 30*time.Second)
	ctl(t, d, "on", "pause")
	ev.waitOutput(t, "on paused", 1, 10*time.Second)
	all.waitOutput(t, "on paused", 1, 10*time.Second)
	ctl(t, d, "on", "resume")

	// A reader that opens a stream O_NONBLOCK (as Midnight Commander's
	// viewer does) gets what is buffered or EAGAIN, never a blocked read.
	for _, p := range []string{d.Inst("on", "console"), d.Inst("on", "events"), d.Path("events"), d.Inst("off", "events")} {
		out := mustRun(t, 10*time.Second, `python3 - "`+p+`" <<'EOF'
import os, sys, errno
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_NONBLOCK)
try:
    os.read(fd, 4096)
    print("read nothing blocking")
except OSError as e:
    print("errno", errno.errorcode[e.errno])
EOF`)
		if !strings.Contains(out, "EAGAIN") && !strings.Contains(out, "read nothing blocking") {
			t.Fatalf("O_NONBLOCK read of %s: %s", p, out)
		}
	}
	ctl(t, d, "on", "kill")
}

// 2, with a real file manager: Midnight Commander's viewer on console
// shows it and answers its keys instead of freezing in read.
func TestHabitMidnightCommanderViewer(t *testing.T) {
	needTools(t, "mc", "script")
	d := testenv.NewDaemon(t)
	d.Boot("mcv", "{}")
	for _, f := range []string{"console", "log", "events"} {
		// q leaves the viewer; F10 quits if it did not. A viewer stuck in
		// read answers neither and the timeout fails the test.
		line := fmt.Sprintf(`(sleep 2; printf q; sleep 1; printf '\033[21~'; sleep 1) | TERM=xterm HOME=%s script -qefc "mc -v %s" /dev/null > /dev/null`, t.TempDir(), d.Inst("mcv", f))
		mustRun(t, 20*time.Second, line)
	}
	ctl(t, d, "mcv", "kill")
}

// 3. Times are true; an editor's save is applied; tar reads without
// "file changed as we read it".
func TestHabitEditorsAndTimes(t *testing.T) {
	needTools(t, "vim", "ed", "sed", "tar", "stat")
	d := testenv.NewDaemon(t)
	stopped(t, d, "ed1", `{"cpus":1}`)
	dir := d.Path("instances", "ed1")
	stamp := func() string {
		return mustRun(t, 10*time.Second, "cd "+dir+" && stat -c '%n %X %Y %Z' . * console events "+d.Mnt+" "+d.Path("instances")+" "+d.Path("events"))
	}
	before := stamp()
	time.Sleep(1100 * time.Millisecond)
	if after := stamp(); after != before {
		t.Fatalf("times change while nothing changes:\n%s\n%s", before, after)
	}
	for _, l := range strings.Split(strings.TrimSpace(before), "\n") {
		f := strings.Fields(l)
		if f[1] == "0" || f[2] == "0" {
			t.Fatalf("%s: atime or mtime at the epoch: %s", f[0], l)
		}
	}
	mustRun(t, 30*time.Second, "tar czf "+filepath.Join(t.TempDir(), "ed1.tgz")+" -C "+d.Path("instances")+" ed1")

	// vim, as a script runs it: the save is applied.
	home := t.TempDir()
	out, err := run(t, 30*time.Second, `vim -e -s -c '%s/"cpus": 1/"cpus": 2/' -c wq `+d.Inst("ed1", "config")+" < /dev/null", "HOME="+home)
	if err != nil {
		t.Fatalf("vim: %v %s (error: %s)", err, out, d.Read(d.Inst("ed1", "error")))
	}
	if cfg := d.Read(d.Inst("ed1", "config")); !strings.Contains(cfg, `"cpus": 2`) {
		t.Fatalf("vim's save was lost; config:\n%s", cfg)
	}
	// Reading the new config shows a new mtime, once.
	m1 := mustRun(t, 5*time.Second, "stat -c %Y.%y "+d.Inst("ed1", "config"))
	time.Sleep(1100 * time.Millisecond)
	if m2 := mustRun(t, 5*time.Second, "stat -c %Y.%y "+d.Inst("ed1", "config")); m1 != m2 {
		t.Fatalf("config's mtime moves after the save: %s / %s", m1, m2)
	}
	// ed writes in place.
	mustRun(t, 30*time.Second, `printf ',s/"cpus": 2/"cpus": 1/\nw\nq\n' | ed -s `+d.Inst("ed1", "config"))
	if cfg := d.Read(d.Inst("ed1", "config")); !strings.Contains(cfg, `"cpus": 1`) {
		t.Fatalf("ed's save was lost; config:\n%s", cfg)
	}
	// sed -i saves through a temporary file next to config, which the
	// tree cannot hold: it fails loudly, changes nothing, and error says
	// what to use instead.
	out, err = run(t, 30*time.Second, `sed -i 's/"cpus": 1/"cpus": 2/' `+d.Inst("ed1", "config"))
	if err == nil {
		if cfg := d.Read(d.Inst("ed1", "config")); !strings.Contains(cfg, `"cpus": 2`) {
			t.Fatalf("sed -i exited 0 but its change is lost: %s", cfg)
		}
	} else {
		if !strings.Contains(out, "Operation not permitted") {
			t.Fatalf("sed -i failed without saying why: %s", out)
		}
		if cfg := d.Read(d.Inst("ed1", "config")); !strings.Contains(cfg, `"cpus": 1`) {
			t.Fatalf("a failed sed -i changed config: %s", cfg)
		}
		if msg := d.Read(d.Inst("ed1", "error")); !strings.Contains(msg, "temporary") || !strings.Contains(msg, "hint") {
			t.Fatalf("after sed -i the error file says %q; want what to use instead", msg)
		}
	}
	// A state change moves status's and info's mtime, and only then.
	st1 := mustRun(t, 5*time.Second, "stat -c %Y.%y "+d.Inst("ed1", "status")+" "+d.Inst("ed1", "info"))
	ctl(t, d, "ed1", "start")
	d.WaitStatus("ed1", "running", 90*time.Second)
	st2 := mustRun(t, 5*time.Second, "stat -c %Y.%y "+d.Inst("ed1", "status")+" "+d.Inst("ed1", "info"))
	if st1 == st2 {
		t.Fatalf("status and info keep their mtime across a boot: %s", st1)
	}
	time.Sleep(1100 * time.Millisecond)
	if st3 := mustRun(t, 5*time.Second, "stat -c %Y.%y "+d.Inst("ed1", "status")+" "+d.Inst("ed1", "info")); st3 != st2 {
		t.Fatalf("status and info change mtime without a state change: %s / %s", st2, st3)
	}
	ctl(t, d, "ed1", "kill")
}

// 4. fsync and fdatasync succeed on every file, fsync on directories.
func TestHabitFsync(t *testing.T) {
	needTools(t, "dd", "python3")
	d := testenv.NewDaemon(t)
	if err := os.Mkdir(d.Path("instances", "fs1"), 0o755); err != nil {
		t.Fatal(err)
	}
	mustRun(t, 30*time.Second, `printf '{"cpus":1}' | dd of=`+d.Inst("fs1", "config")+` conv=fsync status=none`)
	d.WaitStatus("fs1", "running", 90*time.Second)
	var paths []string
	for _, f := range []string{"config", "ctl", "status", "info", "log", "error", "exit", "vmm.log", "console", "events"} {
		paths = append(paths, d.Inst("fs1", f))
	}
	paths = append(paths, d.Path("README"), d.Path("host"), d.Path("events"))
	script := `
import os, sys
for p in sys.argv[1:]:
    flags = os.O_RDONLY
    if os.path.basename(p) in ("ctl", "config", "console"):
        flags = os.O_RDWR
    fd = os.open(p, flags)
    os.fsync(fd)
    os.fdatasync(fd)
    os.close(fd)
for p in sys.argv[1:]:
    fd = os.open(os.path.dirname(p), os.O_RDONLY | os.O_DIRECTORY)
    os.fsync(fd)
    os.close(fd)
print("ok")
`
	out := mustRun(t, 30*time.Second, "python3 -c '"+script+"' "+strings.Join(paths, " "))
	if !strings.Contains(out, "ok") {
		t.Fatalf("fsync: %s", out)
	}
	ctl(t, d, "fs1", "kill")
}

// 5. ctl takes one command per write: a write holding several fails
// whole, with EINVAL and a sentence saying what to do, and runs nothing.
func TestHabitCtlOneCommandPerWrite(t *testing.T) {
	needTools(t, "python3", "tee")
	d := testenv.NewDaemon(t)
	d.Boot("c5", "{}")
	c := d.Inst("c5", "ctl")
	for _, two := range []string{"pause\nresume\n", "pause\nbogus\n", "pause\r\nreboot\r\n", "pause\n\nkill"} {
		err := pyWrite(t, c, two)
		if !errors.Is(err, syscall.EINVAL) {
			t.Fatalf("one write of %q: %v, want EINVAL", two, err)
		}
		if st := d.Status("c5"); st != "running" {
			t.Fatalf("after the refused write %q the VM is %s", two, st)
		}
		msg := d.Read(d.Inst("c5", "error"))
		if !strings.Contains(msg, "one command per write") || !strings.Contains(msg, "hint") || !strings.Contains(msg, "nothing") {
			t.Fatalf("error after %q: %q; want it to say one command per write, that nothing ran, and what to do", two, msg)
		}
	}
	// What works keeps working: CRLF, spaces, no newline, >>, tee, Python.
	for _, line := range []string{
		"printf 'pause\\r\\n' > " + c, "printf '  resume  ' > " + c,
		"echo pause >> " + c, "echo resume | tee " + c + " > /dev/null",
		"python3 -c 'open(\"" + c + "\", \"w\").write(\"pause\\n\")'",
		"python3 -c 'open(\"" + c + "\", \"a\").write(\"resume\")'",
	} {
		mustRun(t, 30*time.Second, line)
	}
	if st := d.Status("c5"); st != "running" {
		t.Fatalf("after pause/resume pairs the VM is %s", st)
	}
	ctl(t, d, "c5", "kill")
}

// pyWrite writes s with a single write(2) from Python and returns the errno.
func pyWrite(t *testing.T, path, s string) error {
	t.Helper()
	out, _ := run(t, 30*time.Second, `python3 - "`+path+`" <<'EOF'
import os, sys, errno
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_TRUNC)
try:
    os.write(fd, `+pyBytes(s)+`)
    print("ok")
except OSError as e:
    print("errno", errno.errorcode[e.errno])
EOF`)
	switch {
	case strings.Contains(out, "errno EINVAL"):
		return syscall.EINVAL
	case strings.Contains(out, "errno"):
		return fmt.Errorf("%s", strings.TrimSpace(out))
	case strings.Contains(out, "ok"):
		return nil
	}
	return fmt.Errorf("python: %s", out)
}

func pyBytes(s string) string {
	b, _ := json.Marshal(s)
	return string(b) + ".encode()"
}

// 6. A config written in more than one write is one document.
func TestHabitConfigSeveralWrites(t *testing.T) {
	needTools(t, "python3", "jq")
	d := testenv.NewDaemon(t)
	os.Mkdir(d.Path("instances", "c6"), 0o755)
	if out, err := run(t, 30*time.Second, "(echo '{}'; echo) > "+d.Inst("c6", "config")); err != nil {
		t.Fatalf("(echo '{}'; echo) > config: %v %s (error: %q)", err, out, d.Read(d.Inst("c6", "error")))
	}
	if st := d.Status("c6"); st != "booting" && st != "running" {
		t.Fatalf("status %s after a config with a trailing blank line", st)
	}
	ctl(t, d, "c6", "kill")

	// A second document in the same open file: EINVAL, nothing more applied.
	os.Mkdir(d.Path("instances", "c6b"), 0o755)
	out, err := run(t, 30*time.Second, `(echo '{"cpus":1}'; echo '{"cpus":2}') > `+d.Inst("c6b", "config"))
	if err == nil || !strings.Contains(out, "Invalid argument") {
		t.Fatalf("two documents in one open file: %v %s", err, out)
	}
	msg := d.Read(d.Inst("c6b", "error"))
	if !strings.Contains(msg, "more than one JSON value") {
		t.Fatalf("error after two documents: %q", msg)
	}
	for _, r := range msg {
		if r < 0x20 && r != '\n' || r == 0x7f {
			t.Fatalf("error holds a control byte %q: %q", r, msg)
		}
	}
	if cfg := d.Read(d.Inst("c6b", "config")); !strings.Contains(cfg, `"cpus": 1`) {
		t.Fatalf("the first document was not applied, or the second was: %s", cfg)
	}
	ctl(t, d, "c6b", "kill")

	// A document cut short is applied on close.
	os.Mkdir(d.Path("instances", "c6c"), 0o755)
	mustRun(t, 30*time.Second, `python3 -c '
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_TRUNC)
os.write(fd, b"{\"cpus\":")
os.write(fd, b" 1}")
os.close(fd)' `+d.Inst("c6c", "config"))
	if st := d.Status("c6c"); st != "booting" && st != "running" {
		t.Fatalf("a config in two writes: status %s, error %q", st, d.Read(d.Inst("c6c", "error")))
	}
	ctl(t, d, "c6c", "kill")

	// A write past the end leaves a gap: refused, never padded with NULs.
	os.Mkdir(d.Path("instances", "c6d"), 0o755)
	out, err = run(t, 30*time.Second, `python3 -c '
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY)
os.pwrite(fd, b"{}", 10)' `+d.Inst("c6d", "config"))
	if err == nil || !strings.Contains(out, "Invalid argument") {
		t.Fatalf("a write at offset 10 of an empty config: %v %s", err, out)
	}
	if msg := d.Read(d.Inst("c6d", "error")); strings.ContainsRune(msg, 0) || !strings.Contains(msg, "offset") {
		t.Fatalf("error after a gap: %q", msg)
	}
	// What works keeps working: echo bad fails on the write, jq round trips.
	if out, err := run(t, 30*time.Second, "echo bad > "+d.Inst("c6d", "config")); err == nil || !strings.Contains(out, "Invalid argument") {
		t.Fatalf("echo bad > config: %v %s", err, out)
	}
	mustRun(t, 30*time.Second, "jq . "+d.Inst("c6", "config")+" > /dev/null")
	mustRun(t, 30*time.Second, "jq '.cpus = 1' "+d.Inst("c6", "config")+" > "+filepath.Join(t.TempDir(), "x.json"))
}

// 7. A start clears dead mounts of its mountpoint, even under a shell
// that sits inside; a stop leaves no dead mount; a live one is refused.
func TestHabitMountAfterCrash(t *testing.T) {
	d := testenv.NewDaemon(t)
	os.Mkdir(d.Path("instances", "t1"), 0o755)
	inside := startBackground(t, "cd "+d.Path("instances", "t1")+" && sleep 600")
	time.Sleep(300 * time.Millisecond)
	d.Kill()
	d.Start()
	if m := fuseMounts(d.Mnt); len(m) != 1 {
		t.Fatalf("after a crash and a start %d FUSE mounts at %s:\n%s", len(m), d.Mnt, strings.Join(m, "\n"))
	}
	if d.Status("t1") != "new" {
		t.Fatalf("t1 after restart: %q", d.Status("t1"))
	}
	// A second daemon on the live mount is refused with a sentence.
	other, err := os.MkdirTemp("", "hfs")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(other)
	out, err := run(t, 30*time.Second, filepath.Join(testenv.Bins(t), "hypefs")+" mount --network off --data "+other+"/d --run "+other+"/r "+d.Mnt)
	if err == nil || !strings.Contains(out, "already") {
		t.Fatalf("a second daemon on a live mount: %v %s", err, out)
	}
	if m := fuseMounts(d.Mnt); len(m) != 1 {
		t.Fatalf("%d FUSE mounts after a refused second daemon:\n%s", len(m), strings.Join(m, "\n"))
	}
	// A normal stop with the shell still inside leaves nothing behind.
	d.Stop()
	if m := fuseMounts(d.Mnt); len(m) != 0 {
		t.Fatalf("after a stop: %d FUSE mounts at %s:\n%s", len(m), d.Mnt, strings.Join(m, "\n"))
	}
	if _, err := os.ReadDir(d.Mnt); err != nil {
		t.Fatalf("mountpoint after a stop: %v", err)
	}
	d.Start()
	if m := fuseMounts(d.Mnt); len(m) != 1 {
		t.Fatalf("after stop and start: %d FUSE mounts:\n%s", len(m), strings.Join(m, "\n"))
	}
	inside.stop()
}

// 7 and 12: a daemon whose output pipe is gone (make run | tee, Ctrl-C)
// still unmounts.
func TestHabitStopWithBrokenPipe(t *testing.T) {
	testenv.Require(t)
	dir, err := os.MkdirTemp("", "hfs")
	if err != nil {
		t.Fatal(err)
	}
	mnt := filepath.Join(dir, "mnt")
	defer func() {
		exec.Command("fusermount3", "-uz", mnt).Run()
		os.RemoveAll(dir)
	}()
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(testenv.Bins(t), "hypefs"), "mount", "--network", "off",
		"--data", filepath.Join(dir, "d"), "--run", filepath.Join(dir, "r"), "--kernels", testenv.Kernels(), mnt)
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	defer cmd.Process.Kill()
	sc := bufio.NewScanner(pr)
	mounted := make(chan bool, 1)
	go func() {
		for sc.Scan() {
			if strings.Contains(sc.Text(), "hypefs mounted") {
				mounted <- true
				return
			}
		}
		mounted <- false
	}()
	select {
	case ok := <-mounted:
		if !ok {
			t.Fatal("the daemon ended before mounting")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the daemon did not mount within 20 s")
	}
	pr.Close() // tee is gone
	cmd.Process.Signal(syscall.SIGINT)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			t.Fatalf("the daemon died of %v: %v", ws.Signal(), err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the daemon did not end within 15 s of SIGINT")
	}
	if m := fuseMounts(mnt); len(m) != 0 {
		t.Fatalf("a dead mount is left:\n%s", strings.Join(m, "\n"))
	}
}

// 8. While booting, console follows the boot from the start and takes input.
func TestHabitConsoleWhileBooting(t *testing.T) {
	d := testenv.NewDaemon(t)
	for k := 0; k < 3; k++ {
		name := fmt.Sprintf("b%d", k)
		os.Mkdir(d.Path("instances", name), 0o755)
		mustRun(t, 10*time.Second, "echo '{}' > "+d.Inst(name, "config"))
		con, err := os.Open(d.Inst(name, "console"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(d.Inst(name, "console")); err != nil {
			t.Fatal(err)
		}
		got, ended := readUntil(con, "hypefs: guest ready", 90*time.Second)
		con.Close()
		if !strings.Contains(got, "hypefs: guest ready") {
			t.Fatalf("try %d: console opened while %s read %q and ended=%v", k, d.Status(name), got, ended)
		}
		ctl(t, d, name, "kill")
	}
	// Input typed while booting is taken (not EIO).
	os.Mkdir(d.Path("instances", "bin"), 0o755)
	mustRun(t, 10*time.Second, "echo '{}' > "+d.Inst("bin", "config"))
	if out, err := run(t, 90*time.Second, "echo > "+d.Inst("bin", "console")); err != nil {
		t.Fatalf("a write to console while %s: %v %s (error: %s)", d.Status("bin"), err, out, d.Read(d.Inst("bin", "error")))
	}
	d.WaitStatus("bin", "running", 90*time.Second)
	ctl(t, d, "bin", "kill")
}

// 9. shutdown asked while the guest boots ends it when the guest is
// ready, by the guest's own power-off; events and error say so.
func TestHabitShutdownDuringBoot(t *testing.T) {
	d := testenv.NewDaemon(t)
	os.Mkdir(d.Path("instances", "sd"), 0o755)
	ev, err := os.Open(d.Inst("sd", "events"))
	if err != nil {
		t.Fatal(err)
	}
	defer ev.Close()
	mustRun(t, 10*time.Second, "echo '{}' > "+d.Inst("sd", "config"))
	// Wait until the shim runs the VM (a pid in info), still booting.
	if !testenv.WaitFor(60*time.Second, func() bool {
		return strings.Contains(d.Read(d.Inst("sd", "info")), `"shim_pid"`)
	}) {
		t.Fatalf("the shim never started: %s", d.Read(d.Inst("sd", "error")))
	}
	if st := d.Status("sd"); st != "booting" {
		t.Skipf("the guest was already %s; the window for this test is gone", st)
	}
	ctl(t, d, "sd", "shutdown")
	d.WaitStatus("sd", "stopped", 90*time.Second)
	var info struct {
		Exit struct {
			Reason string `json:"reason"`
		} `json:"exit"`
	}
	json.Unmarshal([]byte(d.Read(d.Inst("sd", "info"))), &info)
	if info.Exit.Reason != "guest powered off" {
		t.Fatalf("the VM ended by %q, not by the guest's power-off (error: %s)", info.Exit.Reason, d.Read(d.Inst("sd", "error")))
	}
	got, _ := readUntil(ev, "sd stopped", 10*time.Second)
	if !strings.Contains(got, "ready") {
		t.Fatalf("events do not say the shutdown waited for the guest:\n%s", got)
	}
}

// 10. A recreated name is a new file: tail -F follows the new log only,
// an open reader of the old log sees no more, old events end.
func TestHabitRecreatedName(t *testing.T) {
	needTools(t, "tail")
	d := testenv.NewDaemon(t)
	d.Boot("l1", "{}")
	logp := d.Inst("l1", "log")
	var old syscall.Stat_t
	syscall.Stat(logp, &old)
	tF := startBackground(t, "tail -F -n +1 "+logp)
	tF.waitOutput(t, "hypefs: guest ready", 1, 20*time.Second)
	oldLog, err := os.Open(logp)
	if err != nil {
		t.Fatal(err)
	}
	defer oldLog.Close()
	oldEvents, err := os.Open(d.Inst("l1", "events"))
	if err != nil {
		t.Fatal(err)
	}
	defer oldEvents.Close()
	ctl(t, d, "l1", "kill")
	if err := os.Remove(d.Path("instances", "l1")); err != nil {
		t.Fatal(err)
	}
	// The removed instance's events end.
	got, ended := readUntil(oldEvents, "\x00never", 10*time.Second)
	if !ended {
		t.Fatalf("events of a removed instance did not end; read %q", got)
	}
	d.Boot("l1", "{}")
	mustRun(t, 10*time.Second, "echo 'echo second-life-$((6*7))' > "+d.Inst("l1", "console"))
	d.WaitLog("l1", "second-life-42", 1, 30*time.Second)
	var nw syscall.Stat_t
	syscall.Stat(logp, &nw)
	if nw.Ino == old.Ino {
		t.Fatalf("the new instance's log has the old inode %d", nw.Ino)
	}
	tF.waitOutput(t, "second-life-42", 1, 20*time.Second)
	if n := strings.Count(tF.output(), "hypefs: guest ready"); n != 2 {
		t.Fatalf("tail -F showed the ready line %d times (the old log replayed?):\n%s", n, tF.output())
	}
	rest, _ := io.ReadAll(oldLog)
	if strings.Contains(string(rest), "second-life") {
		t.Fatal("a reader of the old log sees the new instance's log")
	}
	ctl(t, d, "l1", "kill")
}

// 11. rm -rf removes a stopped instance, refuses a running one with
// EBUSY and a sentence naming kill; rm of one file says rmdir.
func TestHabitRmRf(t *testing.T) {
	needTools(t, "rm", "find")
	d := testenv.NewDaemon(t)
	stopped(t, d, "gone", "{}")
	os.Mkdir(d.Path("instances", "fresh"), 0o755)
	stopped(t, d, "found", "{}")
	d.Boot("busy", "{}")

	if out, err := run(t, 30*time.Second, "rm -rf "+d.Path("instances", "gone")); err != nil {
		t.Fatalf("rm -rf of a stopped instance: %v %s", err, out)
	}
	if out, err := run(t, 30*time.Second, "rm -r "+d.Path("instances", "fresh")); err != nil {
		t.Fatalf("rm -r of a new instance: %v %s", err, out)
	}
	if out, err := run(t, 30*time.Second, "find "+d.Path("instances", "found")+" -delete"); err != nil {
		t.Fatalf("find -delete of a stopped instance: %v %s", err, out)
	}
	for _, n := range []string{"gone", "fresh", "found"} {
		if _, err := os.Stat(d.Path("instances", n)); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s is still there: %v", n, err)
		}
	}
	out, err := run(t, 30*time.Second, "rm -rf "+d.Path("instances", "busy"))
	if err == nil || !strings.Contains(out, "Device or resource busy") {
		t.Fatalf("rm -rf of a running instance: %v %s", err, out)
	}
	if msg := d.Read(d.Inst("busy", "error")); !strings.Contains(msg, "kill") {
		t.Fatalf("error after rm -rf of a running instance: %q", msg)
	}
	if st := d.Status("busy"); st != "running" {
		t.Fatalf("rm -rf stopped the VM: %s", st)
	}
	out, err = run(t, 30*time.Second, "rm -f "+d.Inst("busy", "log"))
	if err == nil || !strings.Contains(out, "Operation not permitted") {
		t.Fatalf("rm log: %v %s", err, out)
	}
	if msg := d.Read(d.Inst("busy", "error")); !strings.Contains(msg, "rmdir") {
		t.Fatalf("error after rm log: %q", msg)
	}
	ctl(t, d, "busy", "kill")
	mustRun(t, 30*time.Second, "rm -rf "+d.Path("instances", "busy"))
	if _, err := os.Stat(d.Path("instances", "busy")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("busy is still there after kill and rm -rf: %v", err)
	}
}

var errorLine = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ (\S.*?): (\S.*)\n$`)

// 12. The smaller things: error carries its time and cause, events do
// not repeat themselves, ctl says what is valid, the log holds no
// terminal queries, cp -a applies a config.
func TestHabitSmallerThings(t *testing.T) {
	needTools(t, "cp", "python3")
	d := testenv.NewDaemon(t)
	all, err := os.Open(d.Path("events"))
	if err != nil {
		t.Fatal(err)
	}
	defer all.Close()
	os.Mkdir(d.Path("instances", "s1"), 0o755)
	// ctl of a new instance says what is valid and that a config boots.
	cmds := d.Read(d.Inst("s1", "ctl"))
	if !strings.Contains(cmds, "kill") || !strings.Contains(cmds, "shutdown") || !strings.Contains(cmds, "config") {
		t.Fatalf("ctl of a new instance reads %q", cmds)
	}
	// error: one line, time and cause first.
	run(t, 10*time.Second, "echo explode > "+d.Inst("s1", "ctl"))
	msg := d.Read(d.Inst("s1", "error"))
	m := errorLine.FindStringSubmatch(msg)
	if m == nil || m[1] != `ctl "explode"` {
		t.Fatalf("error reads %q; want `TIME ctl \"explode\": sentence`", msg)
	}
	run(t, 10*time.Second, `echo '{"cpus":0}' > `+d.Inst("s1", "config"))
	if m := errorLine.FindStringSubmatch(d.Read(d.Inst("s1", "error"))); m == nil || m[1] != "config" {
		t.Fatalf("error after a bad config reads %q", d.Read(d.Inst("s1", "error")))
	}
	// cp -a of a config file (of config's own mode: it holds an
	// environment) applies it and exits 0.
	my := filepath.Join(t.TempDir(), "my.json")
	os.WriteFile(my, []byte(`{"cpus":1}`+"\n"), 0o600)
	if out, err := run(t, 30*time.Second, "cp -a "+my+" "+d.Inst("s1", "config")); err != nil {
		t.Fatalf("cp -a my.json config: %v %s", err, out)
	}
	d.WaitStatus("s1", "running", 90*time.Second)
	// A real mode or owner change is refused with a sentence.
	if out, err := run(t, 10*time.Second, "chmod 0755 "+d.Inst("s1", "config")); err == nil || !strings.Contains(out, "Operation not permitted") {
		t.Fatalf("chmod 0755 config: %v %s", err, out)
	}
	if msg := d.Read(d.Inst("s1", "error")); !strings.Contains(msg, "mode") {
		t.Fatalf("error after chmod: %q", msg)
	}
	mustRun(t, 10*time.Second, "chmod 0600 "+d.Inst("s1", "config")+" && chown root:root "+d.Inst("s1", "config")+" && touch "+d.Inst("s1", "config"))
	// The log stays free of terminal queries.
	mustRun(t, 10*time.Second, "echo 'echo asked-$((6*7))' > "+d.Inst("s1", "console"))
	d.WaitLog("s1", "asked-42", 1, 30*time.Second)
	time.Sleep(500 * time.Millisecond)
	if lg := d.Read(d.Inst("s1", "log")); strings.Contains(lg, "\x1b[6n") {
		t.Fatalf("the log holds terminal queries:\n%q", tailOf(lg, 300))
	}
	ctl(t, d, "s1", "pause")
	ctl(t, d, "s1", "resume")
	ctl(t, d, "s1", "kill")
	if err := os.Remove(d.Path("instances", "s1")); err != nil {
		t.Fatal(err)
	}
	got, _ := readUntil(all, "s1 deleted", 10*time.Second)
	var running []string
	for _, l := range strings.Split(strings.TrimSpace(got), "\n") {
		f := strings.Fields(l)
		if len(f) < 3 {
			t.Fatalf("short event line %q", l)
		}
		for k := 3; k < len(f); k++ {
			if f[k] == f[2] {
				t.Fatalf("event line repeats its state: %q", l)
			}
		}
		if f[2] == "running" {
			running = append(running, l)
			if len(f) < 4 {
				t.Fatalf("running without a detail: %q (all:\n%s)", l, got)
			}
		}
	}
	if len(running) < 2 {
		t.Fatalf("want two running lines (boot, resume):\n%s", got)
	}
}
