package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"

	"hypefs/internal/testenv"
	"hypefs/shim/client"
)

// Automation watching with inotify wakes on state changes the daemon makes.
func TestInotifyWakes(t *testing.T) {
	d := testenv.NewDaemon(t)
	os.Mkdir(d.Path("instances", "w"), 0o755)
	status := d.Inst("w", "status")

	// inotifywait, as a shell script would use it.
	iw := exec.Command("inotifywait", "-q", "-e", "attrib", "--format", "%e %w", status)
	var iwOut bytes.Buffer
	iw.Stdout = &iwOut
	if err := iw.Start(); err != nil {
		t.Skipf("inotifywait: %v (run \"make deps\")", err)
	}
	// A Go watcher, as automation would use it.
	w, err := fsnotify.NewWatcher()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := w.Add(status); err != nil {
		t.Fatal(err)
	}
	if err := w.Add(d.Path("instances")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // let inotifywait set its watch
	if err := os.WriteFile(d.Inst("w", "config"), []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- iw.Wait() }()
	select {
	case <-done:
		if !strings.Contains(iwOut.String(), "ATTRIB") {
			t.Fatalf("inotifywait printed %q", iwOut.String())
		}
	case <-time.After(30 * time.Second):
		iw.Process.Kill()
		t.Fatal("inotifywait did not wake on a state change")
	}
	// The Go watcher sees the state changes too, with the status each time.
	seen := map[string]bool{}
	deadline := time.After(90 * time.Second)
	for !seen["running"] {
		select {
		case ev := <-w.Events:
			if ev.Name == status && ev.Has(fsnotify.Chmod) {
				seen[strings.TrimSpace(d.Read(status))] = true
			}
		case err := <-w.Errors:
			t.Fatal(err)
		case <-deadline:
			t.Fatalf("watcher never saw running; saw %v", seen)
		}
	}
	// A local mkdir fires CREATE as on any filesystem.
	os.Mkdir(d.Path("instances", "w2"), 0o755)
	testenv.WaitNotify(t, w, d.Path("instances", "w2"), fsnotify.Create)
	testenv.Shell("echo kill > " + d.Inst("w", "ctl"))
	testenv.WaitNotify(t, w, status, fsnotify.Chmod)
}

var eventLine = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z (\S+) (\S+)( .*)?$`)

// events files follow state changes; a blocked read ends on Ctrl-C.
func TestEvents(t *testing.T) {
	d := testenv.NewDaemon(t)
	all, err := os.Open(d.Path("events"))
	if err != nil {
		t.Fatal(err)
	}
	defer all.Close()
	if fi, _ := all.Stat(); fi.Size() != 0 {
		t.Fatalf("events reports size %d, want 0", fi.Size())
	}
	os.Mkdir(d.Path("instances", "ev"), 0o755)
	mine, err := os.Open(d.Inst("ev", "events"))
	if err != nil {
		t.Fatal(err)
	}
	defer mine.Close()
	os.Mkdir(d.Path("instances", "other"), 0o755)
	os.WriteFile(d.Inst("ev", "config"), []byte("{}"), 0o644)

	read := func(f *os.File, until string) []string {
		t.Helper()
		var lines []string
		r := bufio.NewReader(f)
		got := make(chan string)
		go func() {
			for {
				l, err := r.ReadString('\n')
				if err != nil {
					close(got)
					return
				}
				got <- strings.TrimRight(l, "\n")
			}
		}()
		deadline := time.After(90 * time.Second)
		for {
			select {
			case l, ok := <-got:
				if !ok {
					t.Fatalf("events ended; lines %q", lines)
				}
				if !eventLine.MatchString(l) {
					t.Fatalf("malformed event line %q", l)
				}
				lines = append(lines, l)
				if strings.Contains(l, until) {
					return lines
				}
			case <-deadline:
				t.Fatalf("no %q in %q", until, lines)
			}
		}
	}
	gotAll := strings.Join(read(all, "ev running"), "\n")
	for _, want := range []string{"ev new", "other new", "ev created", "ev booting", "ev running"} {
		if !strings.Contains(gotAll, want) {
			t.Fatalf("/events lacks %q:\n%s", want, gotAll)
		}
	}
	gotMine := strings.Join(read(mine, "ev running"), "\n")
	if strings.Contains(gotMine, "other") {
		t.Fatalf("instance events show another instance:\n%s", gotMine)
	}

	// A blocked reader (cat) ends on Ctrl-C.
	cat := exec.Command("cat", d.Path("events"))
	if err := cat.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	cat.Process.Signal(syscall.SIGINT)
	done := make(chan error, 1)
	go func() { done <- cat.Wait() }()
	select {
	case <-done:
		t.Logf("cat of a blocked events file ended %v after SIGINT", time.Since(start))
	case <-time.After(5 * time.Second):
		cat.Process.Kill()
		t.Fatal("a blocked read did not end on SIGINT")
	}
	testenv.Shell("echo kill > " + d.Inst("ev", "ctl"))
}

// log is a growing regular file: cat, cp, grep, wc, tail -f and offsets work.
func TestLogAsFile(t *testing.T) {
	d := testenv.NewDaemon(t)
	d.Boot("lg", "{}")
	logp := d.Inst("lg", "log")
	fi, err := os.Stat(logp)
	if err != nil || fi.Size() == 0 {
		t.Fatalf("log stat: %v, size %d", err, fi.Size())
	}
	for _, cmd := range []string{
		"cat " + logp + " | grep -q 'hypefs: guest ready'",
		"grep -c 'guest ready' " + logp,
		"wc -c " + logp,
		"cp " + logp + " " + filepath.Join(d.Dir, "copy") + " && cmp " + logp + " " + filepath.Join(d.Dir, "copy") + " || test $(stat -c %s " + filepath.Join(d.Dir, "copy") + ") -ge " + fmt.Sprint(fi.Size()),
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		out, err := exec.CommandContext(ctx, "bash", "-c", cmd).CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("%s: %v %s", cmd, err, out)
		}
	}
	// Reads at an offset.
	f, _ := os.Open(logp)
	b := make([]byte, 16)
	n, err := f.ReadAt(b, fi.Size()-16)
	f.Close()
	if n != 16 {
		t.Fatalf("ReadAt: %d %v", n, err)
	}
	// tail -f shows what the guest prints later.
	tail := exec.Command("tail", "-f", "-n", "0", logp)
	out, _ := tail.StdoutPipe()
	tail.Start()
	defer tail.Process.Kill()
	time.Sleep(300 * time.Millisecond)
	testenv.Shell("echo 'echo tailed-$((5*5))' > " + d.Inst("lg", "console"))
	found := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "tailed-25") {
				found <- true
				return
			}
		}
	}()
	select {
	case <-found:
	case <-time.After(30 * time.Second):
		t.Fatal("tail -f did not show a new line")
	}
	testenv.Shell("echo kill > " + d.Inst("lg", "ctl"))
}

// A file manager's walk returns: stat, readdir, open, GIO's sniffing.
func TestFileManagerWalk(t *testing.T) {
	d := testenv.NewDaemon(t)
	d.Boot("fm", "{}")
	os.Mkdir(d.Path("instances", "idle"), 0o755)
	for _, cmd := range []string{"ls -lR " + d.Mnt, "find " + d.Mnt, "du -a " + d.Mnt, "stat " + d.Mnt + "/instances/*/*"} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		out, err := exec.CommandContext(ctx, "bash", "-c", cmd).CombinedOutput()
		hung := ctx.Err() == context.DeadlineExceeded
		cancel()
		if hung {
			t.Fatalf("%s did not finish: %s", cmd, out)
		}
		if err != nil {
			t.Fatalf("%s: %v %s", cmd, err, out)
		}
	}
	if _, err := exec.LookPath("gio"); err != nil {
		t.Skip("gio not installed (run \"make deps\")")
	}
	var files []string
	filepath.Walk(d.Mnt, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			files = append(files, p)
		}
		return nil
	})
	if len(files) < 20 {
		t.Fatalf("walk found only %d files", len(files))
	}
	for _, f := range files {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		out, err := exec.CommandContext(ctx, "gio", "info", "-a", "standard::content-type", f).CombinedOutput()
		hung := ctx.Err() == context.DeadlineExceeded
		cancel()
		if hung {
			t.Fatalf("gio content sniffing of %s hung", f)
		}
		if err != nil || !strings.Contains(string(out), "content-type") {
			t.Fatalf("gio info %s: %v %s", f, err, out)
		}
	}
	testenv.Shell("echo kill > " + d.Inst("fm", "ctl"))
}

// Many processes at once: mkdirs, ctl writes, console readers.
func TestConcurrency(t *testing.T) {
	d := testenv.NewDaemon(t)
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for k := 0; k < 20; k++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if out, err := exec.Command("mkdir", d.Path("instances", fmt.Sprintf("c%02d", k))).CombinedOutput(); err != nil {
				errs <- fmt.Errorf("mkdir c%02d: %v %s", k, err, out)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(d.Path("instances"))
	if len(ents) != 20 {
		t.Fatalf("%d instances after 20 mkdirs", len(ents))
	}
	// Two writers of one new instance's config: one boots it, the other
	// gets EBUSY or succeeds before; never two VMs.
	var cw sync.WaitGroup
	for k := 0; k < 4; k++ {
		cw.Add(1)
		go func() {
			defer cw.Done()
			os.WriteFile(d.Inst("c00", "config"), []byte("{}"), 0o644)
		}()
	}
	cw.Wait()
	d.WaitStatus("c00", "running", 90*time.Second)
	if n := len(testenv.Processes(d.RunDir("c00") + "/")); n != 2 {
		t.Fatalf("%d processes for c00, want a shim and a QEMU", n)
	}
	// Readers on console while others write to it.
	var readers []*os.File
	for k := 0; k < 3; k++ {
		f, err := os.Open(d.Inst("c00", "console"))
		if err != nil {
			t.Fatal(err)
		}
		readers = append(readers, f)
	}
	var ww sync.WaitGroup
	for k := 0; k < 5; k++ {
		ww.Add(1)
		go func() {
			defer ww.Done()
			os.WriteFile(d.Inst("c00", "console"), []byte(fmt.Sprintf("echo conc-%d-$((%d*2))\n", k, k)), 0o644)
		}()
	}
	ww.Wait()
	for _, f := range readers {
		got := make(chan bool, 1)
		go func() {
			var all []byte
			b := make([]byte, 4096)
			for {
				n, err := f.Read(b)
				all = append(all, b[:n]...)
				if bytes.Count(all, []byte("conc-")) >= 5 || err != nil {
					got <- err == nil
					return
				}
			}
		}()
		select {
		case ok := <-got:
			if !ok {
				t.Fatal("console reader ended early")
			}
		case <-time.After(30 * time.Second):
			t.Fatal("console reader did not see the writes")
		}
		f.Close()
	}
	// Concurrent pause/resume writers: every write is a pause or resume
	// that either works or is refused for the state; the VM survives.
	var pw sync.WaitGroup
	for k := 0; k < 8; k++ {
		pw.Add(1)
		go func() {
			defer pw.Done()
			for j := 0; j < 5; j++ {
				cmd := []string{"pause", "resume"}[(k+j)%2]
				err := os.WriteFile(d.Inst("c00", "ctl"), []byte(cmd), 0o644)
				if err != nil && !errors.Is(err, syscall.EBUSY) {
					t.Errorf("%s: %v", cmd, err)
				}
			}
		}()
	}
	pw.Wait()
	// What the daemon shows is what the VM is in.
	var info struct {
		API string `json:"api_socket"`
	}
	json.Unmarshal([]byte(d.Read(d.Inst("c00", "info"))), &info)
	shimSt, err := client.New(info.API).Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st := d.Status("c00"); st != shimSt.State {
		t.Fatalf("after concurrent pause/resume the daemon shows %q, the shim says %q", st, shimSt.State)
	}
	if shimSt.State == "paused" {
		if err := os.WriteFile(d.Inst("c00", "ctl"), []byte("resume"), 0o644); err != nil {
			t.Fatalf("resume: %v", err)
		}
	}
	testenv.Shell("echo 'echo alive-$((7*6))' > " + d.Inst("c00", "console"))
	d.WaitLog("c00", "alive-42", 1, 30*time.Second)
	testenv.Shell("echo kill > " + d.Inst("c00", "ctl"))
	// 20 rmdirs at once.
	var rw sync.WaitGroup
	for k := 0; k < 20; k++ {
		rw.Add(1)
		go func() {
			defer rw.Done()
			exec.Command("rmdir", d.Path("instances", fmt.Sprintf("c%02d", k))).Run()
		}()
	}
	rw.Wait()
	if ents, _ := os.ReadDir(d.Path("instances")); len(ents) != 0 {
		t.Fatalf("%d instances left after rmdir", len(ents))
	}
}
