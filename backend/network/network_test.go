package network

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"hypefs/backend/layout"
)

func TestTapName(t *testing.T) {
	for _, tc := range []struct{ inst, want string }{
		{"web", "hf-web"},
		{"a", "hf-a"},
		{"twelve-chars", "hf-twelve-chars"}, // 15 bytes: fits
		{"thirteen-char", ""},               // hashed
		{strings.Repeat("x", 63), ""},
	} {
		got := TapName(tc.inst)
		if len(got) > ifNameMax {
			t.Errorf("TapName(%q) = %q: longer than %d", tc.inst, got, ifNameMax)
		}
		if tc.want != "" && got != tc.want {
			t.Errorf("TapName(%q) = %q, want %q", tc.inst, got, tc.want)
		}
		if tc.want == "" && !regexp.MustCompile(`^hfh[0-9a-f]{12}$`).MatchString(got) {
			t.Errorf("TapName(%q) = %q, want hfh + 12 hex digits", tc.inst, got)
		}
		if TapName(tc.inst) != got {
			t.Errorf("TapName(%q) is not stable", tc.inst)
		}
	}
	if TapName("thirteen-char") == TapName("thirteen-chas") {
		t.Error("two long names share a TAP")
	}
}

func TestMAC(t *testing.T) {
	seen := map[string]string{}
	for _, inst := range []string{"web", "db", "a", "b", strings.Repeat("z", 63)} {
		m := MAC(inst)
		if !regexp.MustCompile(`^02(:[0-9a-f]{2}){5}$`).MatchString(m) {
			t.Errorf("MAC(%q) = %q, want 02:xx:xx:xx:xx:xx (locally administered unicast)", inst, m)
		}
		if MAC(inst) != m {
			t.Errorf("MAC(%q) is not stable", inst)
		}
		if o, dup := seen[m]; dup {
			t.Errorf("MAC(%q) = MAC(%q)", inst, o)
		}
		seen[m] = inst
	}
}

func TestParseSubnet(t *testing.T) {
	for in, want := range map[string]string{
		"10.197.0.0/24":   "",
		"192.168.50.0/29": "",
		"10.197.0.1/24":   "host bits",
		"10.0.0.0/8":      "between /16 and /29",
		"10.0.0.0/30":     "between /16 and /29",
		"fd00::/64":       "not IPv4",
		"banana":          "not an address prefix",
	} {
		_, err := ParseSubnet(in)
		if want == "" && err != nil || want != "" && (err == nil || !strings.Contains(err.Error(), want)) {
			t.Errorf("ParseSubnet(%q) = %v, want %q", in, err, want)
		}
	}
}

func TestCollision(t *testing.T) {
	subnet := netip.MustParsePrefix("10.197.0.0/24")
	r := func(dst, dev string) RouteInfo {
		if dst == "" {
			return RouteInfo{Dev: dev}
		}
		return RouteInfo{Dst: netip.MustParsePrefix(dst), Dev: dev}
	}
	for _, tc := range []struct {
		name   string
		routes []RouteInfo
		want   string
	}{
		{"none", nil, ""},
		{"default route", []RouteInfo{r("", "eth0"), r("0.0.0.0/0", "eth0")}, ""},
		{"other subnets", []RouteInfo{r("192.168.1.0/24", "eth0"), r("10.196.0.0/16", "wg0"), r("172.17.0.0/16", "docker0")}, ""},
		{"our own bridge", []RouteInfo{r("10.197.0.0/24", "hypefs0")}, ""},
		{"same subnet", []RouteInfo{r("10.197.0.0/24", "eth1")}, "collides with the route to 10.197.0.0/24 on eth1"},
		{"wider VPN", []RouteInfo{r("10.0.0.0/8", "tun0")}, "10.0.0.0/8 on tun0"},
		{"narrower", []RouteInfo{r("10.197.0.128/25", "eth2")}, "--subnet"},
	} {
		err := Collision(subnet, "hypefs0", tc.routes)
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: Collision = %v, want %q", tc.name, err, tc.want)
		}
	}
}

func TestLeasesAllocateReleaseRestart(t *testing.T) {
	dir := t.TempDir()
	subnet := netip.MustParsePrefix("10.197.0.0/29") // .2 .. .6 are usable
	l, err := loadLeases(dir, subnet)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, inst := range []string{"a", "b", "c"} {
		a, err := l.get(inst)
		if err != nil {
			t.Fatal(err)
		}
		got[inst] = a.String()
	}
	if got["a"] != "10.197.0.2" || got["b"] != "10.197.0.3" || got["c"] != "10.197.0.4" {
		t.Fatalf("first leases = %v", got)
	}
	if a, _ := l.get("a"); a.String() != "10.197.0.2" {
		t.Fatalf("a second get gave %s", a)
	}
	// A released address is not reused while others are free.
	if ok, err := l.release("b"); !ok || err != nil {
		t.Fatalf("release b = %v %v", ok, err)
	}
	// Restart: the leases and the cursor come back from disk.
	l, err = loadLeases(dir, subnet)
	if err != nil {
		t.Fatal(err)
	}
	if l.Leases["a"].String() != "10.197.0.2" || l.Leases["c"].String() != "10.197.0.4" || len(l.Leases) != 2 {
		t.Fatalf("after restart: %v", l.Leases)
	}
	d, _ := l.get("d")
	e, _ := l.get("e")
	f, _ := l.get("f") // wraps around to the only free one: b's old address
	if d.String() != "10.197.0.5" || e.String() != "10.197.0.6" || f.String() != "10.197.0.3" {
		t.Fatalf("d, e, f = %s %s %s", d, e, f)
	}
	seen := map[netip.Addr]string{}
	for inst, a := range l.Leases {
		if o, dup := seen[a]; dup {
			t.Fatalf("%s and %s share %s", inst, o, a)
		}
		seen[a] = inst
	}
	_, err = l.get("g")
	if !errors.Is(err, ErrExhausted) || !strings.Contains(err.Error(), "all 5 addresses of 10.197.0.0/29 are leased") {
		t.Fatalf("exhausted subnet: %v", err)
	}
	if _, ok := l.Leases["g"]; ok {
		t.Fatal("a failed get left a lease")
	}
}

func TestLeasesOtherSubnetDropped(t *testing.T) {
	dir := t.TempDir()
	l, _ := loadLeases(dir, netip.MustParsePrefix("10.197.0.0/24"))
	l.get("a")
	l, err := loadLeases(dir, netip.MustParsePrefix("10.198.0.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Leases) != 0 {
		t.Fatalf("leases of another subnet kept: %v", l.Leases)
	}
	if a, _ := l.get("a"); a.String() != "10.198.0.2" {
		t.Fatalf("new subnet lease = %s", a)
	}
}

func TestLeasesCorrupt(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, layout.Leases), []byte("{"), 0o644)
	if _, err := loadLeases(dir, netip.MustParsePrefix(DefaultSubnet)); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("corrupt leases: %v", err)
	}
}

func TestKernelArgsAndDNS(t *testing.T) {
	got := KernelArgs(netip.MustParsePrefix("10.197.0.2/24"), netip.MustParseAddr("10.197.0.1"),
		parseResolvConf("# x\nnameserver 127.0.0.53\nnameserver 192.0.2.53\nnameserver ::1\nnameserver 9.9.9.9\nsearch lan\n"))
	want := "hypefs.ip=10.197.0.2/24 hypefs.gw=10.197.0.1 hypefs.dns=192.0.2.53,9.9.9.9"
	if strings.Join(got, " ") != want {
		t.Fatalf("KernelArgs = %q, want %q", got, want)
	}
	if got := KernelArgs(netip.MustParsePrefix("10.197.0.2/24"), netip.MustParseAddr("10.197.0.1"), nil); len(got) != 2 {
		t.Fatalf("no DNS: %q", got)
	}
}

// Where the hypervisor's NAT hands out addresses (vz), /host shows the
// subnet the last guest's DHCP lease names.
func TestGuestSubnetHostFacts(t *testing.T) {
	var g guestSubnet
	if got := string(g.hostFacts()); got != "network on\nnat hypervisor (vz)\nsubnet unknown until a guest reports its DHCP lease\n" {
		t.Fatalf("before any lease: %q", got)
	}
	g.set("web", netip.MustParsePrefix("192.168.64.7/24"))
	g.set("db", netip.MustParsePrefix("192.168.65.3/24"))
	if got := string(g.hostFacts()); got != "network on\nnat hypervisor (vz)\nsubnet 192.168.65.0/24 (from the DHCP lease of db)\n" {
		t.Fatalf("after leases: %q", got)
	}
}
