package fs

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"
	"time"

	"hypefs/internal/errno"
)

// base carries a node's id, mode, ownership (see access.go) and
// modification time. A node of an instance's directory also knows its
// name and how to record a refusal in the instance's error file (set by
// the directory).
type base struct {
	id    uint64
	mode  os.FileMode
	own   *Ownership
	born  time.Time
	mtime func() time.Time // when the content last changed; nil: born
	nm    string
	ref   func(cause string, err *errno.Error) error
}

func (b *base) ID() uint64                               { return b.id }
func (b *base) Mode() os.FileMode                        { return b.mode }
func (b *base) Ownership() *Ownership                    { return b.own }
func (b *base) setAccess(o *Ownership, mode os.FileMode) { b.own, b.mode = o, mode }

func newBase(mode os.FileMode) base { return base{id: NewID(), mode: mode, born: time.Now()} }

// changed is the node's modification time.
func (b *base) changed() time.Time {
	if b.mtime != nil {
		if t := b.mtime(); !t.IsZero() {
			return t
		}
	}
	return b.born
}

func (b *base) name() string { return b.nm }

func (b *base) refuser() func(string, *errno.Error) error { return b.ref }

// refuser is a node that can record a refusal in its instance's error file.
type refuser interface {
	refuser() func(string, *errno.Error) error
}

// timed is a node whose modification time can be set.
type timed interface {
	setMtime(func() time.Time)
	setOwner(name string, ref func(string, *errno.Error) error)
}

func (b *base) setMtime(f func() time.Time) { b.mtime = f }
func (b *base) setOwner(name string, ref func(string, *errno.Error) error) {
	b.nm, b.ref = name, ref
}

// noWrite is the refusal of read-only handles.
type noWrite struct{}

func (noWrite) Write(context.Context, []byte, int64) (int, error) { return 0, syscall.EBADF }

// GenFile is a read-only file generated at open: each open sees one
// consistent snapshot, read at any offset, EOF at its end.
type GenFile struct {
	base
	gen func(ctx context.Context) []byte
}

// WithMtime makes the file report mtime() as its modification time, e.g.
// when the state it shows last changed. Without it, the file's time is
// when it was made: its content changes only with what made it.
func (f *GenFile) WithMtime(mtime func() time.Time) *GenFile {
	f.mtime = mtime
	return f
}

// NewGenFile makes a read-only generated file.
func NewGenFile(gen func(ctx context.Context) []byte) *GenFile {
	return &GenFile{base: newBase(0o444), gen: gen}
}

func (f *GenFile) Stat(ctx context.Context) (int64, time.Time) {
	return int64(len(f.gen(ctx))), f.changed()
}

func (f *GenFile) Open(ctx context.Context, flags int) (Handle, error) {
	if flags&(os.O_WRONLY|os.O_RDWR) != 0 {
		return nil, syscall.EACCES
	}
	return &snapHandle{data: f.gen(ctx)}, nil
}

type snapHandle struct {
	noWrite
	data []byte
}

func (h *snapHandle) Read(_ context.Context, p []byte, off int64) (int, error) {
	return readAt(h.data, p, off), nil
}
func (h *snapHandle) Flush(context.Context) error { return nil }
func (h *snapHandle) Release()                    {}
func (h *snapHandle) DirectIO() bool              { return true }
func (h *snapHandle) Stream() bool                { return false }

func readAt(data, p []byte, off int64) int {
	if off < 0 || off >= int64(len(data)) {
		return 0
	}
	return copy(p, data[off:])
}

// CtlFile takes commands: each write is handed to do whole (a command per
// write); reading shows what show generates. It accepts the truncate that
// a shell's `>` sends first.
type CtlFile struct {
	writable
	do func(ctx context.Context, data []byte) error
}

// writable is what the files that take writes (ctl, config) share: they
// read as what show generates, and take the truncate and time changes
// that a shell's `>` and editors send (and ignore them).
type writable struct {
	base
	show func(ctx context.Context) []byte
}

func (f *writable) Stat(ctx context.Context) (int64, time.Time) {
	return int64(len(f.show(ctx))), f.changed()
}

// WithMtime makes the file report mtime() as its modification time.
func (f *writable) WithMtime(mtime func() time.Time)       { f.mtime = mtime }
func (f *writable) Truncate(context.Context, uint64) error { return nil }
func (f *writable) Touch(time.Time) error                  { return nil }

// NewCtlFile makes a command file.
func NewCtlFile(mode os.FileMode, show func(context.Context) []byte, do func(context.Context, []byte) error) *CtlFile {
	return &CtlFile{writable: writable{base: newBase(mode), show: show}, do: do}
}

func (f *CtlFile) Open(ctx context.Context, flags int) (Handle, error) {
	return &ctlHandle{snapHandle: snapHandle{data: f.show(ctx)}, f: f}, nil
}

type ctlHandle struct {
	snapHandle
	f *CtlFile
}

func (h *ctlHandle) Write(ctx context.Context, p []byte, off int64) (int, error) {
	if err := h.f.do(ctx, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// DocFile is a file written as one document: what one open file receives
// is one document. Writes collect in the handle, in order; split says how
// long the first document in them is and whether it is complete. A write
// that completes it commits it at once (its errno is the write's); later
// bytes of the same open may only be whitespace (else EINVAL, and nothing
// more is committed). A document cut short is committed on close. Reading
// shows what show generates.
type DocFile struct {
	writable
	max    int
	split  func(buf []byte) (n int, complete bool)
	commit func(ctx context.Context, doc []byte) error
}

// NewDocFile makes a document file of at most max bytes.
func NewDocFile(max int, show func(context.Context) []byte, split func([]byte) (int, bool), commit func(context.Context, []byte) error) *DocFile {
	return &DocFile{writable: writable{base: newBase(0o644), show: show}, max: max, split: split, commit: commit}
}

func (f *DocFile) Open(ctx context.Context, flags int) (Handle, error) {
	return &docHandle{snapHandle: snapHandle{data: f.show(ctx)}, f: f}, nil
}

type docHandle struct {
	snapHandle
	f   *DocFile
	mu  sync.Mutex
	buf []byte // what this open received, in order
	// done: the document was committed (or refused, with err): later
	// writes may only add whitespace after its end.
	done bool
	end  int   // where the document ends in buf
	err  error // the refusal that later writes repeat
}

func (h *docHandle) refuse(err *errno.Error) error {
	h.done, h.err = true, err
	return refuse(h.f, h.f.nm, err)
}

func (h *docHandle) Write(ctx context.Context, p []byte, off int64) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.err != nil {
		return 0, h.err
	}
	end := off + int64(len(p))
	switch {
	case off < 0 || off > int64(len(h.buf)):
		return 0, h.refuse(errno.Errorf(syscall.EINVAL,
			"%s is written in order, as one document: a write at offset %d leaves a gap after byte %d; nothing was applied", h.f.nm, off, len(h.buf)))
	case end > int64(h.f.max):
		// Hand the oversize document to commit so it can record why.
		h.done = true
		h.err = h.f.commit(ctx, make([]byte, h.f.max+1))
		if h.err == nil {
			h.err = syscall.EFBIG
		}
		return 0, h.err
	}
	if end > int64(len(h.buf)) {
		h.buf = append(h.buf, make([]byte, end-int64(len(h.buf)))...)
	}
	copy(h.buf[off:], p)
	if h.done {
		if len(bytes.TrimSpace(h.buf[h.end:])) > 0 {
			return 0, h.refuse(h.second())
		}
		return len(p), nil
	}
	n, complete := h.f.split(h.buf)
	if !complete {
		return len(p), nil
	}
	if len(bytes.TrimSpace(h.buf[n:])) > 0 {
		return 0, h.refuse(h.second())
	}
	h.done = true
	h.end = n
	if err := h.f.commit(ctx, h.buf[:n]); err != nil {
		h.err = err
		return 0, err
	}
	return len(p), nil
}

// second is the refusal of a second document in one open file.
func (h *docHandle) second() *errno.Error {
	return errno.Errorf(syscall.EINVAL,
		"more than one JSON value written to %s in one open; only the first is a document, nothing after it was applied (hint: write each document with its own open, e.g. echo '{...}' > %s)", h.f.nm, h.f.nm)
}

func (h *docHandle) Flush(ctx context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.done || len(h.buf) == 0 {
		return nil
	}
	h.done = true
	h.end = len(h.buf)
	h.err = h.f.commit(ctx, h.buf)
	return h.err
}

// BackedFile shows a file on disk that only grows, such as the console
// log: real size, reads at any offset, EOF at its end, so cat, cp, grep,
// tail -f and less work. It goes through the page cache (or FUSE
// passthrough). The file is made empty when missing, so that a reader
// opened before anything was logged reads what comes (tail -f before the
// first boot). Once gone reports true (the instance was removed), the
// node opens nothing and shows nothing: a new instance of the same name
// is a new file, and a reader of the old one keeps the file it opened.
type BackedFile struct {
	base
	path string
	gone func() bool
}

// NewBackedFile shows path read-only; gone, if not nil, tells when the
// file is no longer this node's.
func NewBackedFile(path string, gone func() bool) *BackedFile {
	return &BackedFile{base: newBase(0o444), path: path, gone: gone}
}

func (f *BackedFile) isGone() bool { return f.gone != nil && f.gone() }

func (f *BackedFile) Stat(context.Context) (int64, time.Time) {
	if f.isGone() {
		return 0, f.born
	}
	fi, err := os.Stat(f.path)
	if err != nil {
		return 0, f.born
	}
	return fi.Size(), fi.ModTime()
}

func (f *BackedFile) Open(ctx context.Context, flags int) (Handle, error) {
	if flags&(os.O_WRONLY|os.O_RDWR) != 0 {
		return nil, syscall.EACCES
	}
	if f.isGone() {
		return nil, syscall.ENOENT
	}
	fh, err := os.OpenFile(f.path, os.O_RDONLY|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", f.path, err)
	}
	return &fileHandle{f: fh}, nil
}

type fileHandle struct {
	noWrite
	f *os.File
}

func (h *fileHandle) Read(_ context.Context, p []byte, off int64) (int, error) {
	n, err := h.f.ReadAt(p, off)
	if err == io.EOF {
		err = nil
	}
	return n, err
}

// Stat is the opened file's own size and time (fstat): after its
// instance is removed it is still the file that was opened.
func (h *fileHandle) Stat() (int64, time.Time) {
	fi, err := h.f.Stat()
	if err != nil {
		return 0, time.Time{}
	}
	return fi.Size(), fi.ModTime()
}

// Fd is the backing file's descriptor: adapters that can (FUSE
// passthrough) let the kernel read it directly.
func (h *fileHandle) Fd() (int, bool) { return int(h.f.Fd()), true }

func (h *fileHandle) Flush(context.Context) error { return nil }
func (h *fileHandle) Release()                    { h.f.Close() }
func (h *fileHandle) DirectIO() bool              { return false }
func (h *fileHandle) Stream() bool                { return false }

// line returns s ending in a newline, or nothing when s is empty.
func line(s string) []byte {
	if s == "" {
		return nil
	}
	var b bytes.Buffer
	b.WriteString(s)
	if s[len(s)-1] != '\n' {
		b.WriteByte('\n')
	}
	return b.Bytes()
}
