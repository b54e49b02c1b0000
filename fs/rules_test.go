package fs

import (
	"context"
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"hypefs/backend/instance"
)

// The rules every adapter answers with: chmod and chown never, truncate
// and utimes only where a file takes them, directories ignore times, a
// read-only file never opens for writing.
func TestRules(t *testing.T) {
	ctx := context.Background()
	var did []string
	ctl := NewCtlFile(0o644, func(context.Context) []byte { return []byte("start\n") },
		func(_ context.Context, b []byte) error { did = append(did, string(b)); return nil })
	status := NewGenFile(func(context.Context) []byte { return []byte("running\n") })
	dir := &staticDir{base: newBase(os.ModeDir | 0o755), entries: []Entry{{"ctl", ctl}}}
	zero := uint64(0)
	same, other := os.FileMode(0o644), os.FileMode(0o755)
	uid := AccessOf(dir).UID
	root := uid + 1
	for _, tc := range []struct {
		name string
		n    Node
		a    SetAttr
		want error
	}{
		{"chmod ctl", ctl, SetAttr{Mode: &other}, syscall.EPERM},
		{"chmod ctl to its mode", ctl, SetAttr{Mode: &same}, nil},
		{"chown dir", dir, SetAttr{UID: &root}, syscall.EPERM},
		{"chown dir to its owner", dir, SetAttr{UID: &uid}, nil},
		{"truncate ctl", ctl, SetAttr{Size: &zero}, nil},
		{"truncate status", status, SetAttr{Size: &zero}, syscall.EPERM},
		{"touch ctl", ctl, SetAttr{Times: true}, nil},
		{"touch dir", dir, SetAttr{Times: true, Mtime: time.Unix(1, 0)}, nil},
		{"touch status", status, SetAttr{Times: true}, syscall.EPERM},
		{"nothing", status, SetAttr{}, nil},
	} {
		if err := Setattr(ctx, tc.n, tc.a); !errors.Is(err, tc.want) && err != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	if _, err := Open(ctx, status, os.O_WRONLY); Errno(err) != syscall.EACCES {
		t.Errorf("open status for writing: %v, want EACCES", err)
	}
	if _, err := Open(ctx, dir, os.O_RDONLY); Errno(err) != syscall.EISDIR {
		t.Errorf("open a directory: %v, want EISDIR", err)
	}
	h, err := Open(ctx, ctl, os.O_WRONLY|os.O_TRUNC)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Write(ctx, []byte("kill\n"), 0); err != nil || len(did) != 1 || did[0] != "kill\n" {
		t.Errorf("write ctl: %v, did %q", err, did)
	}
	if a := Stat(ctx, status, nil); a.Size != 8 || a.Blocks != 1 || a.Nlink != 1 || a.Mode != 0o444 {
		t.Errorf("stat status: %+v", a)
	}
	if a := Stat(ctx, dir, nil); a.Nlink != 2 || !a.Mode.IsDir() || a.Mtime.IsZero() {
		t.Errorf("stat dir: %+v", a)
	}
}

// A directory lists everything but its follow files, which are found by
// name; a follow file opened O_NONBLOCK never blocks.
func TestFollowFilesFoundNotListed(t *testing.T) {
	ctx := context.Background()
	hub := NewHub()
	ev := NewEventsFile(hub, "", nil)
	status := NewGenFile(func(context.Context) []byte { return []byte("running\n") })
	dir := &staticDir{base: newBase(os.ModeDir | 0o755), entries: []Entry{{"events", ev}, {"status", status}}}
	es, err := Entries(ctx, dir)
	if err != nil || len(es) != 1 || es[0].Name != "status" {
		t.Fatalf("Entries = %v, %v; want only status", es, err)
	}
	if n, err := dir.Lookup(ctx, "events"); err != nil || n != ev {
		t.Fatalf("Lookup(events) = %v, %v", n, err)
	}
	h, err := Open(ctx, ev, os.O_RDONLY|syscall.O_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Release()
	if n, err := h.Read(ctx, make([]byte, 10), 0); n != 0 || err != nil {
		t.Fatalf("O_NONBLOCK read with nothing buffered: %d, %v; want 0 at once", n, err)
	}
	hub.Publish(instance.Event{Time: time.Now(), Instance: "a", State: "running", Detail: "guest ready"})
	b := make([]byte, 100)
	if n, _ := h.Read(ctx, b, 0); !strings.Contains(string(b[:n]), "a running guest ready") {
		t.Fatalf("O_NONBLOCK read after an event: %q", b[:n])
	}
}

// What one open file of config receives is one document: applied when a
// write completes it, trailing whitespace accepted, a second value or a
// gap refused (EINVAL) with nothing more applied, a document cut short
// applied on close.
func TestDocFileOneDocumentPerOpen(t *testing.T) {
	ctx := context.Background()
	var got []string
	doc := NewDocFile(1<<20, func(context.Context) []byte { return nil }, jsonSplit,
		func(_ context.Context, b []byte) error { got = append(got, string(b)); return nil })
	doc.setOwner("config", nil)
	write := func(h Handle, s string, off int64) error {
		_, err := h.Write(ctx, []byte(s), off)
		return err
	}
	h, _ := Open(ctx, doc, os.O_WRONLY)
	if err := write(h, "{}\n", 0); err != nil || len(got) != 1 {
		t.Fatalf("a whole document: %v, applied %q", err, got)
	}
	if err := write(h, "\n", 3); err != nil {
		t.Fatalf("trailing whitespace: %v", err)
	}
	if err := write(h, `{"cpus":2}`, 4); Errno(err) != syscall.EINVAL || !strings.Contains(err.Error(), "more than one JSON value") {
		t.Fatalf("a second document: %v", err)
	}
	h.Flush(ctx)
	if len(got) != 1 {
		t.Fatalf("applied %q, want one document", got)
	}

	h, _ = Open(ctx, doc, os.O_WRONLY)
	write(h, `{"cpus":`, 0)
	write(h, ` 1}`, 8)
	if len(got) != 2 || got[1] != `{"cpus": 1}` {
		t.Fatalf("two writes: applied %q", got)
	}
	h, _ = Open(ctx, doc, os.O_WRONLY)
	write(h, `{"cpus":1`, 0)
	if len(got) != 2 {
		t.Fatal("a document cut short was applied before close")
	}
	if err := h.Flush(ctx); err != nil || len(got) != 3 {
		t.Fatalf("close of a document cut short: %v, applied %q", err, got)
	}
	h, _ = Open(ctx, doc, os.O_WRONLY)
	if err := write(h, "{}", 10); Errno(err) != syscall.EINVAL || strings.ContainsRune(err.Error(), 0) {
		t.Fatalf("a write past the end: %v", err)
	}
	h.Flush(ctx)
	if len(got) != 3 {
		t.Fatalf("a gap applied something: %q", got)
	}
}
