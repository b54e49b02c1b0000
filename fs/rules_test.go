package fs

import (
	"context"
	"errors"
	"os"
	"syscall"
	"testing"
	"time"
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
	for _, tc := range []struct {
		name string
		n    Node
		a    SetAttr
		want error
	}{
		{"chmod ctl", ctl, SetAttr{Mode: true}, syscall.EPERM},
		{"chown dir", dir, SetAttr{Owner: true}, syscall.EPERM},
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
	if a := Stat(ctx, status); a.Size != 8 || a.Blocks != 1 || a.Nlink != 1 || a.Mode != 0o444 {
		t.Errorf("stat status: %+v", a)
	}
	if a := Stat(ctx, dir); a.Nlink != 2 || !a.Mode.IsDir() || a.Mtime.IsZero() {
		t.Errorf("stat dir: %+v", a)
	}
}
