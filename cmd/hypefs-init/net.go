//go:build linux

package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// netConfig is the guest's network as the host set it on the kernel
// command line (docs/network.md):
//
//	hypefs.ip=ADDR/BITS   address of the first NIC (the Linux bridge)
//	hypefs.ip=dhcp        ask DHCP for one; also what no hypefs.ip means
//	hypefs.ip=off         leave the NIC unconfigured
//	hypefs.gw=ADDR        default route (with a static address)
//	hypefs.dns=A[,B...]   name servers for /etc/resolv.conf (likewise)
type netConfig struct {
	mode netMode
	addr netip.Prefix
	gw   netip.Addr
	dns  []netip.Addr
}

type netMode int

const (
	netDHCP   netMode = iota // no address from the host: DHCP, if there is a NIC
	netStatic                // hypefs.ip=ADDR/BITS
	netOff                   // hypefs.ip=off
)

// parseNetCmdline reads the network parameters. A hypefs.ip that is
// neither an IPv4 prefix nor dhcp/off is an error: the NIC is then left
// alone rather than configured some other way than the host meant.
func parseNetCmdline(cmdline string) (netConfig, error) {
	var c netConfig
	var err error
	for _, f := range strings.Fields(cmdline) {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "hypefs.ip":
			switch v {
			case "dhcp":
				c.mode, err = netDHCP, nil
			case "off", "none":
				c.mode, err = netOff, nil
			default:
				p, perr := netip.ParsePrefix(v)
				if perr != nil || !p.Addr().Is4() {
					c.mode, err = netOff, fmt.Errorf("hypefs.ip=%s is not an IPv4 ADDR/BITS, dhcp or off; the NIC is left unconfigured", v)
					continue
				}
				c.mode, c.addr, err = netStatic, p, nil
			}
		case "hypefs.gw":
			if a, err := netip.ParseAddr(v); err == nil && a.Is4() {
				c.gw = a
			}
		case "hypefs.dns":
			for _, s := range strings.Split(v, ",") {
				if a, err := netip.ParseAddr(s); err == nil {
					c.dns = append(c.dns, a)
				}
			}
		}
	}
	return c, err
}

// resolvConf is /etc/resolv.conf for the name servers and search domain.
func resolvConf(dns []netip.Addr, search string) []byte {
	var b strings.Builder
	if search != "" {
		fmt.Fprintf(&b, "search %s\n", search)
	}
	for _, a := range dns {
		fmt.Fprintf(&b, "nameserver %s\n", a)
	}
	return []byte(b.String())
}

// addressLine announces the guest's address on the console; the shim
// reads it (shim.AddressMarker) into hypefs.status, so info can show the
// address of a guest whose host assigned none. Keep it stable.
func addressLine(nic string, addr netip.Prefix, gw netip.Addr, how string) string {
	if gw.IsValid() {
		return fmt.Sprintf("hypefs: address %s on %s via %s (%s)", addr, nic, gw, how)
	}
	return fmt.Sprintf("hypefs: address %s on %s (%s)", addr, nic, how)
}

// setupNetwork brings lo up and configures the first NIC: with the
// address the host put on the command line (the Linux bridge), or else by
// DHCP when the machine has a NIC (vz's NAT, whose addresses only its
// DHCP server knows).
func setupNetwork(cmdline, hostname string) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("network socket: %w", err)
	}
	defer unix.Close(fd)
	if err := linkUp(fd, "lo"); err != nil {
		return err
	}
	c, err := parseNetCmdline(cmdline)
	if err != nil {
		return err
	}
	switch c.mode {
	case netStatic:
		nic, err := waitNIC(2 * time.Second)
		if err != nil {
			return err
		}
		return setupStatic(fd, nic, c)
	case netDHCP:
		wait := time.Duration(0)
		if hasVirtioNIC() {
			wait = 2 * time.Second
		}
		nic, err := waitNIC(wait)
		if err != nil {
			return nil // no NIC: nothing to ask DHCP for
		}
		return runDHCP(nic, hostname, dhcpWait)
	}
	return nil
}

// setupStatic configures nic with ioctls and one rtnetlink message (no
// DHCP, no tools).
func setupStatic(fd int, nic string, c netConfig) error {
	if err := setAddress(fd, nic, c.addr); err != nil {
		return err
	}
	// Tell the bridge who we are at once: a host that tried to reach this
	// address before it existed has an incomplete neighbour entry, and
	// its queued packets would otherwise wait for the next ARP retry
	// (up to a second).
	if err := announce(nic, c.addr.Addr()); err != nil {
		fmt.Printf("hypefs: network: gratuitous ARP: %v\n", err)
	}
	if c.gw.IsValid() {
		if err := addDefaultRoute(c.gw, false); err != nil {
			return fmt.Errorf("default route via %s: %w", c.gw, err)
		}
	}
	if len(c.dns) > 0 {
		if err := writeResolvConf(c.dns, ""); err != nil {
			return err
		}
	}
	fmt.Println(addressLine(nic, c.addr, c.gw, "static"))
	return nil
}

// setAddress gives nic the address and netmask of addr and brings it up.
func setAddress(fd int, nic string, addr netip.Prefix) error {
	ifr, err := unix.NewIfreq(nic)
	if err != nil {
		return err
	}
	if err := ifr.SetInet4Addr(addr.Addr().AsSlice()); err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFADDR, ifr); err != nil {
		return fmt.Errorf("set address %s on %s: %w", addr, nic, err)
	}
	m := ^uint32(0) << (32 - addr.Bits())
	ifr, _ = unix.NewIfreq(nic)
	ifr.SetInet4Addr([]byte{byte(m >> 24), byte(m >> 16), byte(m >> 8), byte(m)})
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFNETMASK, ifr); err != nil {
		return fmt.Errorf("set netmask of %s: %w", nic, err)
	}
	return linkUp(fd, nic)
}

func writeResolvConf(dns []netip.Addr, search string) error {
	os.MkdirAll("/etc", 0o755)
	if err := os.WriteFile("/etc/resolv.conf", resolvConf(dns, search), 0o644); err != nil {
		return fmt.Errorf("write /etc/resolv.conf: %w", err)
	}
	return nil
}

// hasVirtioNIC reports whether the machine has a virtio network device
// (virtio device ID 1), whose interface virtio_net is about to register.
func hasVirtioNIC() bool {
	ids, _ := filepath.Glob("/sys/bus/virtio/devices/*/device")
	for _, p := range ids {
		if b, err := os.ReadFile(p); err == nil && strings.TrimSpace(string(b)) == "0x0001" {
			return true
		}
	}
	return false
}

// waitNIC returns the first network interface other than lo, waiting for
// virtio_net to register it.
func waitNIC(timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for {
		ents, _ := os.ReadDir("/sys/class/net")
		var names []string
		for _, e := range ents {
			if e.Name() != "lo" {
				names = append(names, e.Name())
			}
		}
		if len(names) > 0 {
			sort.Strings(names)
			return names[0], nil
		}
		if time.Now().After(deadline) {
			return "", errors.New("the host gave this VM a network, but no network interface appeared (is virtio_net loaded?)")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func linkUp(fd int, name string) error {
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("flags of %s: %w", name, err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bring %s up: %w", name, err)
	}
	return nil
}

// addDefaultRoute sends RTM_NEWROUTE "default via gw" and waits for the
// kernel's acknowledgement. With replace, a default route that exists
// (an earlier lease's) is replaced instead of refused.
func addDefaultRoute(gw netip.Addr, replace bool) error {
	s, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return err
	}
	defer unix.Close(s)
	if err := unix.Bind(s, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	msg := routeMessage(gw, replace)
	if err := unix.Sendto(s, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	buf := make([]byte, 4096)
	n, _, err := unix.Recvfrom(s, buf, 0)
	if err != nil {
		return err
	}
	return parseAck(buf[:n])
}

// routeMessage is an RTM_NEWROUTE request for 0.0.0.0/0 via gw.
func routeMessage(gw netip.Addr, replace bool) []byte {
	ne := binary.NativeEndian
	attrLen := unix.SizeofRtAttr + 4
	total := unix.SizeofNlMsghdr + unix.SizeofRtMsg + attrLen
	b := make([]byte, total)
	ne.PutUint32(b[0:], uint32(total))
	ne.PutUint16(b[4:], unix.RTM_NEWROUTE)
	flags := uint16(unix.NLM_F_REQUEST | unix.NLM_F_ACK | unix.NLM_F_CREATE | unix.NLM_F_EXCL)
	if replace {
		flags = unix.NLM_F_REQUEST | unix.NLM_F_ACK | unix.NLM_F_CREATE | unix.NLM_F_REPLACE
	}
	ne.PutUint16(b[6:], flags)
	ne.PutUint32(b[8:], 1) // sequence
	r := b[unix.SizeofNlMsghdr:]
	r[0] = unix.AF_INET // family; dst_len, src_len, tos stay 0
	r[4] = unix.RT_TABLE_MAIN
	r[5] = unix.RTPROT_BOOT
	r[6] = unix.RT_SCOPE_UNIVERSE
	r[7] = unix.RTN_UNICAST
	a := r[unix.SizeofRtMsg:]
	ne.PutUint16(a[0:], uint16(attrLen))
	ne.PutUint16(a[2:], unix.RTA_GATEWAY)
	g := gw.As4()
	copy(a[4:], g[:])
	return b
}

// parseAck reads the kernel's NLMSG_ERROR answer (error 0 is success).
func parseAck(b []byte) error {
	if len(b) < unix.SizeofNlMsghdr+4 {
		return errors.New("short netlink answer")
	}
	ne := binary.NativeEndian
	if ne.Uint16(b[4:]) != unix.NLMSG_ERROR {
		return fmt.Errorf("unexpected netlink answer type %d", ne.Uint16(b[4:]))
	}
	if code := int32(ne.Uint32(b[unix.SizeofNlMsghdr:])); code != 0 {
		return unix.Errno(-code)
	}
	return nil
}

// announce broadcasts a gratuitous ARP request for addr from nic.
func announce(nic string, addr netip.Addr) error {
	b, err := os.ReadFile("/sys/class/net/" + nic + "/address")
	if err != nil {
		return err
	}
	mac, err := parseMAC(strings.TrimSpace(string(b)))
	if err != nil {
		return fmt.Errorf("MAC of %s: %w", nic, err)
	}
	b, err = os.ReadFile("/sys/class/net/" + nic + "/ifindex")
	if err != nil {
		return err
	}
	index, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return fmt.Errorf("index of %s: %w", nic, err)
	}
	proto := uint16(unix.ETH_P_ARP<<8&0xff00 | unix.ETH_P_ARP>>8) // network byte order
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, int(proto))
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	to := &unix.SockaddrLinklayer{Protocol: proto, Ifindex: index, Halen: 6, Addr: [8]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}
	return unix.Sendto(fd, garp(mac, addr), 0, to)
}

// garp is an ARP request whose sender and target are both addr.
func garp(mac []byte, addr netip.Addr) []byte {
	ip := addr.As4()
	p := []byte{0, 1, 8, 0, 6, 4, 0, 1} // Ethernet, IPv4, request
	p = append(p, mac...)
	p = append(p, ip[:]...)
	p = append(p, 0, 0, 0, 0, 0, 0)
	return append(p, ip[:]...)
}

// parseMAC reads "aa:bb:cc:dd:ee:ff".
func parseMAC(s string) ([]byte, error) {
	f := strings.Split(s, ":")
	if len(f) != 6 {
		return nil, fmt.Errorf("%q is not a MAC address", s)
	}
	mac := make([]byte, 6)
	for k, h := range f {
		v, err := strconv.ParseUint(h, 16, 8)
		if err != nil {
			return nil, fmt.Errorf("%q is not a MAC address", s)
		}
		mac[k] = byte(v)
	}
	return mac, nil
}
