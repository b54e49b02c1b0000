//go:build linux

package network

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"hypefs/backend/instance"
	"hypefs/shim/engine"
)

// HostFacts are /host's lines about networking.
func (n *Network) HostFacts() []byte {
	if !n.Enabled() {
		return []byte("network off\n")
	}
	return fmt.Appendf(nil, "network on\nbridge %s\nsubnet %s\ngateway %s\n", n.opts.Bridge, n.opts.Subnet, Gateway(n.opts.Subnet))
}

// Available says why this process cannot run guest networking (nil when
// it can): it needs CAP_NET_ADMIN and /dev/net/tun.
func Available() error {
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		return errors.New("this host has no /dev/net/tun (load the tun module: modprobe tun)")
	}
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return fmt.Errorf("read capabilities: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			var caps uint64
			fmt.Sscanf(strings.TrimSpace(v), "%x", &caps)
			if caps&(1<<unix.CAP_NET_ADMIN) == 0 {
				return errors.New("hypefs lacks CAP_NET_ADMIN (run it as root, or give it the capability)")
			}
			return nil
		}
	}
	return errors.New("cannot tell whether hypefs has CAP_NET_ADMIN")
}

// Prepare gives a VM whose config asks for a network its NIC.
func (n *Network) Prepare(_ context.Context, inst string, cfg instance.Config, plan *instance.Plan) error {
	if !cfg.Network {
		return nil
	}
	if !n.Enabled() {
		return fmt.Errorf("cannot give the VM a network: %s; set \"network\": false in config to boot without one", n.opts.Disabled)
	}
	start := time.Now()
	n.mu.Lock()
	defer n.mu.Unlock()
	n.active[inst] = true
	ok := false
	defer func() {
		if !ok {
			delete(n.active, inst)
			n.maybeTeardownLocked()
		}
	}()
	if err := n.ensureUpLocked(); err != nil {
		return fmt.Errorf("cannot give the VM a network: %w", err)
	}
	addr, err := n.leases.get(inst)
	if err != nil {
		return fmt.Errorf("cannot give the VM a network: %w", err)
	}
	tap := TapName(inst)
	if err := n.makeTap(inst, tap); err != nil {
		return fmt.Errorf("cannot give the VM a network: %w", err)
	}
	ok = true
	mac := MAC(inst)
	plan.NICs = append(plan.NICs, engine.NIC{Tap: tap, MAC: mac})
	plan.Cmdline = append(plan.Cmdline, KernelArgs(netip.PrefixFrom(addr, n.opts.Subnet.Bits()), Gateway(n.opts.Subnet), n.opts.DNS)...)
	plan.Facts["ip"] = addr.String()
	plan.Facts["mac"] = mac
	plan.Facts["tap"] = tap
	n.lastSetup = time.Since(start)
	n.log.Info("network prepared", "instance", inst, "ip", addr, "tap", tap, "took", n.lastSetup)
	return nil
}

// Ended removes the VM's TAP, and the bridge and NAT when no VM is left.
func (n *Network) Ended(inst string) {
	if !n.Enabled() {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := delOwnedLink(TapName(inst), aliasPrefix+inst); err != nil {
		n.log.Warn("remove TAP", "instance", inst, "err", err)
	}
	delete(n.active, inst)
	n.maybeTeardownLocked()
}

// Deleted ends the instance's networking and releases its address.
func (n *Network) Deleted(inst string) {
	n.Ended(inst)
	if !n.Enabled() {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, err := n.leases.release(inst); err != nil {
		n.log.Warn("release address", "instance", inst, "err", err)
	}
}

// Reconcile runs once after a daemon start: TAPs of live VMs are kept,
// every other TAP hypefs made is removed, and the bridge and NAT are
// restored when live VMs need them or removed when none does.
func (n *Network) Reconcile(live map[string]bool) {
	if !n.Enabled() {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.reconciled = true
	links, err := netlink.LinkList()
	if err != nil {
		n.log.Warn("list interfaces", "err", err)
		return
	}
	for _, l := range links {
		a := l.Attrs()
		inst, ok := strings.CutPrefix(a.Alias, aliasPrefix)
		if !ok || a.Alias == bridgeAlias {
			continue
		}
		if live[inst] {
			n.active[inst] = true
			continue
		}
		n.log.Info("removing orphaned TAP", "tap", a.Name, "instance", inst)
		if err := netlink.LinkDel(l); err != nil {
			n.log.Warn("remove orphaned TAP", "tap", a.Name, "err", err)
		}
	}
	if len(n.active) == 0 {
		n.maybeTeardownLocked()
		return
	}
	if err := n.ensureUpLocked(); err != nil {
		n.log.Warn("restore the bridge for live VMs", "err", err)
	}
}

// ensureUpLocked sets up the bridge, its address, forwarding and NAT.
func (n *Network) ensureUpLocked() error {
	if n.up {
		return nil
	}
	br, err := n.bridgeLocked()
	if err != nil {
		return err
	}
	gw := &netlink.Addr{IPNet: &net.IPNet{IP: Gateway(n.opts.Subnet).AsSlice(), Mask: net.CIDRMask(n.opts.Subnet.Bits(), 32)}}
	if err := netlink.AddrReplace(br, gw); err != nil {
		return fmt.Errorf("set address %s on bridge %s: %w", gw.IPNet, n.opts.Bridge, err)
	}
	if err := netlink.LinkSetUp(br); err != nil {
		return fmt.Errorf("bring bridge %s up: %w", n.opts.Bridge, err)
	}
	if err := n.forwardLocked(); err != nil {
		return err
	}
	if err := addNAT(n.opts.Subnet, n.opts.Bridge); err != nil {
		return err
	}
	n.up = true
	return nil
}

// bridgeLocked finds hypefs's bridge or makes it, refusing a name that
// something else holds and a subnet that a route already covers.
func (n *Network) bridgeLocked() (netlink.Link, error) {
	name := n.opts.Bridge
	l, err := netlink.LinkByName(name)
	if err == nil {
		if _, isBr := l.(*netlink.Bridge); !isBr || l.Attrs().Alias != bridgeAlias {
			return nil, fmt.Errorf("the bridge name %s is taken by another interface (a %s that hypefs did not make); remove it or start hypefs with --bridge OTHERNAME", name, l.Type())
		}
	} else if !errors.As(err, new(netlink.LinkNotFoundError)) {
		return nil, fmt.Errorf("look up bridge %s: %w", name, err)
	}
	routes, err := hostRoutes()
	if err != nil {
		return nil, err
	}
	if err := Collision(n.opts.Subnet, name, routes); err != nil {
		return nil, err
	}
	if l != nil {
		return l, nil
	}
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}
	if err := netlink.LinkAdd(br); err != nil {
		if errors.Is(err, unix.EPERM) {
			return nil, fmt.Errorf("create bridge %s: permission denied: hypefs needs CAP_NET_ADMIN (run it as root)", name)
		}
		return nil, fmt.Errorf("create bridge %s: %w", name, err)
	}
	l, err = netlink.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("look up new bridge %s: %w", name, err)
	}
	if err := netlink.LinkSetAlias(l, bridgeAlias); err != nil {
		netlink.LinkDel(l)
		return nil, fmt.Errorf("mark bridge %s as hypefs's: %w", name, err)
	}
	return l, nil
}

// hostRoutes lists the IPv4 routes of every table.
func hostRoutes() ([]RouteInfo, error) {
	rs, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	names := map[int]string{}
	if ls, err := netlink.LinkList(); err == nil {
		for _, l := range ls {
			names[l.Attrs().Index] = l.Attrs().Name
		}
	}
	var out []RouteInfo
	for _, r := range rs {
		if r.Dst == nil || r.Type != unix.RTN_UNICAST && r.Type != 0 {
			continue // default routes; local and broadcast entries
		}
		ip, ok := netip.AddrFromSlice(r.Dst.IP)
		if !ok {
			continue
		}
		bits, _ := r.Dst.Mask.Size()
		out = append(out, RouteInfo{Dst: netip.PrefixFrom(ip.Unmap(), bits), Dev: names[r.LinkIndex]})
	}
	return out, nil
}

const ipForward = "/proc/sys/net/ipv4/ip_forward"

// forwardLocked turns on IPv4 forwarding, remembering the old value.
func (n *Network) forwardLocked() error {
	b, err := os.ReadFile(ipForward)
	if err != nil {
		return fmt.Errorf("read %s: %w", ipForward, err)
	}
	if strings.TrimSpace(string(b)) == "1" {
		return nil
	}
	n.leases.ForwardWas = strings.TrimSpace(string(b))
	if err := n.leases.save(); err != nil {
		return err
	}
	if err := os.WriteFile(ipForward, []byte("1\n"), 0o644); err != nil {
		return fmt.Errorf("turn on IPv4 forwarding: %w", err)
	}
	return nil
}

// maybeTeardownLocked removes NAT and the bridge when no VM needs them.
func (n *Network) maybeTeardownLocked() {
	if !n.reconciled || len(n.active) > 0 {
		return
	}
	n.up = false
	if err := delNAT(); err != nil {
		n.log.Warn("remove NAT", "err", err)
	}
	if err := delOwnedLink(n.opts.Bridge, bridgeAlias); err != nil {
		n.log.Warn("remove bridge", "err", err)
	}
	if w := n.leases.ForwardWas; w != "" {
		if err := os.WriteFile(ipForward, []byte(w+"\n"), 0o644); err != nil {
			n.log.Warn("restore IPv4 forwarding", "err", err)
		}
		n.leases.ForwardWas = ""
		if err := n.leases.save(); err != nil {
			n.log.Warn("save leases", "err", err)
		}
	}
}

// makeTap creates the instance's TAP in the bridge, replacing a stale one
// of the same instance.
func (n *Network) makeTap(inst, tap string) error {
	alias := aliasPrefix + inst
	if l, err := netlink.LinkByName(tap); err == nil {
		if l.Attrs().Alias != alias {
			return fmt.Errorf("interface %s exists and hypefs did not make it for %s; remove it", tap, inst)
		}
		if err := netlink.LinkDel(l); err != nil {
			return fmt.Errorf("remove stale TAP %s: %w", tap, err)
		}
	}
	t := &netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: tap}, Mode: netlink.TUNTAP_MODE_TAP,
		Flags: netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR}
	if err := netlink.LinkAdd(t); err != nil {
		return fmt.Errorf("create TAP %s: %w", tap, err)
	}
	l, err := netlink.LinkByName(tap)
	if err == nil {
		err = netlink.LinkSetAlias(l, alias)
	}
	if err == nil {
		err = netlink.LinkSetMasterByIndex(l, mustIndex(n.opts.Bridge))
	}
	if err == nil {
		err = netlink.LinkSetUp(l)
	}
	if err != nil {
		if l != nil {
			netlink.LinkDel(l)
		}
		return fmt.Errorf("set up TAP %s: %w", tap, err)
	}
	return nil
}

func mustIndex(name string) int {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return 0
	}
	return l.Attrs().Index
}

// delOwnedLink deletes the link name if its alias is alias.
func delOwnedLink(name, alias string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		if errors.As(err, new(netlink.LinkNotFoundError)) {
			return nil
		}
		return err
	}
	if l.Attrs().Alias != alias {
		return nil
	}
	return netlink.LinkDel(l)
}
