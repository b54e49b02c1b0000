// Package sock holds the two socket chores every server in hypefs shares:
// binding a Unix socket where a stale one may lie (ListenUnix), and an
// accept loop that rides out passing trouble such as running out of
// descriptors (Serve).
package sock

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"time"
)

// PathMax is the size of sockaddr_un.sun_path, NUL included: 108 bytes on
// Linux, 104 on macOS. A socket path must be shorter.
func PathMax() int {
	if runtime.GOOS == "darwin" {
		return 104
	}
	return 108
}

// ListenUnix binds a Unix socket at path with mode 0600 and returns its
// listener, whose Close removes the socket file.
//
// A socket file already at path that no one answers on (left by a killed
// process) is replaced; one that answers means another process serves it,
// and anything that is not a socket is left alone: both are errors. The
// socket is bound in a private directory beside path, given its mode and
// renamed into place, so no one can connect before the mode is set
// (unless the private name would not fit sun_path: then it is bound in
// place).
func ListenUnix(path string) (net.Listener, error) {
	path, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("socket path: %w", err)
	}
	if err := clearStale(path); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(path), ".sock")
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", path, err)
	}
	defer os.RemoveAll(tmp)
	bind := filepath.Join(tmp, "s")
	if len(bind) >= PathMax() {
		bind = path
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: bind, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", path, err)
	}
	l.SetUnlinkOnClose(false)
	if err := os.Chmod(bind, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("listen %s: socket mode: %w", path, err)
	}
	if bind != path {
		if err := os.Rename(bind, path); err != nil {
			l.Close()
			return nil, fmt.Errorf("listen %s: %w", path, err)
		}
	}
	return &unixListener{UnixListener: l, path: path}, nil
}

// clearStale removes a socket at path that nobody listens on; it refuses
// to replace a live socket or anything that is not a socket.
func clearStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("listen %s: %w", path, err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("listen %s: exists and is not a socket", path)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("listen %s: another process is serving it", path)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("listen %s: remove the stale socket: %w", path, err)
	}
	return nil
}

// unixListener removes its socket file on Close.
type unixListener struct {
	*net.UnixListener
	path string
	once sync.Once
}

func (l *unixListener) Close() error {
	err := l.UnixListener.Close()
	l.once.Do(func() { os.Remove(l.path) })
	return err
}

// Serve accepts connections on l and hands each to handle, until handle
// returns false (Serve then returns nil) or l fails for good (Serve
// returns that error; after l.Close it is net.ErrClosed). Passing trouble
// (a timeout, out of descriptors or buffers, a connection aborted before
// it was accepted) is waited out, 5 ms doubling to 1 s, instead of ending
// the service. handle runs on Serve's goroutine: start one for the
// connection's work.
func Serve(l net.Listener, handle func(net.Conn) bool) error {
	backoff := 5 * time.Millisecond
	for {
		c, err := l.Accept()
		if err != nil {
			if !passing(err) {
				return err
			}
			time.Sleep(backoff)
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		if !handle(c) {
			return nil
		}
	}
}

// passing reports whether an accept error is worth waiting out.
func passing(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() ||
		errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM)
}
