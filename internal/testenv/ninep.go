package testenv

import (
	"encoding/binary"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/hugelgupf/p9/p9"
)

// Dial9PAs connects a p9 client to addr ("unix:PATH" or "tcp:HOST:PORT")
// and attaches as the user uid. p9's client names no user in its Tattach
// (uname "", n_uname unset), so the connection rewrites that message on
// its way out with n_uname = uid, as Linux's v9fs sends it. The client is
// closed when the test ends.
func Dial9PAs(t testing.TB, addr string, uid uint32) (p9.File, error) {
	t.Helper()
	kind, rest, _ := strings.Cut(addr, ":")
	conn, err := net.Dial(kind, rest)
	if err != nil {
		return nil, err
	}
	c, err := p9.NewClient(&attachAs{Conn: conn, uid: uid})
	if err != nil {
		conn.Close()
		return nil, err
	}
	t.Cleanup(func() { c.Close() })
	return c.Attach("")
}

// attachAs is a client connection that sets n_uname in every Tattach.
// It passes whole messages on; p9's client may write one in pieces.
type attachAs struct {
	net.Conn
	uid uint32
	mu  sync.Mutex
	buf []byte
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
		if size >= 7 && msg[4] == tattach && size >= 4 {
			// ... n_uname[4] is the message's last field.
			binary.LittleEndian.PutUint32(msg[size-4:], a.uid)
		}
		if _, err := a.Conn.Write(msg); err != nil {
			return 0, err
		}
		a.buf = a.buf[size:]
	}
	return len(p), nil
}
