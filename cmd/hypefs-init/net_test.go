//go:build linux

package main

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParseNetCmdline(t *testing.T) {
	for _, tc := range []struct {
		cmdline string
		mode    netMode
		err     bool
		addr    string
		gw      string
		dns     int
	}{
		{"console=ttyS0 quiet", netDHCP, false, "", "", 0},
		{"hypefs.ip=dhcp", netDHCP, false, "", "", 0},
		{"hypefs.ip=off", netOff, false, "", "", 0},
		{"hypefs.ip=10.197.0.2/24 hypefs.gw=10.197.0.1 hypefs.dns=192.0.2.53,9.9.9.9", netStatic, false, "10.197.0.2/24", "10.197.0.1", 2},
		{"hypefs.ip=10.197.0.9/24", netStatic, false, "10.197.0.9/24", "", 0},
		{"hypefs.ip=banana hypefs.gw=10.197.0.1", netOff, true, "", "10.197.0.1", 0},
		{"hypefs.ip=banana hypefs.ip=dhcp", netDHCP, false, "", "", 0},
		{"hypefs.ip=fd00::2/64", netOff, true, "", "", 0},
		{"hypefs.ip=banana hypefs.ip=10.0.0.2/8", netStatic, false, "10.0.0.2/8", "", 0}, // the last one counts
		{"hypefs.ip=10.197.0.2/24 hypefs.dns=x,10.0.0.53", netStatic, false, "10.197.0.2/24", "", 1},
	} {
		c, err := parseNetCmdline(tc.cmdline)
		if c.mode != tc.mode || (err != nil) != tc.err || tc.addr != "" && c.addr.String() != tc.addr ||
			tc.gw != "" && c.gw.String() != tc.gw || tc.gw == "" && c.gw.IsValid() || len(c.dns) != tc.dns {
			t.Errorf("parseNetCmdline(%q) = %+v, %v", tc.cmdline, c, err)
		}
	}
	if got := string(resolvConf([]netip.Addr{netip.MustParseAddr("192.0.2.53")}, "")); got != "nameserver 192.0.2.53\n" {
		t.Errorf("resolvConf = %q", got)
	}
	if got := string(resolvConf([]netip.Addr{netip.MustParseAddr("192.168.64.1")}, "local")); got != "search local\nnameserver 192.168.64.1\n" {
		t.Errorf("resolvConf with a domain = %q", got)
	}
}

// The address line is what the shim reads (shim.AddressMarker): the
// prefix first, then where it came from.
func TestAddressLine(t *testing.T) {
	p := netip.MustParsePrefix("192.168.64.5/24")
	if got := addressLine("eth0", p, netip.MustParseAddr("192.168.64.1"), "dhcp"); got != "hypefs: address 192.168.64.5/24 on eth0 via 192.168.64.1 (dhcp)" {
		t.Errorf("with a router: %q", got)
	}
	if got := addressLine("eth0", p, netip.Addr{}, "static"); got != "hypefs: address 192.168.64.5/24 on eth0 (static)" {
		t.Errorf("without: %q", got)
	}
}

// udhcpc's script environment, as busybox 1.35 sets it.
func TestLeaseFromEnv(t *testing.T) {
	env := map[string]string{"interface": "eth0", "ip": "192.168.64.5", "mask": "24", "subnet": "255.255.255.0",
		"router": "192.168.64.1 192.168.64.254", "dns": "192.168.64.1 bogus 9.9.9.9", "domain": "local lan",
		"serverid": "192.168.64.1", "lease": "85536"}
	l, err := leaseFromEnv(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	want := lease{Interface: "eth0", Address: netip.MustParsePrefix("192.168.64.5/24"), Router: netip.MustParseAddr("192.168.64.1"),
		DNS: []netip.Addr{netip.MustParseAddr("192.168.64.1"), netip.MustParseAddr("9.9.9.9")}, Domain: "local",
		Server: netip.MustParseAddr("192.168.64.1"), Seconds: 85536}
	if fmt.Sprint(l) != fmt.Sprint(want) || !l.sameConfig(want) {
		t.Fatalf("lease %+v\nwant  %+v", l, want)
	}
	// No "mask" (older busybox): the dotted subnet; neither: a /32.
	delete(env, "mask")
	env["subnet"] = "255.255.240.0"
	if l, _ := leaseFromEnv(func(k string) string { return env[k] }); l.Address.Bits() != 20 {
		t.Errorf("from subnet: %v", l.Address)
	}
	renewed := want
	renewed.Seconds = 10
	if !want.sameConfig(renewed) {
		t.Error("a renewal with a new lease time counts as a new configuration")
	}
	moved := want
	moved.Address = netip.MustParsePrefix("192.168.65.5/24")
	if want.sameConfig(moved) {
		t.Error("a new address counts as the same configuration")
	}
	for _, bad := range []map[string]string{{"interface": "eth0"}, {"interface": "eth0", "ip": "fd00::5", "mask": "64"}, {"interface": "eth0", "ip": "10.0.0.5", "mask": "33"}} {
		if _, err := leaseFromEnv(func(k string) string { return bad[k] }); err == nil {
			t.Errorf("lease %v accepted", bad)
		}
	}
}

func TestConsoleName(t *testing.T) {
	for cmdline, want := range map[string]string{
		"panic=-1 quiet console=hvc0":             "hvc0",
		"console=ttyS0,115200n8 quiet":            "ttyS0",
		"console=ttyAMA0 console=hvc0 hypefs.x=1": "hvc0",
		"quiet":             "",
		"console=/dev/evil": "",
	} {
		if got := consoleName(cmdline); got != want {
			t.Errorf("consoleName(%q) = %q; want %q", cmdline, got, want)
		}
	}
}

func TestRouteMessage(t *testing.T) {
	b := routeMessage(netip.MustParseAddr("10.197.0.1"), false)
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
