package network

import (
	"fmt"
	"net/netip"
	"sync"
)

// guestSubnet remembers the subnet of the address a guest last announced:
// where the hypervisor's NAT hands out addresses by DHCP (vz), that is the
// only way hypefs learns the NAT's subnet.
type guestSubnet struct {
	mu     sync.Mutex
	subnet netip.Prefix
	from   string // the instance that reported it
}

func (g *guestSubnet) set(inst string, addr netip.Prefix) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.subnet, g.from = addr.Masked(), inst
}

// hostFacts are /host's lines for a NAT that hypefs does not manage.
func (g *guestSubnet) hostFacts() []byte {
	g.mu.Lock()
	defer g.mu.Unlock()
	b := []byte("network on\nnat hypervisor (vz)\n")
	if !g.subnet.IsValid() {
		return append(b, "subnet unknown until a guest reports its DHCP lease\n"...)
	}
	return fmt.Appendf(b, "subnet %s (from the DHCP lease of %s)\n", g.subnet, g.from)
}
