package main

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"

	"hypefs/backend/instance"
	"hypefs/backend/layout"
	"hypefs/backend/network"
)

// netFlags are the mount command's networking flags.
type netFlags struct {
	mode, bridge, subnet string
}

func addNetworkFlags(fl *flag.FlagSet) *netFlags {
	f := &netFlags{}
	fl.StringVar(&f.mode, "network", env("HYPEFS_NETWORK", "auto"), `guest networking: "auto" (on where hypefs has CAP_NET_ADMIN and /dev/net/tun), "on", or "off" (env HYPEFS_NETWORK)`)
	fl.StringVar(&f.bridge, "bridge", network.DefaultBridge, "the host bridge guests are attached to")
	fl.StringVar(&f.subnet, "subnet", network.DefaultSubnet, "the guests' IPv4 subnet; the bridge takes its first address")
	return f
}

// open makes the networking part and says what "network" means in this
// daemon's configs.
func (f *netFlags) open(lay layout.Layout, log *slog.Logger) (*network.Network, instance.NetworkPolicy, error) {
	var none instance.NetworkPolicy
	subnet, err := network.ParseSubnet(f.subnet)
	if err != nil {
		return nil, none, fmt.Errorf("--subnet: %w", err)
	}
	opts := network.Options{Dir: lay.NetworkDir(), Bridge: f.bridge, Subnet: subnet, Log: log}
	switch f.mode {
	case "off":
		opts.Disabled = "hypefs was started with --network off"
	case "auto", "on":
		err := network.Available()
		if err == nil {
			err = lockNetns()
		}
		if err != nil {
			if f.mode == "on" {
				return nil, none, fmt.Errorf("--network on: %w", err)
			}
			opts.Disabled = err.Error()
			log.Warn("guest networking is off", "reason", err)
		}
	default:
		return nil, none, fmt.Errorf("--network must be auto, on or off, not %q", f.mode)
	}
	if opts.Disabled == "" {
		opts.DNS = network.HostDNS()
	}
	n, err := network.New(opts)
	if err != nil {
		return nil, none, err
	}
	return n, instance.NetworkPolicy{On: n.Enabled(), Off: opts.Disabled}, nil
}

// netnsLock is held for the daemon's life once it manages networking:
// kept reachable here so that the file (and its flock) is never closed.
var netnsLock *os.File

// lockNetns makes sure only one daemon manages guest networking in this
// network namespace: the bridge, the TAPs it reconciles and the nftables
// table are per namespace, and two daemons would remove each other's.
func lockNetns() error {
	var st syscall.Stat_t
	if err := syscall.Stat("/proc/self/ns/net", &st); err != nil {
		return nil // no namespace identity to lock on; nothing to share either
	}
	path := layout.NetnsLock(st.Ino)
	os.MkdirAll(filepath.Dir(path), 0o755)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("lock guest networking (%s): %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return fmt.Errorf("another hypefs daemon manages guest networking in this network namespace (hint: --network off, or run this one in its own namespace)")
	}
	netnsLock = f
	return nil
}
