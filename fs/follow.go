package fs

import (
	"context"
	"net"
	"sync"
	"syscall"
	"time"
)

// followLimit bounds what one open console handle buffers unread; older
// bytes are dropped beyond it (a reader that does not read loses output,
// the guest never waits for it).
const followLimit = 4 << 20

// ConsoleFile follows a VM's live console: a read returns what arrived
// since open as soon as there is any, or blocks until some arrives (an
// interrupt ends it with EINTR); a write types into the guest. It reports
// size 0 and uses direct I/O.
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
func (f *ConsoleFile) Touch(time.Time) error                   { return nil }

func (f *ConsoleFile) Open(ctx context.Context, flags int) (Handle, error) {
	h := &followHandle{f: f, wake: make(chan struct{})}
	path, live := f.socket()
	if !live {
		h.closed = true
		return h, nil
	}
	conn, err := net.DialTimeout("unix", path, 2*time.Second)
	if err != nil {
		h.closed = true
		return h, nil
	}
	h.conn = conn
	go h.pump()
	return h, nil
}

type followHandle struct {
	f    *ConsoleFile
	conn net.Conn

	mu     sync.Mutex
	buf    []byte
	closed bool          // no more data will come
	wake   chan struct{} // closed and replaced when data arrives
}

func (h *followHandle) pump() {
	b := make([]byte, 32<<10)
	for {
		n, err := h.conn.Read(b)
		h.mu.Lock()
		if n > 0 {
			h.buf = append(h.buf, b[:n]...)
			if over := len(h.buf) - followLimit; over > 0 {
				h.buf = append(h.buf[:0], h.buf[over:]...)
			}
		}
		if err != nil {
			h.closed = true
		}
		close(h.wake)
		h.wake = make(chan struct{})
		h.mu.Unlock()
		if err != nil {
			return
		}
	}
}

func (h *followHandle) Read(ctx context.Context, p []byte, _ int64) (int, error) {
	for {
		h.mu.Lock()
		if len(h.buf) > 0 {
			n := copy(p, h.buf)
			h.buf = h.buf[n:]
			h.mu.Unlock()
			return n, nil
		}
		if h.closed {
			h.mu.Unlock()
			return 0, nil
		}
		wake := h.wake
		h.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return 0, syscall.EINTR
		}
	}
}

func (h *followHandle) Write(ctx context.Context, p []byte, _ int64) (int, error) {
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

func (h *followHandle) Flush(context.Context) error { return nil }
func (h *followHandle) Release() {
	if h.conn != nil {
		h.conn.Close()
	}
}
func (h *followHandle) DirectIO() bool { return true }
func (h *followHandle) Stream() bool   { return true }
