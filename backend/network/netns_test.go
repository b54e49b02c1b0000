//go:build linux

package network

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"hypefs/backend/instance"
	"hypefs/internal/testenv"
)

// These tests make real bridges, TAPs and nftables tables, each inside a
// network namespace of its own that testenv.Netns creates and deletes.

func newNet(t *testing.T, dir string) *Network {
	t.Helper()
	n, err := New(Options{Dir: dir, Subnet: netip.MustParsePrefix(DefaultSubnet), Log: slog.New(slog.NewTextHandler(os.Stderr, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func prepare(t *testing.T, n *Network, inst string) *instance.Plan {
	t.Helper()
	plan := &instance.Plan{Facts: map[string]string{}}
	if err := n.Prepare(context.Background(), inst, instance.Config{Network: true}, plan); err != nil {
		t.Fatalf("Prepare %s: %v", inst, err)
	}
	return plan
}

func linkExists(name string) bool {
	_, err := netlink.LinkByName(name)
	return err == nil
}

func natExists(t *testing.T) bool {
	t.Helper()
	ok, err := hasNAT()
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

func forwarding() string {
	b, _ := os.ReadFile(ipForward)
	return strings.TrimSpace(string(b))
}

func TestNetnsLifecycle(t *testing.T) {
	if _, inside := testenv.Netns(t); !inside {
		return
	}
	dir := t.TempDir()
	n := newNet(t, dir)
	n.Reconcile(nil)
	if linkExists(DefaultBridge) || natExists(t) {
		t.Fatal("bridge or NAT exists before any VM")
	}
	pa := prepare(t, n, "a")
	pb := prepare(t, n, "b")
	if pa.Facts["ip"] != "10.197.0.2" || pb.Facts["ip"] != "10.197.0.3" || pa.Facts["tap"] != "hf-a" || pa.Facts["mac"] != MAC("a") {
		t.Fatalf("facts a=%v b=%v", pa.Facts, pb.Facts)
	}
	if len(pa.NICs) != 1 || pa.NICs[0].Tap != "hf-a" || pa.NICs[0].MAC != MAC("a") {
		t.Fatalf("NICs = %+v", pa.NICs)
	}
	if got := strings.Join(pa.Cmdline, " "); !strings.HasPrefix(got, "hypefs.ip=10.197.0.2/24 hypefs.gw=10.197.0.1") {
		t.Fatalf("cmdline = %q", got)
	}
	br, err := netlink.LinkByName(DefaultBridge)
	if err != nil {
		t.Fatal(err)
	}
	addrs, _ := netlink.AddrList(br, netlink.FAMILY_V4)
	if len(addrs) != 1 || addrs[0].IPNet.String() != "10.197.0.1/24" {
		t.Fatalf("bridge addresses = %v", addrs)
	}
	tap, err := netlink.LinkByName("hf-a")
	if err != nil || tap.Attrs().MasterIndex != br.Attrs().Index || tap.Attrs().Alias != "hypefs:a" {
		t.Fatalf("TAP hf-a: %v %+v", err, tap)
	}
	if !natExists(t) || forwarding() != "1" {
		t.Fatalf("NAT %v, ip_forward %s while VMs run", natExists(t), forwarding())
	}
	t.Logf("TAP setup took %s", n.LastSetup())

	n.Ended("a")
	n.Ended("a") // idempotent
	if linkExists("hf-a") || !natExists(t) || !linkExists(DefaultBridge) {
		t.Fatal("after a ended: hf-a must be gone, NAT and bridge kept for b")
	}
	n.Ended("b")
	if linkExists("hf-b") || natExists(t) || linkExists(DefaultBridge) || forwarding() != "0" {
		t.Fatalf("after every VM ended: tap %v NAT %v bridge %v ip_forward %s", linkExists("hf-b"), natExists(t), linkExists(DefaultBridge), forwarding())
	}

	// A restarted daemon: a's address is kept; c gets a new one.
	n = newNet(t, dir)
	n.Reconcile(nil)
	if p := prepare(t, n, "a"); p.Facts["ip"] != "10.197.0.2" {
		t.Fatalf("a after restart: %v", p.Facts)
	}
	if p := prepare(t, n, "c"); p.Facts["ip"] != "10.197.0.4" {
		t.Fatalf("c after restart: %v", p.Facts)
	}
	// Killed with both VMs up; restarted with only a alive.
	n = newNet(t, dir)
	n.Ended("c") // a settle during load: no teardown yet
	if !linkExists(DefaultBridge) {
		t.Fatal("an Ended before Reconcile tore the bridge down")
	}
	n.Reconcile(map[string]bool{"a": true})
	if !linkExists("hf-a") || linkExists("hf-c") || !natExists(t) {
		t.Fatalf("reconcile: hf-a %v (keep) hf-c %v (remove) NAT %v (keep)", linkExists("hf-a"), linkExists("hf-c"), natExists(t))
	}
	n.Deleted("a")
	n.Deleted("b")
	n.Deleted("c")
	if linkExists("hf-a") || natExists(t) || linkExists(DefaultBridge) {
		t.Fatal("something is left after every instance was deleted")
	}
	l, _ := loadLeases(dir, n.opts.Subnet)
	if len(l.Leases) != 0 {
		t.Fatalf("leases left: %v", l.Leases)
	}
	// An orphaned TAP of ours with no live VM goes at Reconcile.
	n = newNet(t, dir)
	n.Reconcile(nil)
	prepare(t, n, "x")
	n = newNet(t, dir)
	n.Reconcile(map[string]bool{})
	if linkExists("hf-x") || linkExists(DefaultBridge) || natExists(t) {
		t.Fatal("orphaned TAP, bridge or NAT left after Reconcile with no live VM")
	}
}

func TestNetnsRefusals(t *testing.T) {
	if _, inside := testenv.Netns(t); !inside {
		return
	}
	dir := t.TempDir()
	n := newNet(t, dir)
	n.Reconcile(nil)
	try := func(inst string) error {
		plan := &instance.Plan{Facts: map[string]string{}}
		err := n.Prepare(context.Background(), inst, instance.Config{Network: true}, plan)
		if err == nil {
			n.Ended(inst)
		}
		return err
	}

	// The bridge name held by something else.
	dummy := &netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: DefaultBridge}, Mode: netlink.TUNTAP_MODE_TAP}
	if err := netlink.LinkAdd(dummy); err != nil {
		t.Fatal(err)
	}
	err := try("a")
	if err == nil || !strings.Contains(err.Error(), "bridge name hypefs0 is taken") {
		t.Fatalf("bridge name taken: %v", err)
	}
	if linkExists("hf-a") || !linkExists(DefaultBridge) {
		t.Fatal("a refused Prepare left a TAP or removed the other interface")
	}
	if err := delOwnedLink(DefaultBridge, ""); err != nil {
		t.Fatal(err)
	}

	// A route already covering the subnet.
	other := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "lan0"}}
	netlink.LinkAdd(other)
	netlink.LinkSetUp(other)
	_, dst, _ := net.ParseCIDR("10.197.0.0/16")
	if err := netlink.RouteAdd(&netlink.Route{LinkIndex: mustIndex("lan0"), Dst: dst}); err != nil {
		t.Fatal(err)
	}
	err = try("a")
	if err == nil || !strings.Contains(err.Error(), "collides with the route to 10.197.0.0/16 on lan0") {
		t.Fatalf("collision: %v", err)
	}
	if err := delOwnedLink("lan0", ""); err != nil {
		t.Fatal(err)
	}
	if err := try("a"); err != nil {
		t.Fatalf("after the collision went away: %v", err)
	}

	// Networking off: a config asking for it fails; one without it gets no NIC.
	off, _ := New(Options{Disabled: "hypefs was started with --network off"})
	plan := &instance.Plan{Facts: map[string]string{}}
	err = off.Prepare(context.Background(), "a", instance.Config{Network: true}, plan)
	if err == nil || !strings.Contains(err.Error(), "--network off") {
		t.Fatalf("disabled: %v", err)
	}
	if err := off.Prepare(context.Background(), "a", instance.Config{}, plan); err != nil || len(plan.NICs) != 0 {
		t.Fatalf("network false: %v %v", err, plan.NICs)
	}
	if err := n.Prepare(context.Background(), "a", instance.Config{}, plan); err != nil || len(plan.NICs) != 0 || linkExists("hf-a") {
		t.Fatalf("network false on an enabled network: %v %v", err, plan.NICs)
	}
}

// The TAP of a VM that is not set up by hand: how long does Prepare take
// against ip tuntap add + ip link set master?
func TestNetnsSetupTime(t *testing.T) {
	if _, inside := testenv.Netns(t); !inside {
		return
	}
	n := newNet(t, t.TempDir())
	n.Reconcile(nil)
	prepare(t, n, "keep") // bridge and NAT up
	start := time.Now()
	prepare(t, n, "b")
	t.Logf("second TAP: %s (first with bridge+NAT: see log)", time.Since(start))
	n.Deleted("b")
	n.Deleted("keep")
}
