package logcap

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Past the cap the file keeps its newest lines, from a line start, behind
// a note line saying how much went; the same inode, so a reader that had
// it open reads the new content; it never grows far past the cap.
func TestCap(t *testing.T) {
	path := filepath.Join(t.TempDir(), "console.log")
	const max = 64 << 10
	c, err := Open(path, 0o600, max)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	reader, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	before, _ := os.Stat(path)
	total := 0
	for k := 0; k < 5000; k++ {
		line := fmt.Sprintf("line %05d %s\n", k, strings.Repeat("x", k%50))
		total += len(line)
		if _, err := c.Write([]byte(line)); err != nil {
			t.Fatal(err)
		}
		if fi, _ := os.Stat(path); fi.Size() > max+200 {
			t.Fatalf("after line %d the file is %d bytes, cap %d", k, fi.Size(), max)
		}
	}
	after, _ := os.Stat(path)
	if !os.SameFile(before, after) {
		t.Fatal("the log is another file after the drop")
	}
	b, _ := os.ReadFile(path)
	first, rest, _ := bytes.Cut(b, []byte("\n"))
	if !bytes.HasPrefix(first, []byte("[hypefs: ")) || !bytes.Contains(first, []byte("dropped from the start of this log")) {
		t.Fatalf("first line %q is not the note", first)
	}
	if !bytes.HasPrefix(rest, []byte("line ")) {
		t.Fatalf("the kept part does not start at a line: %q", rest[:min(40, len(rest))])
	}
	if !bytes.HasSuffix(b, []byte("line 04999 "+strings.Repeat("x", 4999%50)+"\n")) {
		t.Fatalf("the newest line is not at the end: %q", b[len(b)-40:])
	}
	if int(c.Dropped())+len(b)-len(first)-1 < total-max {
		t.Fatalf("dropped %d bytes, kept %d, wrote %d: bytes vanished uncounted", c.Dropped(), len(b), total)
	}
	got := make([]byte, 20)
	if n, _ := reader.ReadAt(got, 0); n == 0 || !bytes.HasPrefix(got[:n], []byte("[hypefs")) {
		t.Fatalf("a reader that opened the log before reads %q", got[:n])
	}
}

// No cap: the file grows as written.
func TestNoCap(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vmm.log")
	c, err := Open(path, 0o600, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for k := 0; k < 1000; k++ {
		c.Write(bytes.Repeat([]byte("y"), 100))
	}
	if fi, _ := os.Stat(path); fi.Size() != 100000 {
		t.Fatalf("size %d", fi.Size())
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", fi.Mode())
	}
}
