// Package test9p attaches 9P clients as a given user, for tests.
package test9p

import (
	"encoding/binary"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/hugelgupf/p9/p9"
)

// NoUID leaves a Tattach's n_uname unset.
const NoUID = ^uint32(0)

// DialAs connects a p9 client to addr ("unix:PATH" or "tcp:HOST:PORT")
// and attaches as the user uid (n_uname), as Linux's v9fs does. The
// client is closed when the test ends.
func DialAs(t testing.TB, addr string, uid uint32) (p9.File, error) {
	t.Helper()
	f, closeFn, err := Attach(addr, "", uid)
	if err == nil || closeFn != nil {
		t.Cleanup(closeFn)
	}
	return f, err
}

// Attach connects to addr and attaches naming uname and n_uname (NoUID:
// none). p9's client names no user in its Tattach, so the connection
// rewrites that message on its way out. close ends the client.
func Attach(addr, uname string, nuname uint32) (root p9.File, close func(), err error) {
	kind, rest, _ := strings.Cut(addr, ":")
	conn, err := net.Dial(kind, rest)
	if err != nil {
		return nil, nil, err
	}
	c, err := p9.NewClient(&attachAs{Conn: conn, uname: uname, nuname: nuname})
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	root, err = c.Attach("")
	return root, func() { c.Close() }, err
}

// attachAs is a client connection that sets uname and n_uname in every
// Tattach. It passes whole messages on; p9's client may write one in
// pieces.
type attachAs struct {
	net.Conn
	uname  string
	nuname uint32
	mu     sync.Mutex
	buf    []byte
}

func (a *attachAs) Write(p []byte) (int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.buf = append(a.buf, p...)
	for len(a.buf) >= 4 {
		size := int(binary.LittleEndian.Uint32(a.buf))
		if len(a.buf) < size {
			break
		}
		msg := a.buf[:size]
		const tattach = 104
		if size > 7 && msg[4] == tattach {
			msg = a.rewrite(msg)
		}
		if _, err := a.Conn.Write(msg); err != nil {
			return 0, err
		}
		a.buf = a.buf[size:]
	}
	return len(p), nil
}

// rewrite rebuilds size[4] type[1] tag[2] fid[4] afid[4] uname[s]
// aname[s] n_uname[4] with this connection's user.
func (a *attachAs) rewrite(msg []byte) []byte {
	body := msg[7:]
	if len(body) < 10 {
		return msg
	}
	fids := body[:8]
	rest := body[8:]
	n := int(binary.LittleEndian.Uint16(rest))
	if len(rest) < 2+n+2 {
		return msg
	}
	rest = rest[2+n:] // past the old uname
	m := int(binary.LittleEndian.Uint16(rest))
	if len(rest) < 2+m {
		return msg
	}
	aname := rest[:2+m]
	out := append([]byte{}, msg[:7]...)
	out = append(out, fids...)
	out = binary.LittleEndian.AppendUint16(out, uint16(len(a.uname)))
	out = append(out, a.uname...)
	out = append(out, aname...)
	out = binary.LittleEndian.AppendUint32(out, a.nuname)
	binary.LittleEndian.PutUint32(out, uint32(len(out)))
	return out
}
