//go:build linux

package main

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// DHCP is busybox's udhcpc, which the initramfs has anyway, with the init
// itself as udhcpc's script (-s): udhcpc runs /init with the event as its
// one argument and the lease in its environment, and the init, not being
// PID 1, handles the event (dhcpEvent) with the same code that sets a
// static address. udhcpc stays in the foreground for the VM's life and
// renews the lease; the power-off ends it like every other process.

// leaseFile is where the guest records its DHCP lease (JSON, lease).
const leaseFile = "/run/hypefs/lease"

// dhcpWait bounds how long the boot waits for the first lease. Without
// one the boot goes on (the ready line is not held back); udhcpc keeps
// asking, and a later lease is announced when it comes.
const dhcpWait = 5 * time.Second

// lease is the DHCP lease the guest holds, as recorded in leaseFile.
type lease struct {
	Interface string       `json:"interface"`
	Address   netip.Prefix `json:"address"`
	Router    netip.Addr   `json:"router,omitzero"`
	DNS       []netip.Addr `json:"dns,omitempty"`
	Domain    string       `json:"domain,omitempty"`
	Server    netip.Addr   `json:"server,omitzero"`
	Seconds   int          `json:"lease_seconds,omitempty"`
}

// runDHCP starts udhcpc on nic and waits up to wait for the first lease.
func runDHCP(nic, hostname string, wait time.Duration) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("dhcp: %w", err)
	}
	null, err := os.OpenFile("/dev/null", os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("dhcp: %w", err)
	}
	defer null.Close()
	args := []string{"udhcpc", "-f", "-i", nic, "-s", self,
		"-t", "3", "-T", "1", "-A", "3", // three tries a second apart, again after 3 s
		"-x", "hostname:" + hostname} // vmnet's server lists leases by name
	p, err := os.StartProcess("/bin/busybox", args, &os.ProcAttr{
		Dir:   "/",
		Env:   []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"},
		Files: []*os.File{null, null, null}, // udhcpc's chatter; the script announces the lease
		Sys:   &syscall.SysProcAttr{Setsid: true},
	})
	if err != nil {
		return fmt.Errorf("dhcp: start udhcpc: %w", err)
	}
	p.Release() // the reaper waits for it
	for deadline := time.Now().Add(wait); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(leaseFile); err == nil {
			return nil
		}
	}
	return fmt.Errorf("no DHCP lease for %s within %v; the boot goes on without an address (udhcpc keeps asking)", nic, wait)
}

// isDHCPEvent reports whether this process is the init run by udhcpc as
// its script.
func isDHCPEvent(args []string) bool {
	return os.Getpid() != 1 && len(args) == 2 && os.Getenv("interface") != ""
}

// dhcpEvent handles one udhcpc event: "deconfig" (no lease: the interface
// is up without an address), "bound" and "renew" (configure it), and
// "leasefail"/"nak" (nothing to do).
func dhcpEvent(event string, env func(string) string) error {
	nic := env("interface")
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	switch event {
	case "deconfig":
		os.Remove(leaseFile)
		setAddress(fd, nic, netip.PrefixFrom(netip.IPv4Unspecified(), 0)) // drops the address
		return linkUp(fd, nic)
	case "bound", "renew":
	default:
		return nil
	}
	l, err := leaseFromEnv(env)
	if err != nil {
		return err
	}
	old, _ := readLease()
	if old.sameConfig(l) {
		return writeLease(l) // a renewal: only the lease time is new
	}
	if err := setAddress(fd, nic, l.Address); err != nil {
		return err
	}
	if l.Router.IsValid() {
		if err := addDefaultRoute(l.Router, true); err != nil {
			return fmt.Errorf("default route via %s: %w", l.Router, err)
		}
	}
	if len(l.DNS) > 0 {
		if err := writeResolvConf(l.DNS, l.Domain); err != nil {
			return err
		}
	}
	say(addressLine(nic, l.Address, l.Router, "dhcp"))
	return writeLease(l)
}

// leaseFromEnv reads the lease udhcpc passes in its script's environment.
func leaseFromEnv(env func(string) string) (lease, error) {
	l := lease{Interface: env("interface")}
	if d := strings.Fields(env("domain")); len(d) > 0 {
		l.Domain = d[0] // the first of udhcpc's search list
	}
	ip, err := netip.ParseAddr(env("ip"))
	if err != nil || !ip.Is4() {
		return l, fmt.Errorf("dhcp: lease without an IPv4 address (ip=%q)", env("ip"))
	}
	bits, err := strconv.Atoi(env("mask"))
	if err != nil {
		if m, err := netip.ParseAddr(env("subnet")); err == nil {
			bits = maskBits(m)
		} else {
			bits = 32
		}
	}
	if bits < 1 || bits > 32 {
		return l, fmt.Errorf("dhcp: lease with netmask /%d", bits)
	}
	l.Address = netip.PrefixFrom(ip, bits)
	for _, r := range strings.Fields(env("router")) {
		if a, err := netip.ParseAddr(r); err == nil && a.Is4() {
			l.Router = a
			break
		}
	}
	for _, d := range strings.Fields(env("dns")) {
		if a, err := netip.ParseAddr(d); err == nil {
			l.DNS = append(l.DNS, a)
		}
	}
	l.Server, _ = netip.ParseAddr(env("serverid"))
	l.Seconds, _ = strconv.Atoi(env("lease"))
	return l, nil
}

// maskBits counts a dotted netmask's leading ones.
func maskBits(m netip.Addr) int {
	b := m.As4()
	n := 0
	for _, x := range b {
		for i := 7; i >= 0 && x&(1<<i) != 0; i-- {
			n++
		}
	}
	return n
}

// sameConfig reports whether a lease configures the guest as l does.
func (l lease) sameConfig(o lease) bool {
	return l.Interface == o.Interface && l.Address == o.Address && l.Router == o.Router &&
		l.Domain == o.Domain && fmt.Sprint(l.DNS) == fmt.Sprint(o.DNS)
}

func readLease() (lease, error) {
	var l lease
	b, err := os.ReadFile(leaseFile)
	if err != nil {
		return l, err
	}
	return l, json.Unmarshal(b, &l)
}

// writeLease records l atomically: PID 1 waits for the file to appear.
func writeLease(l lease) error {
	b, err := json.MarshalIndent(l, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(leaseFile), 0o755); err != nil {
		return err
	}
	tmp := leaseFile + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, leaseFile)
}

// say prints line on /dev/console (udhcpc runs its script with its own
// output on /dev/null).
func say(line string) {
	if f, err := os.OpenFile("/dev/console", os.O_WRONLY|unix.O_NOCTTY, 0); err == nil {
		fmt.Fprintln(f, line)
		f.Close()
		return
	}
	fmt.Println(line)
}

// dhcpMain is the init run as udhcpc's script; it returns the exit code.
func dhcpMain(args []string) int {
	if err := dhcpEvent(args[1], os.Getenv); err != nil {
		say("hypefs: network: " + err.Error())
		return 1
	}
	return 0
}
