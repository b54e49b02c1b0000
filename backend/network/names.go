package network

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"strings"
)

// Defaults for the daemon's flags.
const (
	// DefaultBridge is the bridge's name.
	DefaultBridge = "hypefs0"
	// DefaultSubnet sits in 10/8 away from the ranges that home routers
	// (192.168.x), Docker (172.17–31.x, then 192.168.x), Podman
	// (10.88.x), Kubernetes (10.42–10.43, 10.96, 10.244), OpenVPN
	// (10.8.x), Tailscale (100.64/10) and libvirt (192.168.122.x) use.
	DefaultSubnet = "10.197.0.0/24"
)

// tapPrefix starts the name of every TAP hypefs makes for a short
// instance name; hashPrefix when the name is too long to fit.
const (
	tapPrefix  = "hf-"
	hashPrefix = "hfh"
	// ifNameMax is IFNAMSIZ-1: the kernel's limit on interface names.
	ifNameMax = 15
	// aliasPrefix marks links hypefs owns: their alias (IFLA_IFALIAS)
	// is aliasPrefix + the instance name (TAPs) or + "bridge".
	aliasPrefix = "hypefs:"
	bridgeAlias = aliasPrefix + "bridge"
)

// TapName is the TAP device of an instance: "hf-NAME" when that fits in
// 15 bytes, else "hfh" and 12 hex digits of the name's SHA-256. The two
// forms never collide: instance names cannot make "hf-" look like "hfh".
func TapName(inst string) string {
	if len(tapPrefix)+len(inst) <= ifNameMax {
		return tapPrefix + inst
	}
	sum := sha256.Sum256([]byte(inst))
	return hashPrefix + hex.EncodeToString(sum[:])[:ifNameMax-len(hashPrefix)]
}

// MAC is the guest NIC's address for an instance: locally administered
// (02:...) unicast, the rest from the SHA-256 of the instance name, so
// the same instance gets the same MAC on every boot and daemon.
func MAC(inst string) string {
	sum := sha256.Sum256([]byte("hypefs-mac:" + inst))
	return net.HardwareAddr{0x02, sum[0], sum[1], sum[2], sum[3], sum[4]}.String()
}

// ParseSubnet checks a --subnet value: an IPv4 prefix between /16 and
// /29 given by its network address, e.g. "10.197.0.0/24".
func ParseSubnet(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(strings.TrimSpace(s))
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("subnet %q is not an address prefix such as %s", s, DefaultSubnet)
	}
	if !p.Addr().Is4() {
		return netip.Prefix{}, fmt.Errorf("subnet %s is not IPv4; guest networking is IPv4 only", p)
	}
	if p.Bits() < 16 || p.Bits() > 29 {
		return netip.Prefix{}, fmt.Errorf("subnet %s must be between /16 and /29", p)
	}
	if p.Masked() != p {
		return netip.Prefix{}, fmt.Errorf("subnet %s has host bits set; did you mean %s?", p, p.Masked())
	}
	return p, nil
}

// Gateway is the bridge's own address: the subnet's first host.
func Gateway(subnet netip.Prefix) netip.Addr { return subnet.Addr().Next() }

// broadcast is the subnet's last address.
func broadcast(subnet netip.Prefix) netip.Addr {
	a := subnet.Addr().As4()
	host := uint32(1)<<(32-subnet.Bits()) - 1
	v := (uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// RouteInfo is what collision detection needs of a route.
type RouteInfo struct {
	Dst netip.Prefix // zero for a default route
	Dev string
}

// Collision returns a sentence when a route of the host, other than one
// through bridge, overlaps subnet; default routes do not count.
func Collision(subnet netip.Prefix, bridge string, routes []RouteInfo) error {
	for _, r := range routes {
		if !r.Dst.IsValid() || r.Dst.Bits() == 0 || r.Dev == bridge {
			continue
		}
		if r.Dst.Overlaps(subnet) {
			return fmt.Errorf("subnet %s collides with the route to %s on %s; start hypefs with another --subnet (e.g. --subnet 10.198.0.0/24)", subnet, r.Dst, r.Dev)
		}
	}
	return nil
}
