//go:build !linux

package network

import (
	"context"
	"fmt"
	"net/netip"

	"hypefs/backend/instance"
	"hypefs/shim/engine"
)

// Available: on macOS the hypervisor's own NAT gives guests a network.
func Available() error { return nil }

var _ instance.AddressWatcher = (*Network)(nil)

// HostFacts are /host's lines about networking: the hypervisor's NAT, and
// its subnet as the guests' DHCP leases show it (the NAT's subnet is not
// set by hypefs and can move, 192.168.64 -> 65 -> 66).
func (n *Network) HostFacts() []byte {
	if !n.Enabled() {
		return []byte("network off\n")
	}
	return n.guestNet.hostFacts()
}

// GuestAddress learns the NAT's subnet from a guest's DHCP lease.
func (n *Network) GuestAddress(inst string, addr netip.Prefix) { n.guestNet.set(inst, addr) }

// Prepare gives the VM a NIC on the hypervisor's NAT (vz); the host makes
// no TAP, bridge or rule.
func (n *Network) Prepare(_ context.Context, inst string, cfg instance.Config, plan *instance.Plan) error {
	if !cfg.Network {
		return nil
	}
	if !n.Enabled() {
		return fmt.Errorf("cannot give the VM a network: %s; set \"network\": false in config to boot without one", n.opts.Disabled)
	}
	mac := MAC(inst)
	plan.NICs = append(plan.NICs, engine.NIC{MAC: mac})
	plan.Facts["mac"] = mac
	return nil
}

// Ended does nothing: there is no TAP.
func (n *Network) Ended(string) {}

// Deleted does nothing: vz's NAT hands out addresses.
func (n *Network) Deleted(string) {}

// Reconcile does nothing.
func (n *Network) Reconcile(map[string]bool) {}
