package shim

import (
	"bytes"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"

	"hypefs/internal/logcap"
	"hypefs/internal/sock"
)

// clientQueue bounds what one slow live reader may hold back. A reader
// that falls this far behind is disconnected rather than slowing the guest.
const clientQueue = 1024

// console receives every byte the guest writes to its serial console: it
// appends it to the log file, watches for the ready marker, and fans it
// out to live readers.
type console struct {
	log     io.WriteCloser
	onReady func()
	onExit  func(code int) // the guest program's exit status line
	// onAddress receives the address of an AddressMarker line; set before
	// the first Write.
	onAddress func(netip.Prefix)

	line    []byte      // the console's current, unfinished line (bounded)
	queries queryFilter // drops terminal queries (Write's goroutine only)

	mu      sync.Mutex
	tail    []byte // last bytes seen, to find a marker split across writes
	armed   bool   // waiting for the ready marker
	clients map[*consoleClient]struct{}
}

type consoleClient struct {
	conn net.Conn
	ch   chan []byte
	once sync.Once
}

func (c *consoleClient) close() { c.once.Do(func() { close(c.ch) }) }

func newConsole(logPath string, logMax int64, onReady func(), onExit func(int)) (*console, error) {
	f, err := logcap.Open(logPath, 0o600, logMax)
	if err != nil {
		return nil, err
	}
	return &console{log: f, onReady: onReady, onExit: onExit, armed: true, clients: map[*consoleClient]struct{}{}}, nil
}

// Write is the engine's console sink. It never blocks on readers.
func (c *console) Write(p []byte) (int, error) {
	n := len(p)
	if p = c.queries.filter(p); len(p) == 0 {
		return n, nil
	}
	// The log comes first: it is the record, live readers are a courtesy.
	c.log.Write(p)
	buf := append([]byte(nil), p...)
	c.mu.Lock()
	ready := false
	if c.armed {
		hay := append(c.tail, p...)
		if bytes.Contains(hay, []byte(ReadyMarker)) {
			c.armed = false
			ready = true
			c.tail = nil
		} else {
			keep := len(ReadyMarker) - 1
			if len(hay) > keep {
				hay = hay[len(hay)-keep:]
			}
			c.tail = append(c.tail[:0], hay...)
		}
	}
	code, exited, addr := c.scanLines(p)
	for cl := range c.clients {
		select {
		case cl.ch <- buf:
		default:
			delete(c.clients, cl)
			cl.close()
		}
	}
	c.mu.Unlock()
	if ready && c.onReady != nil {
		c.onReady()
	}
	if exited && c.onExit != nil {
		c.onExit(code)
	}
	if addr.IsValid() && c.onAddress != nil {
		c.onAddress(addr)
	}
	return n, nil
}

// ExitMarker starts the line with which hypefs-init reports its program's
// exit status ("hypefs: exit status 3") just before powering off.
const ExitMarker = "hypefs: exit status "

// AddressMarker starts the line with which hypefs-init announces the
// guest's IPv4 address ("hypefs: address 192.168.64.5/24 on eth0 ..."),
// once it has one (static, or from DHCP) and again if a renewal changes it.
const AddressMarker = "hypefs: address "

// maxLine bounds what scanLines keeps of one console line.
const maxLine = 256

// scanLines looks for the exit status and address lines, and returns the
// last of each in p. Caller holds c.mu.
func (c *console) scanLines(p []byte) (code int, found bool, addr netip.Prefix) {
	for _, b := range p {
		if b != '\n' {
			if len(c.line) < maxLine {
				c.line = append(c.line, b)
			}
			continue
		}
		l := strings.TrimRight(string(c.line), "\r")
		c.line = c.line[:0]
		if rest, ok := strings.CutPrefix(l, ExitMarker); ok {
			if n, err := strconv.Atoi(strings.TrimSpace(rest)); err == nil {
				code, found = n, true
			}
		}
		if a, ok := parseAddressLine(l); ok {
			addr = a
		}
	}
	return code, found, addr
}

// parseAddressLine reads the address of an AddressMarker line: an IPv4
// prefix as its first field.
func parseAddressLine(l string) (netip.Prefix, bool) {
	rest, ok := strings.CutPrefix(l, AddressMarker)
	if !ok {
		return netip.Prefix{}, false
	}
	f := strings.Fields(rest)
	if len(f) == 0 {
		return netip.Prefix{}, false
	}
	a, err := netip.ParsePrefix(f[0])
	if err != nil || !a.Addr().Is4() || a.Addr().IsUnspecified() {
		return netip.Prefix{}, false
	}
	return a, true
}

// rearm makes the console look for the ready marker again (after a reboot).
func (c *console) rearm() {
	c.mu.Lock()
	c.armed = true
	c.tail = nil
	c.mu.Unlock()
}

// serve accepts live console clients: each gets the output from the moment
// it connects, and what it sends is typed into the guest through input().
//
// The connection is closed only once both directions are done. A client
// that writes a command and closes at once (`echo cmd > console`) makes
// the next output write fail; closing the connection then would throw
// away the command still unread in the socket, so the input side always
// reads on to the client's end first.
func (c *console) serve(l net.Listener, input func() io.Writer) {
	sock.Serve(l, func(conn net.Conn) bool {
		cl := &consoleClient{conn: conn, ch: make(chan []byte, clientQueue)}
		c.mu.Lock()
		c.clients[cl] = struct{}{}
		c.mu.Unlock()
		var both sync.WaitGroup
		both.Add(2)
		go func() { // output to the client
			defer both.Done()
			ended := true // the output ended (VM gone, client too slow)
			for b := range cl.ch {
				if _, err := conn.Write(b); err != nil {
					ended = false
					break
				}
			}
			if cw, ok := conn.(interface{ CloseWrite() error }); ok && ended {
				cw.CloseWrite() // the client reads EOF
			}
			c.mu.Lock()
			delete(c.clients, cl)
			c.mu.Unlock()
			cl.close()
		}()
		go func() { // input from the client, to its end
			defer both.Done()
			buf := make([]byte, 4096)
			for {
				n, err := conn.Read(buf)
				if n > 0 {
					if w := input(); w != nil {
						w.Write(buf[:n])
					}
				}
				if err != nil {
					break
				}
			}
			// The client closed its side. Gone for good, it is dropped
			// now, not at the guest's next output; a half-close (it
			// still reads) keeps its output coming.
			if hungUp(conn) {
				c.drop(cl)
			}
		}()
		go func() {
			both.Wait()
			conn.Close()
		}()
		return true
	})
}

// drop ends one live reader: its output ends, and its connection closes.
func (c *console) drop(cl *consoleClient) {
	c.mu.Lock()
	delete(c.clients, cl)
	cl.close()
	c.mu.Unlock()
}

// closeClients ends every live reader (the VM has ended).
func (c *console) closeClients() {
	c.mu.Lock()
	for cl := range c.clients {
		delete(c.clients, cl)
		cl.close()
	}
	c.mu.Unlock()
}
