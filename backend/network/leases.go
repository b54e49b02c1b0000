package network

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"hypefs/backend/layout"
	"hypefs/internal/atomicfile"
)

// ErrExhausted is returned when every address of the subnet is leased.
var ErrExhausted = errors.New("subnet exhausted")

// leases is the persistent address allocation: one address per instance,
// held from its first networked boot until it is deleted. New addresses
// are taken round-robin after the last one handed out, so an address that
// was just released is not reused while another is free (stale ARP
// entries and connections then never reach a new VM).
type leases struct {
	path string
	// Subnet the leases belong to; leases outside a new subnet are dropped.
	Subnet netip.Prefix          `json:"subnet"`
	Last   netip.Addr            `json:"last,omitzero"` // last address handed out
	Leases map[string]netip.Addr `json:"leases"`        // instance -> address
	// ForwardWas is net.ipv4.ip_forward as it was before hypefs set it
	// to 1 ("" when hypefs has not changed it), so teardown can restore it
	// even after a crash.
	ForwardWas string `json:"forward_was,omitempty"`
}

// loadLeases reads dir/leases.json, or starts empty. Leases outside
// subnet (the daemon was started with another --subnet) are dropped.
func loadLeases(dir string, subnet netip.Prefix) (*leases, error) {
	l := &leases{path: filepath.Join(dir, layout.Leases), Subnet: subnet, Leases: map[string]netip.Addr{}}
	b, err := os.ReadFile(l.path)
	if errors.Is(err, os.ErrNotExist) {
		return l, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read address leases: %w", err)
	}
	var disk leases
	if err := json.Unmarshal(b, &disk); err != nil {
		return nil, fmt.Errorf("address leases %s are corrupt: %w", l.path, err)
	}
	l.ForwardWas = disk.ForwardWas
	if disk.Subnet == subnet {
		l.Last = disk.Last
	}
	for inst, a := range disk.Leases {
		if l.usable(a) {
			l.Leases[inst] = a
		}
	}
	return l, nil
}

// usable reports whether a can be given to a VM: in the subnet, neither
// the network, the gateway nor the broadcast address.
func (l *leases) usable(a netip.Addr) bool {
	return a.IsValid() && l.Subnet.Contains(a) && a != l.Subnet.Addr() && a != Gateway(l.Subnet) && a != broadcast(l.Subnet)
}

func (l *leases) save() error {
	if err := os.MkdirAll(filepath.Dir(l.path), layout.PrivateDir); err != nil {
		return fmt.Errorf("create network directory: %w", err)
	}
	return atomicfile.WriteJSON(l.path, l, layout.PrivateFile)
}

// get returns inst's address, leasing a new one (and saving) if it has none.
func (l *leases) get(inst string) (netip.Addr, error) {
	if a, ok := l.Leases[inst]; ok {
		return a, nil
	}
	used := make(map[netip.Addr]bool, len(l.Leases))
	for _, a := range l.Leases {
		used[a] = true
	}
	a := l.Last
	if !l.usable(a) {
		a = Gateway(l.Subnet)
	}
	for range 1 << (32 - l.Subnet.Bits()) {
		a = a.Next()
		if !l.Subnet.Contains(a) {
			a = l.Subnet.Addr()
		}
		if l.usable(a) && !used[a] {
			l.Leases[inst], l.Last = a, a
			if err := l.save(); err != nil {
				delete(l.Leases, inst)
				return netip.Addr{}, err
			}
			return a, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("%w: all %d addresses of %s are leased (delete instances you no longer need, or start hypefs with a larger --subnet)", ErrExhausted, len(l.Leases), l.Subnet)
}

// release drops inst's lease; it reports whether there was one.
func (l *leases) release(inst string) (bool, error) {
	if _, ok := l.Leases[inst]; !ok {
		return false, nil
	}
	delete(l.Leases, inst)
	return true, l.save()
}
