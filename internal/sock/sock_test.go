package sock

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func shortDir(t *testing.T) string {
	d, err := os.MkdirTemp("", "sk") // t.TempDir() paths can outgrow sun_path
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func TestListenUnix(t *testing.T) {
	dir := shortDir(t)
	path := filepath.Join(dir, "api.sock")
	l, err := ListenUnix(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("socket: %v %v", fi.Mode(), err)
	}
	if _, err := ListenUnix(path); err == nil {
		t.Fatal("a live socket was replaced")
	}
	// A killed process leaves its socket file: the next listener replaces it.
	l.(*unixListener).UnixListener.Close()
	l2, err := ListenUnix(path)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	if c, err := net.Dial("unix", path); err != nil {
		t.Fatalf("dial the new socket: %v", err)
	} else {
		c.Close()
	}
	l2.Close()
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Fatalf("Close left the socket file: %v", err)
	}
	plain := filepath.Join(dir, "plain")
	os.WriteFile(plain, []byte("keep"), 0o644)
	if _, err := ListenUnix(plain); err == nil {
		t.Fatal("a regular file was replaced")
	}
	if b, _ := os.ReadFile(plain); string(b) != "keep" {
		t.Fatal("the regular file changed")
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("left in the directory: %v", ents)
	}
}

// fakeListener answers Accept from a script.
type fakeListener struct {
	net.Listener
	script []error
}

func (f *fakeListener) Accept() (net.Conn, error) {
	if len(f.script) == 0 {
		return nil, net.ErrClosed
	}
	err := f.script[0]
	f.script = f.script[1:]
	if err != nil {
		return nil, err
	}
	a, b := net.Pipe()
	b.Close()
	return a, nil
}

func TestServeRidesOutPassingErrors(t *testing.T) {
	l := &fakeListener{script: []error{syscall.EMFILE, syscall.ENFILE, nil, &net.OpError{Op: "accept", Err: syscall.ECONNABORTED}, nil}}
	n := 0
	err := Serve(l, func(c net.Conn) bool { c.Close(); n++; return true })
	if n != 2 || !errors.Is(err, net.ErrClosed) {
		t.Fatalf("served %d, ended with %v; want 2 and net.ErrClosed", n, err)
	}
	l = &fakeListener{script: []error{nil, nil, nil}}
	n = 0
	if err := Serve(l, func(c net.Conn) bool { c.Close(); n++; return n < 2 }); err != nil || n != 2 {
		t.Fatalf("handle's false: served %d, %v", n, err)
	}
	l = &fakeListener{script: []error{syscall.EBADF}}
	if err := Serve(l, func(net.Conn) bool { return true }); !errors.Is(err, syscall.EBADF) {
		t.Fatalf("a lasting error: %v", err)
	}
}
