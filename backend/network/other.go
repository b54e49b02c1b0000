//go:build !linux

package network

import (
	"context"
	"fmt"

	"hypefs/backend/instance"
	"hypefs/shim/engine"
)

// Available: on macOS the hypervisor's own NAT gives guests a network.
func Available() error { return nil }

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
