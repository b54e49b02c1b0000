package fs

import (
	"context"
	"fmt"
	"net"
	"sync"
	"syscall"
	"time"

	"hypefs/internal/errno"
)

// followLimit bounds what one open follow handle buffers unread; older
// bytes are dropped beyond it (a reader that does not read loses output;
// the guest and the daemon never wait for it).
const followLimit = 4 << 20

// DefaultFollowMemory is what all open follow handles together may hold
// unread, unless SetFollowMemory says otherwise.
const DefaultFollowMemory = 64 << 20

// followMem is the memory open follow handles share: each may hold its
// share of it (and at most followLimit), so that however many readers
// stop reading, the daemon holds at most the total for them.
var followMem = &followBudget{total: DefaultFollowMemory}

type followBudget struct {
	mu      sync.Mutex
	total   int
	readers int
}

// SetFollowMemory sets what all open follow handles together may hold
// unread (--follow-memory).
func SetFollowMemory(total int) {
	followMem.mu.Lock()
	followMem.total = total
	followMem.mu.Unlock()
}

func (b *followBudget) join(n int) {
	b.mu.Lock()
	b.readers += n
	b.mu.Unlock()
}

// share is what one reader may hold now.
func (b *followBudget) share() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return min(followLimit, b.total/max(b.readers, 1))
}

// followBuf is the unread data of one open follow file: appended to by a
// producer, read by the handle's reads, which block while it is empty
// (unless the file was opened O_NONBLOCK). Past its share of the follow
// memory, the oldest unread bytes are dropped, and the reader's next read
// starts with a line saying so.
type followBuf struct {
	mu       sync.Mutex
	buf      []byte
	closed   bool          // no more data will come
	wake     chan struct{} // closed and replaced when data arrives
	nonblock bool          // opened O_NONBLOCK: never wait
	dropped  int64         // bytes dropped since the reader last read
	left     bool          // release was called
}

func newFollowBuf(flags int) *followBuf {
	followMem.join(1)
	return &followBuf{wake: make(chan struct{}), nonblock: flags&syscall.O_NONBLOCK != 0}
}

// release gives the buffer's share back (the handle is closed).
func (f *followBuf) release() {
	f.mu.Lock()
	left := f.left
	f.left, f.buf = true, nil
	f.mu.Unlock()
	if !left {
		followMem.join(-1)
	}

}

func (f *followBuf) append(p []byte, closed bool) {
	f.mu.Lock()
	f.buf = append(f.buf, p...)
	if over := len(f.buf) - followMem.share(); over > 0 && !f.left {
		f.buf = append(f.buf[:0], f.buf[over:]...)
		f.dropped += int64(over)
	}
	f.closed = f.closed || closed
	close(f.wake)
	f.wake = make(chan struct{})
	f.mu.Unlock()
}

// read returns what is buffered at once, or blocks until some arrives,
// the producer ends (0, EOF), or ctx ends (EINTR). After a drop, a note
// line comes first. A reader that opened O_NONBLOCK (open's flags are what
// the daemon sees; a read's own are not passed on) never waits: with
// nothing buffered it reads 0 bytes, as at the current end of a growing
// regular file, and a later read returns what arrived meanwhile. Not
// EAGAIN: Midnight Commander's viewer opens files O_NONBLOCK and retries
// EAGAIN at once, forever, so it froze on EAGAIN as it did on a blocking
// read; at 0 bytes it shows what it has.
func (f *followBuf) read(ctx context.Context, p []byte) (int, error) {
	for {
		f.mu.Lock()
		if f.dropped > 0 {
			note := fmt.Sprintf("\n[hypefs: %d bytes dropped here: this reader fell behind]\n", f.dropped)
			if len(p) >= len(note) {
				f.dropped = 0
				n := copy(p, note)
				f.mu.Unlock()
				return n, nil
			}
		}
		if len(f.buf) > 0 {
			n := copy(p, f.buf)
			f.buf = f.buf[n:]
			f.mu.Unlock()
			return n, nil
		}
		if f.closed {
			f.mu.Unlock()
			return 0, nil
		}
		if f.nonblock {
			f.mu.Unlock()
			return 0, nil
		}
		wake := f.wake
		f.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return 0, syscall.EINTR
		}
	}
}

// ConsoleFile follows a VM's live console: a read returns what arrived
// since open as soon as there is any, or blocks until some arrives (an
// interrupt ends it with EINTR); a write types into the guest. While a
// boot is being set up, an open console waits for the VM's console to
// exist and then follows it from its first byte. It reports size 0 (so
// file managers do not sniff it), uses direct I/O, and is not listed.
type ConsoleFile struct {
	base
	// console waits for the console's socket: it returns false when no VM
	// runs and none is starting (or ctx ends).
	console func(ctx context.Context) (path string, ok bool)
}

// NewConsoleFile makes a console file over the socket console returns.
func NewConsoleFile(console func(context.Context) (string, bool)) *ConsoleFile {
	return &ConsoleFile{base: newBase(0o644), console: console}
}

func (f *ConsoleFile) Stat(context.Context) (int64, time.Time) { return 0, f.changed() }
func (f *ConsoleFile) Truncate(context.Context, uint64) error  { return nil }

// Follows marks a follow file.
func (f *ConsoleFile) Follows() {}

func (f *ConsoleFile) Open(ctx context.Context, flags int) (Handle, error) {
	wctx, cancel := context.WithCancel(context.Background())
	h := &consoleHandle{f: f, in: newFollowBuf(flags), ready: make(chan struct{}), cancel: cancel}
	go h.connect(wctx)
	return h, nil
}

type consoleHandle struct {
	f      *ConsoleFile
	in     *followBuf
	ready  chan struct{} // closed once conn is known (nil: no VM)
	cancel context.CancelFunc

	mu       sync.Mutex
	conn     net.Conn
	released bool
}

// connect waits for the VM's console, then copies its output into the
// handle's buffer until it ends.
func (h *consoleHandle) connect(ctx context.Context) {
	var conn net.Conn
	if path, ok := h.f.console(ctx); ok {
		conn, _ = net.DialTimeout("unix", path, 2*time.Second)
	}
	h.mu.Lock()
	if h.released && conn != nil {
		conn.Close()
		conn = nil
	}
	h.conn = conn
	h.mu.Unlock()
	close(h.ready)
	if conn == nil {
		h.in.append(nil, true) // no VM runs: EOF
		return
	}
	b := make([]byte, 32<<10)
	for {
		n, err := conn.Read(b)
		h.in.append(b[:n], err != nil)
		if err != nil {
			return
		}
	}
}

func (h *consoleHandle) Read(ctx context.Context, p []byte, _ int64) (int, error) {
	return h.in.read(ctx, p)
}

func (h *consoleHandle) Write(ctx context.Context, p []byte, _ int64) (int, error) {
	select {
	case <-h.ready:
	case <-ctx.Done():
		return 0, syscall.EINTR
	}
	h.mu.Lock()
	conn := h.conn
	h.mu.Unlock()
	if conn == nil {
		return 0, refuse(h.f, "console", errno.New(syscall.EIO,
			"console: the VM is not running, nothing reads what is typed (hint: echo start > ctl)"))
	}
	conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	n, err := conn.Write(p)
	if err != nil {
		return n, refuse(h.f, "console", errno.New(syscall.EIO, "console: the VM stopped reading its console ("+err.Error()+")"))
	}
	return n, nil
}

func (h *consoleHandle) Flush(context.Context) error { return nil }
func (h *consoleHandle) Release() {
	h.cancel()
	h.mu.Lock()
	h.released = true
	if h.conn != nil {
		h.conn.Close()
	}
	h.mu.Unlock()
	h.in.release()
}
func (h *consoleHandle) DirectIO() bool { return true }
func (h *consoleHandle) Stream() bool   { return true }
