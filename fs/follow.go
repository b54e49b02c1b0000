package fs

import (
	"context"
	"net"
	"sync"
	"syscall"
	"time"
)

// followLimit bounds what one open follow handle buffers unread; older
// bytes are dropped beyond it (a reader that does not read loses output;
// the guest and the daemon never wait for it).
const followLimit = 4 << 20

// followBuf is the unread data of one open follow file: appended to by a
// producer, read by the handle's reads, which block while it is empty.
type followBuf struct {
	mu     sync.Mutex
	buf    []byte
	closed bool          // no more data will come
	wake   chan struct{} // closed and replaced when data arrives
}

func newFollowBuf() *followBuf { return &followBuf{wake: make(chan struct{})} }

func (f *followBuf) append(p []byte, closed bool) {
	f.mu.Lock()
	f.buf = append(f.buf, p...)
	if over := len(f.buf) - followLimit; over > 0 {
		f.buf = append(f.buf[:0], f.buf[over:]...)
	}
	f.closed = f.closed || closed
	close(f.wake)
	f.wake = make(chan struct{})
	f.mu.Unlock()
}

// read returns what is buffered at once, or blocks until some arrives,
// the producer ends (0, EOF), or ctx ends (EINTR).
func (f *followBuf) read(ctx context.Context, p []byte) (int, error) {
	for {
		f.mu.Lock()
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
// interrupt ends it with EINTR); a write types into the guest. It reports
// size 0 (so file managers do not sniff it) and uses direct I/O.
type ConsoleFile struct {
	base
	socket func() (path string, live bool)
	refuse func(msg string) error // records why a write was refused
}

// NewConsoleFile makes a console file for the shim socket socket returns.
func NewConsoleFile(socket func() (string, bool), refuse func(string) error) *ConsoleFile {
	return &ConsoleFile{base: newBase(0o644), socket: socket, refuse: refuse}
}

func (f *ConsoleFile) Stat(context.Context) (int64, time.Time) { return 0, time.Now() }
func (f *ConsoleFile) Truncate(context.Context, uint64) error  { return nil }

func (f *ConsoleFile) Open(ctx context.Context, flags int) (Handle, error) {
	h := &consoleHandle{f: f, in: newFollowBuf()}
	path, live := f.socket()
	var conn net.Conn
	var err error
	if live {
		conn, err = net.DialTimeout("unix", path, 2*time.Second)
	}
	if !live || err != nil {
		h.in.append(nil, true) // a VM that does not run: EOF at once
		return h, nil
	}
	h.conn = conn
	go h.pump()
	return h, nil
}

type consoleHandle struct {
	f    *ConsoleFile
	conn net.Conn
	in   *followBuf
}

func (h *consoleHandle) pump() {
	b := make([]byte, 32<<10)
	for {
		n, err := h.conn.Read(b)
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
	if h.conn == nil {
		return 0, h.f.refuse("console: the VM is not running, nothing reads what is typed")
	}
	h.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	n, err := h.conn.Write(p)
	if err != nil {
		return n, h.f.refuse("console: the VM stopped reading its console (" + err.Error() + ")")
	}
	return n, nil
}

func (h *consoleHandle) Flush(context.Context) error { return nil }
func (h *consoleHandle) Release() {
	if h.conn != nil {
		h.conn.Close()
	}
}
func (h *consoleHandle) DirectIO() bool { return true }
func (h *consoleHandle) Stream() bool   { return true }
