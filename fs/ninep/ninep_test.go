package ninep

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"

	hfs "hypefs/fs"
)

// A small tree made of the fs package's real file kinds.
type testDir struct {
	id      uint64
	mu      sync.Mutex
	entries []hfs.Entry
	mkdir   bool
}

func newTestDir(mkdir bool, entries ...hfs.Entry) *testDir {
	return &testDir{id: hfs.NewID(), entries: entries, mkdir: mkdir}
}

func (d *testDir) ID() uint64        { return d.id }
func (d *testDir) Mode() os.FileMode { return os.ModeDir | 0o755 }
func (d *testDir) Lookup(_ context.Context, name string) (hfs.Node, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, e := range d.entries {
		if e.Name == name {
			return e.Node, nil
		}
	}
	return nil, syscall.ENOENT
}
func (d *testDir) Entries(context.Context) ([]hfs.Entry, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]hfs.Entry(nil), d.entries...), nil
}

// thingsDir is a MkdirDir: "busy" cannot be removed.
type thingsDir struct{ *testDir }

func (d thingsDir) Mkdir(_ context.Context, name string) (hfs.Node, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if strings.ContainsAny(name, "A_") {
		return nil, syscall.EINVAL
	}
	for _, e := range d.entries {
		if e.Name == name {
			return nil, syscall.EEXIST
		}
	}
	n := newTestDir(false)
	d.entries = append(d.entries, hfs.Entry{Name: name, Node: n})
	sort.Slice(d.entries, func(a, b int) bool { return d.entries[a].Name < d.entries[b].Name })
	return n, nil
}

func (d thingsDir) Rmdir(_ context.Context, name string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if name == "busy" {
		return syscall.EBUSY
	}
	for k, e := range d.entries {
		if e.Name == name {
			d.entries = append(d.entries[:k], d.entries[k+1:]...)
			return nil
		}
	}
	return syscall.ENOENT
}

type fixture struct {
	t        *testing.T
	root     p9.File
	mu       sync.Mutex
	cmds     []string
	config   []byte
	conConns chan net.Conn
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	old := FollowWait
	FollowWait = 200 * time.Millisecond
	t.Cleanup(func() { FollowWait = old })

	fx := &fixture{t: t, conConns: make(chan net.Conn, 4)}
	dir := t.TempDir()
	conSock := filepath.Join(dir, "con.sock")
	l, err := net.Listen("unix", conSock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			fx.conConns <- c
		}
	}()
	logPath := filepath.Join(dir, "log")
	os.WriteFile(logPath, []byte("line one\nline two\n"), 0o644)

	things := thingsDir{newTestDir(true, hfs.Entry{Name: "busy", Node: newTestDir(false)})}
	root := newTestDir(false,
		hfs.Entry{Name: "config", Node: hfs.NewDocFile(1024,
			func(context.Context) []byte { fx.mu.Lock(); defer fx.mu.Unlock(); return fx.config },
			func(doc []byte) (int, bool) { return len(doc), json.Valid(doc) },
			func(_ context.Context, doc []byte) error {
				if !json.Valid(doc) {
					return syscall.EINVAL
				}
				fx.mu.Lock()
				fx.config = append([]byte(nil), doc...)
				fx.mu.Unlock()
				return nil
			})},
		hfs.Entry{Name: "console", Node: hfs.NewConsoleFile(
			func(context.Context) (string, bool) { return conSock, true })},
		hfs.Entry{Name: "ctl", Node: hfs.NewCtlFile(0o644,
			func(context.Context) []byte { return []byte("start\nkill\n") },
			func(_ context.Context, b []byte) error {
				cmd := strings.TrimSpace(string(b))
				if cmd != "start" && cmd != "kill" {
					return syscall.EINVAL
				}
				fx.mu.Lock()
				fx.cmds = append(fx.cmds, cmd)
				fx.mu.Unlock()
				return nil
			})},
		hfs.Entry{Name: "log", Node: hfs.NewBackedFile(logPath, nil)},
		hfs.Entry{Name: "status", Node: hfs.NewGenFile(func(context.Context) []byte { return []byte("running\n") })},
		hfs.Entry{Name: "things", Node: things},
	)

	srv := New(root, nil)
	l9, err := Listen("unix:"+filepath.Join(dir, "9p.sock"), false)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l9)
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Error(err)
		}
		if _, err := os.Stat(filepath.Join(dir, "9p.sock")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("socket left after Close: %v", err)
		}
	})
	fx.root = Dial(t, "unix:"+filepath.Join(dir, "9p.sock"))
	return fx
}

// Dial connects a p9 client to addr and attaches.
func Dial(t testing.TB, addr string) p9.File {
	t.Helper()
	kind, rest, _ := strings.Cut(addr, ":")
	conn, err := net.Dial(kind, rest)
	if err != nil {
		t.Fatal(err)
	}
	c, err := p9.NewClient(conn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	root, err := c.Attach("")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

func walk(t testing.TB, from p9.File, path string) p9.File {
	t.Helper()
	_, f, err := from.Walk(strings.Split(path, "/"))
	if err != nil {
		t.Fatalf("walk %s: %v", path, err)
	}
	return f
}

func open(t testing.TB, from p9.File, path string, flags p9.OpenFlags) p9.File {
	t.Helper()
	f := walk(t, from, path)
	if _, _, err := f.Open(flags); err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	return f
}

func readAll(t testing.TB, from p9.File, path string) string {
	t.Helper()
	f := open(t, from, path, p9.ReadOnly)
	defer f.Close()
	var b bytes.Buffer
	buf := make([]byte, 64<<10)
	for off := int64(0); ; {
		n, err := f.ReadAt(buf, off)
		b.Write(buf[:n])
		off += int64(n)
		if err == io.EOF || err == nil && n == 0 {
			return b.String()
		}
		if err != nil {
			t.Fatalf("read %s: %v", path, err)
		}
	}
}

func names(t testing.TB, from p9.File, path string) []string {
	t.Helper()
	d := from
	if path != "" {
		d = walk(t, from, path)
	} else {
		_, d, _ = from.Walk(nil)
	}
	defer d.Close()
	if _, _, err := d.Open(p9.ReadOnly); err != nil {
		t.Fatal(err)
	}
	var out []string
	for off := uint64(0); ; {
		ds, err := d.Readdir(off, 4096)
		if err != nil {
			t.Fatal(err)
		}
		if len(ds) == 0 {
			return out
		}
		for _, e := range ds {
			out = append(out, e.Name)
			off = e.Offset
		}
	}
}

func wantErrno(t *testing.T, what string, err error, want linux.Errno) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: %v, want %v", what, err, want)
	}
}

func TestListReadAttrs(t *testing.T) {
	fx := newFixture(t)
	got := strings.Join(names(t, fx.root, ""), " ")
	if got != "config ctl log status things" { // console is found by name, not listed
		t.Fatalf("root lists %q", got)
	}
	if s := readAll(t, fx.root, "status"); s != "running\n" {
		t.Fatalf("status = %q", s)
	}
	if s := readAll(t, fx.root, "log"); s != "line one\nline two\n" {
		t.Fatalf("log = %q", s)
	}
	st := walk(t, fx.root, "status")
	qid, _, attr, err := st.GetAttr(p9.AttrMaskAll)
	if err != nil || attr.Size != 8 || !attr.Mode.IsRegular() || attr.Mode.Permissions() != 0o444 || qid.Type != p9.TypeRegular {
		t.Fatalf("status attrs %v %v %v", qid, attr, err)
	}
	qid, _, attr, _ = walk(t, fx.root, "things").GetAttr(p9.AttrMaskAll)
	if !attr.Mode.IsDir() || qid.Type != p9.TypeDir {
		t.Fatalf("things attrs %v %v", qid, attr)
	}
	_, _, err = fx.root.Walk([]string{"nope"})
	wantErrno(t, "walk to a missing name", err, linux.ENOENT)
	_, _, err = st.Open(p9.WriteOnly)
	wantErrno(t, "open status for writing", err, linux.EACCES)
	// unlink, rename, create, setattr mode: EPERM.
	wantErrno(t, "unlink", fx.root.UnlinkAt("status", 0), linux.EPERM)
	wantErrno(t, "rename", fx.root.RenameAt("status", fx.root, "s2"), linux.EPERM)
	_, _, _, err = fx.root.Create("new", p9.WriteOnly, 0o644, 0, 0)
	wantErrno(t, "create", err, linux.EPERM)
	wantErrno(t, "chmod", st.SetAttr(p9.SetAttrMask{Permissions: true}, p9.SetAttr{Permissions: 0o777}), linux.EPERM)
	if err := st.SetAttr(p9.SetAttrMask{Permissions: true}, p9.SetAttr{Permissions: 0o444}); err != nil {
		t.Errorf("chmod to the mode status has: %v", err)
	}
	wantErrno(t, "truncate status", st.SetAttr(p9.SetAttrMask{Size: true}, p9.SetAttr{}), linux.EPERM)
	_, err = fx.root.Mkdir("d", 0o755, 0, 0)
	wantErrno(t, "mkdir in a fixed directory", err, linux.EPERM)

	// Times do not move while nothing changes; fsync of a fid that only
	// read succeeds; the follow file is found by walk.
	_, _, a1, _ := st.GetAttr(p9.AttrMaskAll)
	time.Sleep(20 * time.Millisecond)
	_, _, a2, _ := st.GetAttr(p9.AttrMaskAll)
	if a1.MTimeNanoSeconds != a2.MTimeNanoSeconds || a1.MTimeSeconds != a2.MTimeSeconds || a1.ATimeSeconds != a1.MTimeSeconds || a1.CTimeSeconds != a1.MTimeSeconds {
		t.Errorf("status times move or differ: %+v / %+v", a1, a2)
	}
	ro := open(t, fx.root, "status", p9.ReadOnly)
	if err := ro.FSync(); err != nil {
		t.Errorf("fsync of a read-only fid: %v", err)
	}
	ro.Close()
	walk(t, fx.root, "console")
}

func TestMkdirRmdir(t *testing.T) {
	fx := newFixture(t)
	things := walk(t, fx.root, "things")
	if _, err := things.Mkdir("vm1", 0o755, 0, 0); err != nil {
		t.Fatal(err)
	}
	_, err := things.Mkdir("vm1", 0o755, 0, 0)
	wantErrno(t, "mkdir of an existing name", err, linux.EEXIST)
	_, err = things.Mkdir("Bad_Name", 0o755, 0, 0)
	wantErrno(t, "mkdir of a bad name", err, linux.EINVAL)
	if got := strings.Join(names(t, fx.root, "things"), " "); got != "busy vm1" {
		t.Fatalf("things lists %q", got)
	}
	wantErrno(t, "rmdir busy", things.UnlinkAt("busy", atRemoveDir), linux.EBUSY)
	wantErrno(t, "unlink a directory", things.UnlinkAt("vm1", 0), linux.EPERM)
	if err := things.UnlinkAt("vm1", atRemoveDir); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(names(t, fx.root, "things"), " "); got != "busy" {
		t.Fatalf("things lists %q after rmdir", got)
	}
}

func TestCtlAndConfig(t *testing.T) {
	fx := newFixture(t)
	// `echo kill > ctl` as v9fs sends it: open, setattr size=0, write.
	ctl := open(t, fx.root, "ctl", p9.WriteOnly)
	if err := ctl.SetAttr(p9.SetAttrMask{Size: true}, p9.SetAttr{Size: 0}); err != nil {
		t.Fatalf("truncate ctl: %v", err)
	}
	if _, err := ctl.WriteAt([]byte("kill\n"), 0); err != nil {
		t.Fatal(err)
	}
	_, err := ctl.WriteAt([]byte("explode\n"), 0)
	wantErrno(t, "bad ctl word", err, linux.EINVAL)
	ctl.Close()
	if s := readAll(t, fx.root, "ctl"); s != "start\nkill\n" {
		t.Fatalf("ctl reads %q", s)
	}

	// A config written in two pieces is committed on fsync; a broken
	// one fails there.
	cfg := open(t, fx.root, "config", p9.WriteOnly)
	cfg.WriteAt([]byte(`{"cpus":`), 0)
	cfg.WriteAt([]byte(`2}`), 8)
	if err := cfg.FSync(); err != nil {
		t.Fatalf("fsync config: %v", err)
	}
	cfg.Close()
	if s := readAll(t, fx.root, "config"); s != `{"cpus":2}` {
		t.Fatalf("config = %q", s)
	}
	cfg = open(t, fx.root, "config", p9.WriteOnly)
	cfg.WriteAt([]byte(`{"cpus":`), 0)
	wantErrno(t, "fsync of a cut config", cfg.FSync(), linux.EINVAL)
	cfg.Close()
	// A config left pending is committed on clunk.
	cfg = open(t, fx.root, "config", p9.WriteOnly)
	cfg.WriteAt([]byte(`{"cpus":`), 0)
	cfg.WriteAt([]byte(`4}`), 8)
	cfg.Close()
	if !waitFor(2*time.Second, func() bool { return readAll(t, fx.root, "config") == `{"cpus":4}` }) {
		t.Fatalf("config after clunk = %q", readAll(t, fx.root, "config"))
	}
}

func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

func TestFollow(t *testing.T) {
	fx := newFixture(t)
	con := open(t, fx.root, "console", p9.ReadWrite)
	var shim net.Conn
	select {
	case shim = <-fx.conConns:
	case <-time.After(2 * time.Second):
		t.Fatal("console did not connect")
	}
	buf := make([]byte, 4096)

	// Nothing buffered: the read waits FollowWait, then EINTR.
	start := time.Now()
	_, err := con.ReadAt(buf, 0)
	wantErrno(t, "idle follow read", err, linux.EINTR)
	if d := time.Since(start); d < FollowWait || d > FollowWait+time.Second {
		t.Fatalf("idle read took %s, want about %s", d, FollowWait)
	}

	// Data arriving during the wait is returned at once.
	go func() { time.Sleep(50 * time.Millisecond); shim.Write([]byte("hello\n")) }()
	start = time.Now()
	n, err := con.ReadAt(buf, 0)
	if err != nil || string(buf[:n]) != "hello\n" || time.Since(start) > FollowWait {
		t.Fatalf("read = %q, %v after %s", buf[:n], err, time.Since(start))
	}
	// Right after data: EAGAIN at once (ends v9fs's fill loop).
	start = time.Now()
	_, err = con.ReadAt(buf, 6)
	wantErrno(t, "read after data", err, linux.EAGAIN)
	if time.Since(start) > FollowWait/2 {
		t.Fatalf("read after data waited %s", time.Since(start))
	}

	// Writes type into the console.
	if _, err := con.WriteAt([]byte("ls\n"), 0); err != nil {
		t.Fatal(err)
	}
	shim.SetReadDeadline(time.Now().Add(2 * time.Second))
	got := make([]byte, 3)
	if _, err := io.ReadFull(shim, got); err != nil || string(got) != "ls\n" {
		t.Fatalf("shim got %q, %v", got, err)
	}

	// O_NONBLOCK: 0 bytes at once when empty, as FUSE answers.
	nb := open(t, fx.root, "console", p9.ReadOnly|p9.OpenFlags(oNonblock))
	shim2 := <-fx.conConns
	start = time.Now()
	if n, err := nb.ReadAt(buf, 0); n != 0 || err != nil && err != io.EOF {
		t.Fatalf("non-blocking read of nothing: %d, %v", n, err)
	}
	if time.Since(start) > FollowWait/2 {
		t.Fatalf("non-blocking read waited %s", time.Since(start))
	}
	shim2.Write([]byte("x"))
	if !waitFor(2*time.Second, func() bool { n, _ := nb.ReadAt(buf, 0); return n == 1 }) {
		t.Fatal("non-blocking read never saw data")
	}

	// The end of the console (VM stopped) is EOF.
	shim.Close()
	if !waitFor(2*time.Second, func() bool { _, err := con.ReadAt(buf, 0); return err == io.EOF }) {
		t.Fatal("no EOF after the console ended")
	}
	con.Close()
	nb.Close()
	shim2.Close()
}

func TestListen(t *testing.T) {
	for _, a := range []string{"tcp:0.0.0.0:0", "tcp::0", "tcp:[::]:0", "bogus", "unix:", "tcp:"} {
		if l, err := Listen(a, false); err == nil {
			l.Close()
			t.Errorf("Listen(%q) allowed", a)
		}
	}
	l, err := Listen("tcp:127.0.0.1:0", false)
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	l, err = Listen("tcp:0.0.0.0:0", true)
	if err != nil {
		t.Fatal(err)
	}
	l.Close()

	p := filepath.Join(t.TempDir(), "s.sock")
	l, err = Listen("unix:"+p, false)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(p)
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("socket %v %v", fi.Mode(), err)
	}
	if _, err := Listen("unix:"+p, false); err == nil {
		t.Fatal("a second server took a live socket")
	}
	// A stale socket (its server died without removing it) is replaced.
	l.Close()
	dead, err := net.ListenUnix("unix", &net.UnixAddr{Name: p, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	dead.SetUnlinkOnClose(false)
	dead.Close()
	l2, err := Listen("unix:"+p, false)
	if err != nil {
		t.Fatalf("stale socket: %v", err)
	}
	l2.Close()
	if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("socket left after Close")
	}
}
