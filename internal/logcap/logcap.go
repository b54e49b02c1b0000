// Package logcap keeps a log file under a size cap, in place: past the
// cap, the oldest part is dropped and the newest kept, in the same file
// (same inode), so that readers holding it open, `tail -f` and FUSE
// passthrough go on reading it. A note line at the new start says how
// much was dropped.
//
// The drop rewrites the file: the newest Keep(max) bytes, from a line
// start, move to its start behind the note, and the file is truncated
// there. GNU tail -f sees the file shrink ("file truncated") and prints
// it again from its start: keeping little makes that little. Every write
// to a capped file must go through its File, which serializes them with
// the drop (the shim writes console.log, vmm.log and shim.log this way).
package logcap

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"sync"
)

// Default is the cap of each log (console.log, vmm.log, shim.log) unless
// configured otherwise.
const Default = 64 << 20

// Keep is how much of a log survives a drop: a quarter of the cap, at
// most 1 MiB.
func Keep(max int64) int64 { return min(max/4, 1<<20) }

// File appends to a log under a cap. Its zero value is not usable: Open.
type File struct {
	mu      sync.Mutex
	f       *os.File // appends (O_APPEND)
	path    string   // reopened without O_APPEND for the drop
	max     int64    // 0: no cap
	size    int64    // the file's size, as far as writes through f know
	dropped int64    // bytes dropped so far, over every drop
}

// Open opens path for appending (creating it with mode), capped at max
// bytes; max 0 means no cap.
func Open(path string, mode os.FileMode, max int64) (*File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, mode)
	if err != nil {
		return nil, err
	}
	return Wrap(f, path, max), nil
}

// Wrap caps f, already open for appending on path (a descriptor handed
// over, such as the stderr a process was started with).
func Wrap(f *os.File, path string, max int64) *File {
	c := &File{f: f, path: path, max: max}
	if fi, err := f.Stat(); err == nil {
		c.size = fi.Size()
	}
	return c
}

// Write appends p and, when the file has passed its cap, drops its oldest
// part. It fails only when the append does.
func (c *File) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, err := c.f.Write(p)
	c.size += int64(n)
	if c.max > 0 && c.size > c.max {
		if fi, serr := c.f.Stat(); serr == nil {
			c.size = fi.Size() // others may have appended (a panic's trace)
		}
		if c.size > c.max {
			c.drop()
		}
	}
	return n, err
}

// Dropped is how many bytes drops have removed so far.
func (c *File) Dropped() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dropped
}

// Close closes the file.
func (c *File) Close() error { return c.f.Close() }

// drop keeps the newest Keep(max) bytes, from the first line that starts
// in them, behind a note line. Caller holds c.mu.
func (c *File) drop() {
	rw, err := os.OpenFile(c.path, os.O_RDWR, 0)
	if err != nil {
		return // the log grows past its cap rather than losing writes
	}
	defer rw.Close()
	size := c.size
	keep := Keep(c.max)
	tail := make([]byte, keep)
	n, err := rw.ReadAt(tail, size-keep)
	if err != nil && err != io.EOF {
		return
	}
	tail = tail[:n]
	if i := bytes.IndexByte(tail, '\n'); i >= 0 && i < len(tail)-1 {
		tail = tail[i+1:]
	}
	gone := size - int64(len(tail))
	c.dropped += gone
	note := fmt.Sprintf("[hypefs: %s dropped from the start of this log to keep it under %s; %s dropped so far]\n",
		human(gone), human(c.max), human(c.dropped))
	out := append([]byte(note), tail...)
	if _, err := rw.WriteAt(out, 0); err != nil {
		return
	}
	if err := rw.Truncate(int64(len(out))); err != nil {
		return
	}
	c.size = int64(len(out))
}

// human writes a byte count the way people read it.
func human(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d bytes", n)
}
