// Package vsockproxy serves the shim's vsock proxy socket: a client sends
// "CONNECT <port>\n", the proxy opens a connection to that vsock port of the
// guest and answers "OK <port>\n", then bytes flow both ways until both
// directions have closed. A request that fails (malformed, a port nobody
// listens on, a paused or ending VM) is answered with "ERR <sentence>\n"
// and closed.
//
// The protocol is Cloud Hypervisor's and Firecracker's, so their clients work
// unchanged: they take anything but "OK" as a refusal (Cloud Hypervisor and
// Firecracker themselves just close the connection). How the guest connection is opened is the caller's business (a
// Dial function): Virtualization.framework hands out one connection per
// Connect call on macOS; an AF_VSOCK socket or a virtio-serial channel may do
// it on Linux.
package vsockproxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"hypefs/internal/sock"
)

// DialFunc opens a connection to a vsock port of the guest.
type DialFunc func(ctx context.Context, port uint32) (net.Conn, error)

// Defaults for the zero values of Server's timeouts.
const (
	DefaultHandshakeTimeout = 5 * time.Second
	DefaultDialTimeout      = 5 * time.Second
)

// maxRequestLine bounds the CONNECT line: "CONNECT 4294967295\n" is 19
// bytes. A client that sends more without a newline is refused instead of
// making the proxy buffer without end.
const maxRequestLine = 64

// ErrServerClosed is returned by Serve after Close.
var ErrServerClosed = errors.New("vsock proxy closed")

// Server accepts proxy clients on a listener (normally a Unix socket).
//
// Every client gets deadlines for the handshake and the dial, so a client
// that stalls or closes halfway through a CONNECT line costs one goroutine
// for at most HandshakeTimeout and never affects other clients.
type Server struct {
	Dial DialFunc
	// HandshakeTimeout bounds reading the CONNECT line and writing the OK
	// reply; 0 means DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// DialTimeout bounds Dial; 0 means DefaultDialTimeout.
	DialTimeout time.Duration
	// Logf, when set, receives one line per refused or failed client.
	Logf func(format string, args ...any)

	mu     sync.Mutex
	closed bool
	open   map[io.Closer]struct{} // listeners, clients and guest connections, for Close
	wg     sync.WaitGroup
}

// Serve accepts clients on l until l fails or Close is called; it then
// returns ErrServerClosed (after Close) or the accept error. Serve closes l.
func (s *Server) Serve(l net.Listener) error {
	if !s.track(l) {
		l.Close()
		return ErrServerClosed
	}
	defer s.untrack(l)
	defer l.Close()
	err := sock.Serve(l, func(c net.Conn) bool {
		if !s.startClient(c) {
			c.Close()
			return false
		}
		go func() {
			defer s.wg.Done()
			defer s.untrack(c)
			s.handle(c)
		}()
		return true
	})
	if err == nil || s.isClosed() {
		return ErrServerClosed
	}
	return fmt.Errorf("accept vsock proxy client: %w", err)
}

// Close stops every Serve, closes every open client and guest connection
// and waits for their goroutines to end.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	for c := range s.open {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

// survive keeps a panic while serving one client from ending the process:
// on macOS the VM runs inside the shim, so a crash would take the guest
// with it. The panic is logged with its stack; handle then closes the
// client.
func (s *Server) survive() {
	if v := recover(); v != nil {
		s.logf("vsock proxy: panic while serving a client (the client is closed): %v\n%s", v, debug.Stack())
	}
}

// refuse answers a failed request with "ERR <sentence>\n", under a
// deadline of its own so that a client that does not read cannot hold the
// proxy.
func refuse(client net.Conn, timeout time.Duration, err error) {
	client.SetDeadline(time.Now().Add(timeout))
	msg := strings.Join(strings.Fields(err.Error()), " ") // one line
	fmt.Fprintf(client, "ERR %s\n", msg)
}

func (s *Server) handle(client net.Conn) {
	defer client.Close()
	defer s.survive()
	br := bufio.NewReaderSize(client, maxRequestLine)
	hs := s.HandshakeTimeout
	if hs <= 0 {
		hs = DefaultHandshakeTimeout
	}
	client.SetDeadline(time.Now().Add(hs))
	port, err := readConnect(br)
	if err != nil {
		s.logf("vsock proxy: refused client: %v", err)
		if errors.Is(err, errMalformed) {
			refuse(client, hs, err)
		}
		return
	}

	dt := s.DialTimeout
	if dt <= 0 {
		dt = DefaultDialTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), dt)
	guest, err := s.Dial(ctx, port)
	cancel()
	if err == nil && guest == nil {
		err = errors.New("the dialer returned no connection")
	}
	if err != nil {
		s.logf("vsock proxy: connect to guest port %d: %v", port, err)
		refuse(client, hs, fmt.Errorf("connect to guest port %d: %w", port, err))
		return
	}
	if !s.track(guest) {
		guest.Close()
		return
	}
	defer s.untrack(guest)
	defer guest.Close()

	// The reply gets a deadline of its own (the dial may have used up the
	// handshake's): a client that stops reading cannot hold the proxy here.
	client.SetDeadline(time.Now().Add(hs))
	if _, err := fmt.Fprintf(client, "OK %d\n", port); err != nil {
		s.logf("vsock proxy: reply to client for port %d: %v", port, err)
		return
	}
	client.SetDeadline(time.Time{})
	// Bytes the client sent right behind the CONNECT line are already in
	// br; they belong to the guest.
	if n := br.Buffered(); n > 0 {
		b, _ := br.Peek(n)
		if _, err := guest.Write(b); err != nil {
			s.logf("vsock proxy: forward to guest port %d: %v", port, err)
			return
		}
	}
	pump(client, guest)
}

// errMalformed marks a complete request line that is not a CONNECT: it is
// answered with an error line. A client that stalls, closes, or sends an
// endless line is just closed.
var errMalformed = errors.New("malformed request")

// readConnect reads and parses "CONNECT <port>\n".
func readConnect(br *bufio.Reader) (uint32, error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return 0, fmt.Errorf("request line longer than %d bytes", maxRequestLine)
		}
		if errors.Is(err, io.EOF) {
			return 0, errors.New("client closed before a complete CONNECT line")
		}
		return 0, fmt.Errorf("read CONNECT line: %w", err)
	}
	req := strings.TrimRight(string(line), "\r\n")
	verb, arg, ok := strings.Cut(req, " ")
	if !ok || verb != "CONNECT" {
		return 0, fmt.Errorf("%w: %q is not \"CONNECT <port>\"", errMalformed, req)
	}
	port, err := strconv.ParseUint(strings.TrimSpace(arg), 10, 32)
	if err != nil {
		return 0, fmt.Errorf("%w: port %q in CONNECT request: not a 32-bit unsigned number", errMalformed, arg)
	}
	return uint32(port), nil
}

// pump copies both ways until both directions are done. A clean EOF on
// one side is passed on as a half-close (when the other side supports
// CloseWrite), so request/response clients that shut their write side
// still get their answer. An error in either direction tears both down.
func pump(client, guest net.Conn) {
	var wg sync.WaitGroup
	wg.Add(2)
	one := func(dst, src net.Conn) {
		defer wg.Done()
		_, err := io.Copy(dst, src)
		if err != nil {
			client.Close()
			guest.Close()
			return
		}
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
	}
	go one(guest, client)
	go one(client, guest)
	wg.Wait()
}

func (s *Server) logf(format string, args ...any) {
	if s.Logf != nil {
		s.Logf(format, args...)
	}
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// track records c (a listener or a connection) for Close, unless the
// server is closed.
func (s *Server) track(c io.Closer) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.trackLocked(c)
}

// startClient tracks c and counts its goroutine in one critical section,
// so Close never waits on a WaitGroup that is still being added to.
func (s *Server) startClient(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.trackLocked(c) {
		return false
	}
	s.wg.Add(1)
	return true
}

// trackLocked is track; the caller holds s.mu.
func (s *Server) trackLocked(c io.Closer) bool {
	if s.closed {
		return false
	}
	if s.open == nil {
		s.open = map[io.Closer]struct{}{}
	}
	s.open[c] = struct{}{}
	return true
}

func (s *Server) untrack(c io.Closer) {
	s.mu.Lock()
	delete(s.open, c)
	s.mu.Unlock()
}
