package fs

import (
	"bytes"
	"context"
	"io"
	"os"
	"sync"
	"syscall"
	"time"
)

// base carries a node's id and mode.
type base struct {
	id   uint64
	mode os.FileMode
}

func (b *base) ID() uint64        { return b.id }
func (b *base) Mode() os.FileMode { return b.mode }

func newBase(mode os.FileMode) base { return base{id: NewID(), mode: mode} }

// noWrite is the refusal of read-only handles.
type noWrite struct{}

func (noWrite) Write(context.Context, []byte, int64) (int, error) { return 0, syscall.EBADF }

// GenFile is a read-only file generated at open: each open sees one
// consistent snapshot, read at any offset, EOF at its end.
type GenFile struct {
	base
	gen   func(ctx context.Context) []byte
	mtime func() time.Time
}

// WithMtime makes the file report mtime() as its modification time
// (instead of now), e.g. when the state it shows last changed.
func (f *GenFile) WithMtime(mtime func() time.Time) *GenFile {
	f.mtime = mtime
	return f
}

// NewGenFile makes a read-only generated file.
func NewGenFile(gen func(ctx context.Context) []byte) *GenFile {
	return &GenFile{base: newBase(0o444), gen: gen}
}

func (f *GenFile) Stat(ctx context.Context) (int64, time.Time) {
	if f.mtime != nil {
		return int64(len(f.gen(ctx))), f.mtime()
	}
	return int64(len(f.gen(ctx))), time.Now()
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
	return int64(len(f.show(ctx))), time.Now()
}
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

// DocFile is a file written as one document: writes collect in the handle
// (at their offsets) and commit is called when the document is complete:
// at once if complete(doc) says so, otherwise on close. Its errno is the
// write's or close's. Reading shows what show generates.
type DocFile struct {
	writable
	max      int
	complete func(doc []byte) bool
	commit   func(ctx context.Context, doc []byte) error
}

// NewDocFile makes a document file that holds at most max bytes per write-through.
func NewDocFile(max int, show func(context.Context) []byte, complete func([]byte) bool, commit func(context.Context, []byte) error) *DocFile {
	return &DocFile{writable: writable{base: newBase(0o644), show: show}, max: max, complete: complete, commit: commit}
}

func (f *DocFile) Open(ctx context.Context, flags int) (Handle, error) {
	return &docHandle{snapHandle: snapHandle{data: f.show(ctx)}, f: f}, nil
}

type docHandle struct {
	snapHandle
	f       *DocFile
	mu      sync.Mutex
	buf     []byte
	pending bool // bytes written and not committed
	tooBig  bool
}

func (h *docHandle) Write(ctx context.Context, p []byte, off int64) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	end := off + int64(len(p))
	if h.tooBig || off < 0 || end > int64(h.f.max) {
		h.tooBig = true
		// Hand the oversize document to commit so it can record why.
		err := h.f.commit(ctx, make([]byte, h.f.max+1))
		if err == nil {
			err = syscall.EFBIG
		}
		return 0, err
	}
	if end > int64(len(h.buf)) {
		h.buf = append(h.buf, make([]byte, end-int64(len(h.buf)))...)
	}
	copy(h.buf[off:], p)
	h.pending = true
	if !h.f.complete(h.buf) {
		return len(p), nil
	}
	h.pending = false
	doc := h.buf
	h.buf = nil
	if err := h.f.commit(ctx, doc); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (h *docHandle) Flush(ctx context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.pending || h.tooBig {
		return nil
	}
	h.pending = false
	doc := h.buf
	h.buf = nil
	return h.f.commit(ctx, doc)
}

// BackedFile shows a file on disk that only grows, such as the console
// log: real size, reads at any offset, EOF at its end, so cat, cp, grep,
// tail -f and less work. It goes through the page cache.
type BackedFile struct {
	base
	path string
}

// NewBackedFile shows path read-only.
func NewBackedFile(path string) *BackedFile { return &BackedFile{base: newBase(0o444), path: path} }

func (f *BackedFile) Stat(context.Context) (int64, time.Time) {
	fi, err := os.Stat(f.path)
	if err != nil {
		return 0, time.Time{}
	}
	return fi.Size(), fi.ModTime()
}

func (f *BackedFile) Open(ctx context.Context, flags int) (Handle, error) {
	if flags&(os.O_WRONLY|os.O_RDWR) != 0 {
		return nil, syscall.EACCES
	}
	fh, err := os.Open(f.path)
	if os.IsNotExist(err) {
		return &snapHandle{}, nil // nothing logged yet: an empty file
	}
	if err != nil {
		return nil, err
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
