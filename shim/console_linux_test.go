package shim

import (
	"io"
	"net"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

func serveTestConsole(t *testing.T) (*console, string) {
	t.Helper()
	dir := t.TempDir()
	c, err := newConsole(filepath.Join(dir, "console.log"), 0, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "c.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go c.serve(l, func() io.Writer { return io.Discard })
	return c, sock
}

func clients(c *console) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.clients)
}

// A client that closes is dropped at once, while the guest is silent; one
// that only shuts its writing side keeps receiving output.
func TestConsoleDropsClosedClient(t *testing.T) {
	c, sock := serveTestConsole(t)
	gone, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	half, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer half.Close()
	deadline := time.Now().Add(5 * time.Second)
	for clients(c) != 2 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	gone.Close()
	half.(*net.UnixConn).CloseWrite()
	for clients(c) != 1 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := clients(c); n != 1 {
		t.Fatalf("%d clients after one closed and one half-closed, with no output meanwhile; want 1", n)
	}
	c.Write([]byte("still there\n"))
	half.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 64)
	n, err := half.Read(b)
	if string(b[:n]) != "still there\n" {
		t.Fatalf("half-closed client read %q, %v", b[:n], err)
	}
}

// emfileListener fails its first accepts with EMFILE, as a process out of
// descriptors does.
type emfileListener struct {
	net.Listener
	fails int
}

func (l *emfileListener) Accept() (net.Conn, error) {
	if l.fails > 0 {
		l.fails--
		return nil, &net.OpError{Op: "accept", Net: "unix", Err: syscall.EMFILE}
	}
	return l.Listener.Accept()
}

// The console server rides out running out of descriptors: clients that
// come after are served.
func TestConsoleSurvivesEMFILE(t *testing.T) {
	dir := t.TempDir()
	c, err := newConsole(filepath.Join(dir, "console.log"), 0, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "c.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go c.serve(&emfileListener{Listener: l, fails: 5}, func() io.Writer { return io.Discard })
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	deadline := time.Now().Add(5 * time.Second)
	for clients(c) != 1 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	c.Write([]byte("after EMFILE\n"))
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 64)
	n, err := conn.Read(b)
	if string(b[:n]) != "after EMFILE\n" {
		t.Fatalf("read %q, %v", b[:n], err)
	}
}
