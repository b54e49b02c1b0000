package qmp

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"sync"
	"testing"
)

// peer is a fake QEMU on the other end of a socketpair. Its handler
// decides what to answer for each command; it may also send events.
type peer struct {
	t    *testing.T
	conn net.Conn
	wmu  sync.Mutex
}

type request struct {
	Execute   string          `json:"execute"`
	Arguments json.RawMessage `json:"arguments"`
	ID        json.RawMessage `json:"id"`
}

const greeting = `{"QMP": {"version": {"qemu": {"micro": 19, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7"}, "capabilities": ["oob"]}}`

// newPair returns a client end (not yet handshaken) and a fake peer.
func newPair(t *testing.T) (net.Conn, *peer) {
	t.Helper()
	a, b := socketpair(t)
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, &peer{t: t, conn: b}
}

func socketpair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	// A real unix socketpair behaves like QEMU's socket (buffered, with
	// deadlines), unlike net.Pipe.
	l, err := net.Listen("unix", t.TempDir()+"/s")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ch := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		ch <- c
	}()
	a, err := net.Dial("unix", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b := <-ch
	if b == nil {
		t.Fatal("accept failed")
	}
	return a, b
}

func (p *peer) send(line string) {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	fmt.Fprintln(p.conn, line)
}

// serve greets, accepts qmp_capabilities and then hands every command to
// handle, in a goroutine, until the connection ends.
func (p *peer) serve(handle func(r request)) {
	go func() {
		p.send(greeting)
		sc := bufio.NewScanner(p.conn)
		for sc.Scan() {
			var r request
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				p.t.Errorf("fake peer: bad request %q: %v", sc.Text(), err)
				return
			}
			if r.Execute == "qmp_capabilities" {
				p.send(`{"return": {}}`)
				continue
			}
			handle(r)
		}
	}()
}

func (p *peer) reply(r request, ret string) {
	p.send(fmt.Sprintf(`{"return": %s, "id": %s}`, ret, r.ID))
}
