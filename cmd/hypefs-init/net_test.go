//go:build linux

package main

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParseNetCmdline(t *testing.T) {
	for _, tc := range []struct {
		cmdline string
		ok      bool
		addr    string
		gw      string
		dns     int
	}{
		{"console=ttyS0 quiet", false, "", "", 0},
		{"hypefs.ip=10.197.0.2/24 hypefs.gw=10.197.0.1 hypefs.dns=192.0.2.53,9.9.9.9", true, "10.197.0.2/24", "10.197.0.1", 2},
		{"hypefs.ip=10.197.0.9/24", true, "10.197.0.9/24", "", 0},
		{"hypefs.ip=banana hypefs.gw=10.197.0.1", false, "", "", 0},
		{"hypefs.ip=fd00::2/64", false, "", "", 0},
		{"hypefs.ip=10.197.0.2/24 hypefs.dns=x,10.0.0.53", true, "10.197.0.2/24", "", 1},
	} {
		c, ok := parseNetCmdline(tc.cmdline)
		if ok != tc.ok || ok && (c.addr.String() != tc.addr || tc.gw != "" && c.gw.String() != tc.gw || tc.gw == "" && c.gw.IsValid() || len(c.dns) != tc.dns) {
			t.Errorf("parseNetCmdline(%q) = %+v %v", tc.cmdline, c, ok)
		}
	}
	if got := string(resolvConf([]netip.Addr{netip.MustParseAddr("192.0.2.53")})); got != "nameserver 192.0.2.53\n" {
		t.Errorf("resolvConf = %q", got)
	}
}

func TestRouteMessage(t *testing.T) {
	b := routeMessage(netip.MustParseAddr("10.197.0.1"))
	ne := binary.NativeEndian
	if int(ne.Uint32(b)) != len(b) || ne.Uint16(b[4:]) != unix.RTM_NEWROUTE {
		t.Fatalf("header: len %d type %d", ne.Uint32(b), ne.Uint16(b[4:]))
	}
	r := b[unix.SizeofNlMsghdr:]
	if r[0] != unix.AF_INET || r[1] != 0 || r[4] != unix.RT_TABLE_MAIN || r[7] != unix.RTN_UNICAST {
		t.Fatalf("rtmsg % x", r[:unix.SizeofRtMsg])
	}
	a := r[unix.SizeofRtMsg:]
	if ne.Uint16(a[2:]) != unix.RTA_GATEWAY || string(a[4:8]) != string([]byte{10, 197, 0, 1}) {
		t.Fatalf("attribute % x", a)
	}
	ack := make([]byte, unix.SizeofNlMsghdr+4)
	ne.PutUint16(ack[4:], unix.NLMSG_ERROR)
	if err := parseAck(ack); err != nil {
		t.Fatalf("ack 0: %v", err)
	}
	code := -int32(unix.EEXIST)
	ne.PutUint32(ack[unix.SizeofNlMsghdr:], uint32(code))
	if err := parseAck(ack); err != unix.EEXIST {
		t.Fatalf("ack -EEXIST: %v", err)
	}
}

func TestGratuitousARP(t *testing.T) {
	mac, err := parseMAC("02:aa:bb:cc:dd:0e")
	if err != nil {
		t.Fatal(err)
	}
	got := garp(mac, netip.MustParseAddr("10.197.0.2"))
	want := []byte{0, 1, 8, 0, 6, 4, 0, 1, 2, 0xaa, 0xbb, 0xcc, 0xdd, 0x0e, 10, 197, 0, 2, 0, 0, 0, 0, 0, 0, 10, 197, 0, 2}
	if string(got) != string(want) {
		t.Fatalf("garp = % x, want % x", got, want)
	}
	for _, bad := range []string{"", "02:aa:bb:cc:dd", "02:aa:bb:cc:dd:zz"} {
		if _, err := parseMAC(bad); err == nil {
			t.Errorf("parseMAC(%q) succeeded", bad)
		}
	}
}
