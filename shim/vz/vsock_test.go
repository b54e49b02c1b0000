package vz

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"hypefs/shim/engine"
	"hypefs/shim/vsockproxy"
)

// The framework's (*connection, error) is checked error first: a nil
// pointer never becomes a non-nil net.Conn.
func TestAsConn(t *testing.T) {
	var none *nilConn
	c, err := asConn(none, errors.New("refused"))
	if c != nil || err == nil || err.Error() != "refused" {
		t.Fatalf("error case: %#v, %v", c, err)
	}
	if c, err = asConn(none, nil); c != nil || !errors.Is(err, errNoConn) {
		t.Fatalf("nil without error: %#v, %v", c, err)
	}
	real := &nilConn{}
	if c, err = asConn(real, nil); c != net.Conn(real) || err != nil {
		t.Fatalf("connection: %#v, %v", c, err)
	}
}

// proxyFor serves m's vsock with the shim's proxy on a fresh socket.
func proxyFor(t *testing.T, m *Machine) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "vz") // short: sun_path
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	l, err := net.Listen("unix", filepath.Join(dir, "v.sock"))
	if err != nil {
		t.Fatal(err)
	}
	s := &vsockproxy.Server{Dial: m.DialVsock, DialTimeout: 5 * time.Second}
	go s.Serve(l)
	t.Cleanup(func() { s.Close() })
	return l.Addr().String()
}

// connect sends CONNECT port and returns the proxy's first line.
func connect(t *testing.T, sock string, port string) (string, net.Conn) {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "CONNECT "+port+"\n"); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("CONNECT %s: no answer line: %v (got %q)", port, err, line)
	}
	return line, c
}

// A CONNECT that fails (nobody listens on the port, the VM is paused, the
// VM ends while the framework connects) answers with an error line, and
// the shim goes on serving: the next CONNECT works.
func TestVsockFailuresAnswerAndTheShimGoesOn(t *testing.T) {
	hv := newFakeHV(t)
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	hv.vsock = func(port uint32) (net.Conn, error) {
		switch port {
		case 5: // nobody listens: vz hands back a nil pointer and an error
			var none *nilConn
			return none, errors.New("fake: Connection refused (port 5)")
		case 7: // the framework sits on the connect until the VM is gone
			entered <- struct{}{}
			<-release
			var none *nilConn
			return none, errors.New("fake: the virtual machine stopped")
		}
		a, b := net.Pipe()
		go func() { io.Copy(b, b) }() // the guest echoes
		return a, nil
	}
	m, _ := boot(t, hv, baseSpec(t))
	sock := proxyFor(t, m)

	if line, _ := connect(t, sock, "5"); !strings.HasPrefix(line, "ERR ") || !strings.Contains(line, "Connection refused (port 5)") {
		t.Fatalf("refused port: %q", line)
	}
	echo := func() {
		t.Helper()
		line, c := connect(t, sock, "1024")
		if line != "OK 1024\n" {
			t.Fatalf("good port: %q", line)
		}
		io.WriteString(c, "ping\n")
		got, err := bufio.NewReader(c).ReadString('\n')
		if err != nil || got != "ping\n" {
			t.Fatalf("echo: %q, %v", got, err)
		}
	}
	echo()

	if err := m.Pause(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if line, _ := connect(t, sock, "1024"); !strings.HasPrefix(line, "ERR ") || !strings.Contains(line, "the vm is paused") {
		t.Fatalf("paused vm: %q", line)
	}
	if err := m.Resume(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	echo()

	// The VM ends while a connect is pending: the client gets its error
	// line, and the framework's late nil answer is not touched.
	type answer struct{ line string }
	got := make(chan answer, 1)
	go func() {
		c, err := net.Dial("unix", sock)
		if err != nil {
			got <- answer{err.Error()}
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, "CONNECT 7\n")
		l, _ := bufio.NewReader(c).ReadString('\n')
		got <- answer{l}
	}()
	<-entered
	hv.vm(0).guestPowerOff()
	waitDone(t, m)
	if a := <-got; !strings.HasPrefix(a.line, "ERR ") || !strings.Contains(a.line, engine.ErrNotRunning.Error()) {
		t.Fatalf("connect while the vm ends: %q", a.line)
	}
	close(release)
	if _, err := m.DialVsock(ctxT(t), 1024); !errors.Is(err, engine.ErrNotRunning) {
		t.Fatalf("dial after the end: %v", err)
	}
	if got := hv.vm(0).Calls(); strings.Count(strings.Join(got, ","), "vsock 1024") != 2 {
		t.Fatalf("framework calls %v: the paused and ended VMs must not be asked", got)
	}
}
