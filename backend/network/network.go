// Package network gives hypefs guests a virtio-net NIC on a host bridge:
// the bridge and its subnet, one TAP per VM, persistent address leases,
// a MAC derived from the instance name, and NAT (nftables table "hypefs")
// for traffic leaving the bridge. It is an instance.Part: Prepare puts the
// NIC, the guest's kernel arguments and the facts ip/mac/tap into the boot
// plan; Ended removes the TAP, and the bridge and NAT once no VM needs
// them; Deleted releases the address; Reconcile removes orphaned TAPs
// after a daemon restart. See docs/network.md.
//
// Every link hypefs makes carries an alias (IFLA_IFALIAS) "hypefs:bridge"
// or "hypefs:INSTANCE"; only links with such an alias are ever removed.
package network

import (
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"hypefs/backend/instance"
)

// Options configure a Network.
type Options struct {
	// Dir holds the leases (DATA/network).
	Dir    string
	Bridge string       // DefaultBridge when empty
	Subnet netip.Prefix // DefaultSubnet when invalid
	// DNS servers written into the guest's /etc/resolv.conf; HostDNS()
	// is the usual choice.
	DNS []netip.Addr
	// Disabled, when not empty, says why networking is off in this
	// daemon: a config that asks for a network then fails to boot with
	// this reason, and nothing on the host is touched.
	Disabled string
	Log      *slog.Logger
}

// Network is the networking part of the instance manager.
type Network struct {
	opts Options
	log  *slog.Logger

	mu         sync.Mutex
	leases     *leases
	active     map[string]bool // instances whose TAP exists or is being made
	reconciled bool            // Reconcile ran: teardown is safe when active empties
	up         bool            // bridge, address and NAT are in place
	lastSetup  time.Duration
	guestNet   guestSubnet // the NAT subnet as guests report it (vz)
}

var (
	_ instance.Part       = (*Network)(nil)
	_ instance.Reconciler = (*Network)(nil)
)

// New reads the leases; it touches no interface until a VM needs one.
func New(opts Options) (*Network, error) {
	if opts.Bridge == "" {
		opts.Bridge = DefaultBridge
	}
	if len(opts.Bridge) > ifNameMax || strings.ContainsAny(opts.Bridge, "/: \t\n") {
		return nil, fmt.Errorf("bridge name %q is not a valid interface name (at most %d bytes, no '/', ':' or spaces)", opts.Bridge, ifNameMax)
	}
	if !opts.Subnet.IsValid() {
		opts.Subnet = netip.MustParsePrefix(DefaultSubnet)
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	n := &Network{opts: opts, log: opts.Log, active: map[string]bool{}}
	if opts.Disabled != "" {
		return n, nil
	}
	l, err := loadLeases(opts.Dir, opts.Subnet)
	if err != nil {
		return nil, err
	}
	n.leases = l
	return n, nil
}

// Enabled reports whether guests can have a network in this daemon.
func (n *Network) Enabled() bool { return n.opts.Disabled == "" }

// LastSetup is how long the last Prepare took to set up the TAP (and the
// bridge and NAT, when it had to).
func (n *Network) LastSetup() time.Duration {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.lastSetup
}

// KernelArgs are the guest's network settings for hypefs-init:
// hypefs.ip=ADDR/BITS hypefs.gw=GATEWAY [hypefs.dns=A,B].
func KernelArgs(addr netip.Prefix, gw netip.Addr, dns []netip.Addr) []string {
	a := []string{"hypefs.ip=" + addr.String(), "hypefs.gw=" + gw.String()}
	if len(dns) > 0 {
		s := make([]string, len(dns))
		for k, d := range dns {
			s[k] = d.String()
		}
		a = append(a, "hypefs.dns="+strings.Join(s, ","))
	}
	return a
}

// HostDNS lists the host's name servers that a guest can reach: those in
// /etc/resolv.conf (or systemd-resolved's upstream list when that names
// only a local stub), loopback addresses left out.
func HostDNS() []netip.Addr {
	for _, f := range []string{"/etc/resolv.conf", "/run/systemd/resolve/resolv.conf"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		if a := parseResolvConf(string(b)); len(a) > 0 {
			return a
		}
	}
	return nil
}

func parseResolvConf(s string) []netip.Addr {
	var out []netip.Addr
	for _, line := range strings.Split(s, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "nameserver" {
			continue
		}
		a, err := netip.ParseAddr(f[1])
		if err != nil || !a.Is4() || a.IsLoopback() || a.IsUnspecified() {
			continue
		}
		out = append(out, a)
	}
	return out
}
