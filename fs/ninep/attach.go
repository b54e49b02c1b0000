package ninep

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os/user"
	"strconv"
	"sync"

	"github.com/hugelgupf/p9/linux"

	hfs "hypefs/fs"
)

// Who a 9P client acts as. 9P2000.L has no authentication: a Tattach
// names a user (uname, and in 9P2000.L n_uname, a numeric uid), and the
// server takes its word. hypefs maps that claim to a local user and
// applies the tree's rules for that user (the adapter checks every walk,
// open, mkdir and rmdir against the tree's owners and modes: there is no
// kernel to do it). The claim is checked against the connecting process
// where the host can tell who that is (Linux: SO_PEERCRED on the Unix
// socket, the socket table for loopback TCP): a user may attach only as
// themselves; root may attach as anyone (the Linux kernel's v9fs client,
// mounting as root, attaches as each user who uses the mount). Where the
// host cannot tell (a remote peer, --9p-allow-remote), the claim stands.
//
//   - n_uname, when set, is the uid, used as it is;
//   - else uname is looked up in the passwd database; unknown: refused;
//   - neither: the connecting process's own user, if known; else refused.
//
// p9 hands the server's Attacher nothing of the Tattach, so the adapter
// reads each connection's Tattach messages itself, on their way to p9
// (attachReader), and gives them to Attach in order.

// Tattach's 9P2000.L message type, and the "no fid" and "no uid" values.
const (
	msgTattach = 104
	noFID      = ^uint32(0)
	noUID      = ^uint32(0)
	// overflowGID is the group of a uid that has no passwd entry: the
	// kernel's own for ids it cannot map.
	overflowGID = 65534
)

// claim is what one Tattach asks to be.
type claim struct {
	uname  string
	nuname uint32
}

// peer is who is at the other end of a connection, where the host can tell.
type peer struct {
	uid   uint32
	known bool
}

// errRefused is every refused attach (EACCES); the log says why.
var errRefused = linux.EACCES

// resolve maps a claim to the caller the tree sees, or refuses it.
func resolve(c claim, p peer, lookupName func(string) (*user.User, error), lookupID func(string) (*user.User, error)) (hfs.Caller, error) {
	var uid uint32
	var u *user.User
	switch {
	case c.nuname != noUID:
		uid = c.nuname
	case c.uname != "":
		var err error
		if u, err = lookupName(c.uname); err != nil {
			return hfs.Caller{}, fmt.Errorf("9p attach as %q: no such user", c.uname)
		}
		n, err := strconv.ParseUint(u.Uid, 10, 32)
		if err != nil {
			return hfs.Caller{}, fmt.Errorf("9p attach as %q: uid %q", c.uname, u.Uid)
		}
		uid = uint32(n)
	case p.known:
		uid = p.uid
	default:
		return hfs.Caller{}, errors.New("9p attach names no user, and who connected is not known")
	}
	if p.known && p.uid != 0 && p.uid != uid {
		return hfs.Caller{}, fmt.Errorf("9p attach as uid %d refused: the connecting process is uid %d, and only root may attach as another user", uid, p.uid)
	}
	caller := hfs.Caller{UID: uid, GID: overflowGID}
	if u == nil {
		u, _ = lookupID(strconv.FormatUint(uint64(uid), 10))
	}
	if u != nil {
		if g, err := strconv.ParseUint(u.Gid, 10, 32); err == nil {
			caller.GID = uint32(g)
		}
		gids, _ := u.GroupIds()
		for _, s := range gids {
			if g, err := strconv.ParseUint(s, 10, 32); err == nil {
				caller.Groups = append(caller.Groups, uint32(g))
			}
		}
	}
	return caller, nil
}

// attachReader reads a connection for p9 whole message by whole message,
// and queues the claim of every Tattach before p9 sees it. The queue
// holds one: the next message is read only once Attach has taken the
// claim, so claims and attaches pair up in order however p9 spreads its
// requests over goroutines (it calls Attach on the goroutine that read
// the Tattach, before anything else).
type attachReader struct {
	conn   net.Conn
	claims chan claim
	done   chan struct{}
	once   sync.Once
	cur    []byte // the rest of the message being read
}

func newAttachReader(c net.Conn) *attachReader {
	return &attachReader{conn: c, claims: make(chan claim, 1), done: make(chan struct{})}
}

func (r *attachReader) Read(p []byte) (int, error) {
	if len(r.cur) == 0 {
		if err := r.next(); err != nil {
			return 0, err
		}
	}
	n := copy(p, r.cur)
	r.cur = r.cur[n:]
	return n, nil
}

// next reads one whole message and queues its claim if it is a Tattach.
func (r *attachReader) next() error {
	var hdr [4]byte
	if _, err := io.ReadFull(r.conn, hdr[:]); err != nil {
		return err
	}
	size := binary.LittleEndian.Uint32(hdr[:])
	if size < 7 || size > maxMessage {
		return fmt.Errorf("9p message of %d bytes", size)
	}
	msg := make([]byte, size)
	copy(msg, hdr[:])
	if _, err := io.ReadFull(r.conn, msg[4:]); err != nil {
		return err
	}
	if msg[4] == msgTattach {
		if c, ok := parseTattach(msg[7:]); ok {
			select {
			case r.claims <- c:
			case <-r.done:
				return net.ErrClosed
			}
		}
	}
	r.cur = msg
	return nil
}

// maxMessage bounds what a client may send in one message (p9 negotiates
// less; this only keeps a bogus size from allocating without end).
const maxMessage = 16 << 20

// parseTattach reads fid[4] afid[4] uname[s] aname[s] n_uname[4]. A
// Tattach with an authentication fid is not queued: p9 refuses it
// without calling Attach.
func parseTattach(b []byte) (claim, bool) {
	if len(b) < 8 {
		return claim{}, false
	}
	afid := binary.LittleEndian.Uint32(b[4:8])
	b = b[8:]
	str := func() (string, bool) {
		if len(b) < 2 {
			return "", false
		}
		n := int(binary.LittleEndian.Uint16(b))
		if len(b) < 2+n {
			return "", false
		}
		s := string(b[2 : 2+n])
		b = b[2+n:]
		return s, true
	}
	uname, ok1 := str()
	_, ok2 := str()
	if !ok1 || !ok2 || len(b) < 4 || afid != noFID {
		return claim{}, false
	}
	return claim{uname: uname, nuname: binary.LittleEndian.Uint32(b)}, true
}

// Close ends the connection and any read waiting for an Attach.
func (r *attachReader) Close() error {
	r.once.Do(func() { close(r.done) })
	return r.conn.Close()
}

// take is the claim of the Tattach being attached.
func (r *attachReader) take() (claim, bool) {
	select {
	case c := <-r.claims:
		return c, true
	default:
		return claim{}, false
	}
}
