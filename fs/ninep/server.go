package ninep

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/hugelgupf/p9/p9"

	hfs "hypefs/fs"
	"hypefs/internal/sock"
)

// Server serves one tree over 9P2000.L on any number of listeners.
type Server struct {
	root hfs.Dir
	log  *slog.Logger
	// Who attach names are: the passwd database (os/user).
	lookupName, lookupID func(string) (*user.User, error)

	// ctx is what tree calls get; Close cancels it, which ends follow
	// reads at once.
	ctx    context.Context
	cancel context.CancelFunc

	mu     sync.Mutex
	closed bool
	open   map[io.Closer]struct{} // listeners and connections, for Close
	wg     sync.WaitGroup         // Serve loops and connections

	dirsMu sync.Mutex
	dirs   map[uint64]int // directory node id: fids that have it open
}

// openDir counts a fid that opened (d = 1) or closed (d = -1) directory
// node id; see UnlinkAt.
func (s *Server) openDir(id uint64, d int) {
	s.dirsMu.Lock()
	defer s.dirsMu.Unlock()
	if s.dirs[id] += d; s.dirs[id] <= 0 {
		delete(s.dirs, id)
	}
}

// dirOpen reports whether a fid has directory node id open.
func (s *Server) dirOpen(id uint64) bool {
	s.dirsMu.Lock()
	defer s.dirsMu.Unlock()
	return s.dirs[id] > 0
}

// New makes a server for the tree whose root is root (fs.Tree.Root()).
// log may be nil.
func New(root hfs.Dir, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{root: root, log: log, lookupName: user.Lookup, lookupID: user.LookupId,
		open: map[io.Closer]struct{}{}, dirs: map[uint64]int{}}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s
}

// attacher attaches the Tattach messages of one connection (attach.go).
type attacher struct {
	s    *Server
	rd   *attachReader
	peer peer
}

func (a attacher) Attach() (p9.File, error) {
	c, ok := a.rd.take()
	if !ok {
		a.s.log.Warn("9p attach refused: no attach message to match")
		return nil, errRefused
	}
	who, err := resolve(c, a.peer, a.s.lookupName, a.s.lookupID)
	if err != nil {
		a.s.log.Warn("9p attach refused", "err", err)
		return nil, errRefused
	}
	return &file{s: a.s, n: a.s.root, who: who}, nil
}

// serveConn serves one connection with a p9 server of its own, whose
// attacher knows the connection's peer and reads its Tattach messages.
func (s *Server) serveConn(c net.Conn) {
	rd := newAttachReader(c)
	if !s.track(rd) {
		rd.Close()
		return
	}
	defer s.untrack(rd)
	p := peerOf(c)
	s.log.Debug("9p client connected", "remote", c.RemoteAddr().String(), "peer_uid", p.uid, "peer_known", p.known)
	srv := p9.NewServer(attacher{s: s, rd: rd, peer: p}, p9.WithServerLogger(p9log{s.log}))
	srv.Handle(rd, c)
}

// p9log sends p9's own messages to the daemon's log: its trace of every
// message at debug level, the rest (protocol errors, panics in handlers)
// as warnings.
type p9log struct{ l *slog.Logger }

func (l p9log) Printf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	if strings.HasPrefix(msg, "send ") || strings.HasPrefix(msg, "recv ") || strings.Contains(msg, "use of closed network connection") {
		l.l.Debug("9p: " + msg)
		return
	}
	l.l.Warn("9p: " + msg)
}

// Serve accepts connections on l until Close, serving each in its own
// goroutines. It returns nil after Close.
func (s *Server) Serve(l net.Listener) error {
	if !s.track(l) {
		l.Close()
		return nil
	}
	defer s.untrack(l)
	// Passing trouble (out of descriptors, say) is waited out rather
	// than ending the export for good.
	err := sock.Serve(l, func(c net.Conn) bool {
		s.mu.Lock()
		closed := s.closed
		s.mu.Unlock()
		if closed {
			c.Close()
			return false
		}
		go s.serveConn(c)
		return true
	})
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if err == nil || closed {
		return nil
	}
	return fmt.Errorf("9p accept on %s: %w", l.Addr(), err)
}

// track records a listener or connection for Close and counts its
// goroutine, unless the server is closed.
func (s *Server) track(c io.Closer) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.open[c] = struct{}{}
	s.wg.Add(1)
	return true
}

// untrack forgets c once its goroutine is done.
func (s *Server) untrack(c io.Closer) {
	s.mu.Lock()
	delete(s.open, c)
	s.mu.Unlock()
	s.wg.Done()
}

// Close stops accepting, ends every connection (follow reads return at
// once) and waits, up to 5 s, for requests in flight to finish.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.cancel()
	for c := range s.open {
		c.Close()
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-time.After(5 * time.Second):
		return errors.New("9p server: requests still running 5 s after close")
	}
}

// Listen opens a 9P address:
//
//	unix:PATH        a Unix socket of mode 0600 (a stale socket there is replaced)
//	tcp:HOST:PORT    TCP; HOST must be a loopback address unless allowRemote
//
// 9P2000.L has no authentication: a client says which user it is, and
// the tree's rules apply to that user (attach.go); the claim is checked
// against the connecting process where the host can tell. Reach a
// loopback address from another host through ssh (ssh -L
// 5640:127.0.0.1:5640 vmhost) instead of allowing remote.
func Listen(addr string, allowRemote bool) (net.Listener, error) {
	kind, rest, _ := strings.Cut(addr, ":")
	switch {
	case kind == "unix" && rest != "":
		return listenUnix(rest)
	case kind == "tcp" && rest != "":
		return listenTCP(rest, allowRemote)
	}
	return nil, fmt.Errorf("9p address %q: want unix:PATH or tcp:HOST:PORT", addr)
}

func listenTCP(hostport string, allowRemote bool) (net.Listener, error) {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return nil, fmt.Errorf("9p address tcp:%s: %w", hostport, err)
	}
	if !allowRemote {
		if err := checkLoopback(host); err != nil {
			return nil, fmt.Errorf("9p address tcp:%s: %w; 9P has no authentication: forward a loopback port over ssh, or pass --9p-allow-remote", hostport, err)
		}
	}
	l, err := net.Listen("tcp", hostport)
	if err != nil {
		return nil, fmt.Errorf("9p listen: %w", err)
	}
	return l, nil
}

// checkLoopback accepts a host only if every address it names is a
// loopback address.
func checkLoopback(host string) error {
	if host == "" {
		return errors.New("no host given: that listens on every interface")
	}
	if ip := net.ParseIP(host); ip != nil {
		if !ip.IsLoopback() {
			return fmt.Errorf("%s is not a loopback address", host)
		}
		return nil
	}
	ips, err := net.LookupIP(host)
	if err != nil {
		return fmt.Errorf("resolve host: %w", err)
	}
	for _, ip := range ips {
		if !ip.IsLoopback() {
			return fmt.Errorf("%s resolves to %s, not a loopback address", host, ip)
		}
	}
	return nil
}

// listenUnix binds path with mode 0600, making its directory first.
func listenUnix(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("9p socket directory: %w", err)
	}
	l, err := sock.ListenUnix(path)
	if err != nil {
		return nil, fmt.Errorf("9p: %w", err)
	}
	return l, nil
}
