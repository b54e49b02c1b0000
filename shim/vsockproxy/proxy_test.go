package vsockproxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// guestSide stands in for the guest: every Dial returns the proxy's end of
// a real Unix socket pair and hands the test the guest's end.
type guestSide struct {
	t     *testing.T
	l     *net.UnixListener
	conns chan *net.UnixConn
	dials atomic.Int32
}

func newGuestSide(t *testing.T) *guestSide {
	t.Helper()
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(t.TempDir(), "g.sock"), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	g := &guestSide{t: t, l: l, conns: make(chan *net.UnixConn, 8)}
	go func() {
		for {
			c, err := l.AcceptUnix()
			if err != nil {
				return
			}
			g.conns <- c
		}
	}()
	t.Cleanup(func() { l.Close() })
	return g
}

func (g *guestSide) dial(ctx context.Context, port uint32) (net.Conn, error) {
	g.dials.Add(1)
	var d net.Dialer
	return d.DialContext(ctx, "unix", g.l.Addr().String())
}

func (g *guestSide) accept() *net.UnixConn {
	select {
	case c := <-g.conns:
		g.t.Cleanup(func() { c.Close() })
		return c
	case <-time.After(5 * time.Second):
		g.t.Fatal("guest got no connection")
		return nil
	}
}

// startProxy serves s on a fresh Unix socket and returns its path.
func startProxy(t *testing.T, s *Server) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "v.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(l) }()
	t.Cleanup(func() {
		s.Close()
		if err := <-done; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return path
}

func dialProxy(t *testing.T, path string) *net.UnixConn {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c.(*net.UnixConn)
}

func readLine(t *testing.T, r *bufio.Reader) string {
	t.Helper()
	s, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("read line: %v (got %q)", err, s)
	}
	return s
}

// expectEOF reads until the proxy closes. A reset counts as closed too:
// closing a socket with unread input (an over-long request) sends RST.
func expectEOF(t *testing.T, r io.Reader) {
	t.Helper()
	b, err := io.ReadAll(r)
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read to EOF: %v", err)
	}
	if len(b) != 0 {
		t.Fatalf("unexpected bytes before EOF: %q", b)
	}
}

func TestConnectKeepsBytesSentWithHandshake(t *testing.T) {
	g := newGuestSide(t)
	path := startProxy(t, &Server{Dial: g.dial})
	c := dialProxy(t, path)
	// The payload travels in the same write as the CONNECT line, so the
	// proxy reads it into its handshake buffer.
	if _, err := c.Write([]byte("CONNECT 1024\nhello guest")); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(c)
	if got := readLine(t, r); got != "OK 1024\n" {
		t.Fatalf("reply %q, want %q", got, "OK 1024\n")
	}
	gc := g.accept()
	gc.SetDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, len("hello guest"))
	if _, err := io.ReadFull(gc, buf); err != nil || string(buf) != "hello guest" {
		t.Fatalf("guest read %q, %v", buf, err)
	}
	gc.Write([]byte("hello host\n"))
	if got := readLine(t, r); got != "hello host\n" {
		t.Fatalf("client read %q", got)
	}
}

func TestClientHalfClose(t *testing.T) {
	g := newGuestSide(t)
	path := startProxy(t, &Server{Dial: g.dial})
	c := dialProxy(t, path)
	c.Write([]byte("CONNECT 7\n"))
	r := bufio.NewReader(c)
	readLine(t, r)
	gc := g.accept()
	gc.SetDeadline(time.Now().Add(10 * time.Second))

	c.Write([]byte("request"))
	c.CloseWrite()
	got, err := io.ReadAll(gc)
	if err != nil || string(got) != "request" {
		t.Fatalf("guest read %q, %v; want request then EOF", got, err)
	}
	// The other direction still works after the client's half-close.
	gc.Write([]byte("response"))
	gc.Close()
	rest, err := io.ReadAll(r)
	if err != nil || string(rest) != "response" {
		t.Fatalf("client read %q, %v; want response then EOF", rest, err)
	}
}

func TestGuestHalfClose(t *testing.T) {
	g := newGuestSide(t)
	path := startProxy(t, &Server{Dial: g.dial})
	c := dialProxy(t, path)
	c.Write([]byte("CONNECT 7\n"))
	r := bufio.NewReader(c)
	readLine(t, r)
	gc := g.accept()
	gc.SetDeadline(time.Now().Add(10 * time.Second))

	gc.Write([]byte("banner"))
	gc.CloseWrite()
	got, err := io.ReadAll(r)
	if err != nil || string(got) != "banner" {
		t.Fatalf("client read %q, %v; want banner then EOF", got, err)
	}
	c.Write([]byte("late words"))
	c.Close()
	rest, err := io.ReadAll(gc)
	if err != nil || string(rest) != "late words" {
		t.Fatalf("guest read %q, %v; want late words then EOF", rest, err)
	}
}

func TestClientClosesMidHandshake(t *testing.T) {
	g := newGuestSide(t)
	var logs atomic.Int32
	s := &Server{Dial: g.dial, Logf: func(string, ...any) { logs.Add(1) }}
	path := startProxy(t, s)
	for _, partial := range []string{"", "CONN", "CONNECT 5"} {
		c := dialProxy(t, path)
		c.Write([]byte(partial))
		c.Close()
	}
	// The proxy still serves the next client normally.
	c := dialProxy(t, path)
	c.Write([]byte("CONNECT 5\n"))
	if got := readLine(t, bufio.NewReader(c)); got != "OK 5\n" {
		t.Fatalf("reply %q", got)
	}
	if n := g.dials.Load(); n != 1 {
		t.Fatalf("%d dials, want 1 (aborted handshakes must not dial)", n)
	}
	deadline := time.Now().Add(5 * time.Second)
	for logs.Load() < 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if logs.Load() < 3 {
		t.Fatalf("%d refusals logged, want 3", logs.Load())
	}
}

// expectRefusal reads the proxy's "ERR ..." line, then EOF.
func expectRefusal(t *testing.T, c net.Conn, want string) {
	t.Helper()
	r := bufio.NewReader(c)
	line := readLine(t, r)
	if !strings.HasPrefix(line, "ERR ") || !strings.Contains(line, want) || strings.Count(line, "\n") != 1 {
		t.Fatalf("answer %q; want an ERR line containing %q", line, want)
	}
	expectEOF(t, r)
}

func TestRefusesBadRequests(t *testing.T) {
	g := newGuestSide(t)
	path := startProxy(t, &Server{Dial: g.dial})
	for req, want := range map[string]string{
		"HELLO 5\n":              `"HELLO 5" is not "CONNECT <port>"`,
		"CONNECT\n":              `"CONNECT" is not`,
		"CONNECT x\n":            `port "x"`,
		"CONNECT 4294967296\n":   "not a 32-bit unsigned number",
		"CONNECT -1\r\n":         `port "-1"`,
		"CONNECT 5\x00\nHELLO\n": "not a 32-bit",
	} {
		c := dialProxy(t, path)
		c.Write([]byte(req))
		expectRefusal(t, c, want)
	}
	// An endless line is not answered: the proxy stops reading it.
	c := dialProxy(t, path)
	c.Write([]byte(strings.Repeat("A", 200) + "\n"))
	io.ReadAll(c)
	if n := g.dials.Load(); n != 0 {
		t.Fatalf("%d dials for bad requests, want 0", n)
	}
}

func TestHandshakeTimeout(t *testing.T) {
	g := newGuestSide(t)
	path := startProxy(t, &Server{Dial: g.dial, HandshakeTimeout: 100 * time.Millisecond})
	c := dialProxy(t, path)
	c.Write([]byte("CONNECT 5")) // no newline, then silence
	start := time.Now()
	expectEOF(t, c)
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("stalled client closed after %v, want about 100ms", d)
	}
}

func TestDialTimeoutAndFailure(t *testing.T) {
	blocking := func(ctx context.Context, port uint32) (net.Conn, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	path := startProxy(t, &Server{Dial: blocking, DialTimeout: 100 * time.Millisecond})
	c := dialProxy(t, path)
	c.Write([]byte("CONNECT 5\n"))
	expectRefusal(t, c, "connect to guest port 5: context deadline exceeded")

	failing := func(ctx context.Context, port uint32) (net.Conn, error) {
		return nil, errors.New("connection refused by guest\n(second line)")
	}
	path = startProxy(t, &Server{Dial: failing})
	c = dialProxy(t, path)
	c.Write([]byte("CONNECT 5\n"))
	expectRefusal(t, c, "connect to guest port 5: connection refused by guest (second line)")
}

// A dialer that panics costs its client, not the process: the proxy logs
// it and serves the next client.
func TestPanicInDialIsSurvived(t *testing.T) {
	g := newGuestSide(t)
	var logs atomic.Int32
	panicky := func(ctx context.Context, port uint32) (net.Conn, error) {
		if port == 13 {
			var c *net.UnixConn
			c.Close() // what Close on a nil connection does
		}
		return g.dial(ctx, port)
	}
	path := startProxy(t, &Server{Dial: panicky, Logf: func(f string, a ...any) {
		if strings.Contains(f, "panic") {
			logs.Add(1)
		}
	}})
	c := dialProxy(t, path)
	c.Write([]byte("CONNECT 13\n"))
	expectEOF(t, c)
	if logs.Load() != 1 {
		t.Fatalf("%d panic log lines, want 1", logs.Load())
	}
	c = dialProxy(t, path)
	c.Write([]byte("CONNECT 14\n"))
	if line := readLine(t, bufio.NewReader(c)); line != "OK 14\n" {
		t.Fatalf("after a panic: %q", line)
	}
	g.accept()
}

func TestCloseEndsActiveConnections(t *testing.T) {
	g := newGuestSide(t)
	s := &Server{Dial: g.dial}
	path := filepath.Join(t.TempDir(), "v.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(l) }()
	c := dialProxy(t, path)
	c.Write([]byte("CONNECT 9\n"))
	r := bufio.NewReader(c)
	readLine(t, r)
	g.accept()
	s.Close()
	if err := <-done; !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve returned %v", err)
	}
	expectEOF(t, r)
	if err := s.Serve(l); !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve after Close returned %v", err)
	}
}
