package instance

import (
	"context"
	"net/netip"

	"hypefs/shim/engine"
)

// Plan collects what the parts of the backend add to one boot.
type Plan struct {
	Disks   []engine.Disk
	NICs    []engine.NIC
	Cmdline []string // extra kernel arguments, appended in order
	// Facts are shown in the instance's info (keys such as "ip", "mac",
	// "tap", "image", "digest") and kept until the next boot.
	Facts map[string]string
	// Owner is who the instance belongs to (set by the manager): parts
	// act on their behalf, e.g. the image part pulls with the owner's
	// registry credentials.
	Owner Owner
}

// Part is a piece of the backend that takes part in an instance's life:
// the image store puts the root disk into the plan, networking a NIC.
// Parts are given to the manager in Options.Parts and run in that order.
type Part interface {
	// Prepare adds to plan before the shim starts. An error fails the
	// boot: the instance goes to state error with the error's text.
	Prepare(ctx context.Context, inst string, cfg Config, plan *Plan) error
	// Ended runs when a VM has ended for good (stopped, crashed, or its
	// boot failed after Prepare). It may come for an instance Prepare did
	// not see in this process (after a daemon restart) and more than
	// once: it must be idempotent.
	Ended(inst string)
	// Deleted runs when the instance is removed (rmdir).
	Deleted(inst string)
}

// Reconciler is a Part that cleans up after a daemon restart: it is told
// which instances still have a live VM, once they are all loaded.
type Reconciler interface {
	Reconcile(live map[string]bool)
}

// AddressWatcher is a Part that wants the address a guest announced for
// itself (hypefs-init's address line, e.g. after DHCP on vz's NAT). It is
// called outside the instance's lock, once per new address.
type AddressWatcher interface {
	GuestAddress(inst string, addr netip.Prefix)
}
