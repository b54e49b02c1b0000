package ninep

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"net"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// peerOf says who is at the other end of c: the process's uid on a Unix
// socket (SO_PEERCRED), the socket owner's uid on loopback TCP (the
// kernel's socket table); unknown for a remote peer.
func peerOf(c net.Conn) peer {
	switch c := c.(type) {
	case *net.UnixConn:
		raw, err := c.SyscallConn()
		if err != nil {
			return peer{}
		}
		var cred *unix.Ucred
		raw.Control(func(fd uintptr) {
			cred, err = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		})
		if err != nil || cred == nil {
			return peer{}
		}
		return peer{uid: cred.Uid, known: true}
	case *net.TCPConn:
		remote, ok1 := c.RemoteAddr().(*net.TCPAddr)
		local, ok2 := c.LocalAddr().(*net.TCPAddr)
		if !ok1 || !ok2 || !remote.IP.IsLoopback() {
			return peer{}
		}
		if uid, ok := tcpOwner(remote, local); ok {
			return peer{uid: uid, known: true}
		}
	}
	return peer{}
}

// tcpOwner finds, in /proc/net/tcp and tcp6, the socket whose local end is
// client and remote end server, and returns the uid that owns it.
func tcpOwner(client, server *net.TCPAddr) (uint32, bool) {
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		f, err := os.Open(table)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Scan() // the heading
		for sc.Scan() {
			fl := strings.Fields(sc.Text())
			if len(fl) < 8 {
				continue
			}
			l, ok1 := parseProcAddr(fl[1])
			r, ok2 := parseProcAddr(fl[2])
			if !ok1 || !ok2 || !sameAddr(l, client) || !sameAddr(r, server) {
				continue
			}
			uid, err := strconv.ParseUint(fl[7], 10, 32)
			f.Close()
			return uint32(uid), err == nil
		}
		f.Close()
	}
	return 0, false
}

// parseProcAddr reads "0100007F:1F90" (IPv4) or 32 hex digits and a port
// (IPv6): the address in 32-bit words of host order, the port in hex.
func parseProcAddr(s string) (*net.TCPAddr, bool) {
	a, p, ok := strings.Cut(s, ":")
	if !ok {
		return nil, false
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return nil, false
	}
	raw, err := hex.DecodeString(a)
	if err != nil || (len(raw) != 4 && len(raw) != 16) {
		return nil, false
	}
	ip := make(net.IP, len(raw))
	for w := 0; w < len(raw); w += 4 {
		binary.BigEndian.PutUint32(ip[w:], binary.NativeEndian.Uint32(raw[w:]))
	}
	return &net.TCPAddr{IP: ip, Port: int(port)}, true
}

func sameAddr(a, b *net.TCPAddr) bool { return a.Port == b.Port && a.IP.Equal(b.IP) }
