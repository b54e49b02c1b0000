package guest

import (
	"fmt"
	"strings"
)

// guestModules are the modules the guest needs, roots of the dependency
// walk, in the order a human would load them. Debian builds all of these
// as modules; whichever a kernel has built in is skipped.
//
//   - virtio transports and devices: mmio (microvm finds its devices
//     through ACPI), pci, console (virtio-serial channels), blk, net, rng.
//   - ext4 (root disks) with crc32c: ext4 only soft-depends on crc32c,
//     which busybox's modprobe and our init do not follow, so it is named.
//   - overlay and erofs: image layers; 9p over virtio or fds: host shares.
//   - vsock over virtio, for a host channel where vhost-vsock exists.
//   - button and evdev: the ACPI power button (QMP system_powerdown)
//     arrives as KEY_POWER on /dev/input/event*, which the init acts on.
var guestModules = []string{
	"virtio_ring", "virtio", "virtio_mmio",
	"virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci",
	"virtio_console", "virtio_blk",
	"failover", "net_failover", "virtio_net",
	"crc32c_intel", "crc32c_generic", "jbd2", "mbcache", "crc16", "ext4",
	"overlay", "erofs",
	"netfs", "fscache", "9pnet", "9p", "9pnet_virtio", "9pnet_fd",
	"vsock", "vmw_vsock_virtio_transport_common", "vmw_vsock_virtio_transport",
	"virtio_rng",
	"button", "evdev",
}

// archModules are further roots for one architecture. On arm64, QEMU's
// "-M virt" booted without firmware describes its power button in the
// device tree as a gpio-keys key on the PL061 GPIO controller (the
// controller is built in, gpio_keys is a module); booted through ACPI it
// is the ACPI button, as on x86, which arm64 kernels have built in.
var archModules = map[string][]string{
	"arm64": {"gpio_keys"},
}

// rootsFor returns the modules wanted for arch: guestModules, then
// archModules[arch].
func rootsFor(arch string) []string {
	return append(append([]string(nil), guestModules...), archModules[arch]...)
}

// likelyDeps are dependencies of guestModules that are not roots
// themselves (erofs needs libcrc32c in 6.1). Naming them lets FetchDeb
// keep their bytes on its first pass over the package instead of
// streaming the 400 MB of modules a second time; a wrong list only costs
// that second pass.
var likelyDeps = []string{"libcrc32c"}

// loadOrder returns roots plus everything they depend on (depends=), each
// module after its dependencies and otherwise in the order first met.
// Roots that are neither in info nor built in are returned in missing
// (some are arch-specific, e.g. crc32c_intel). A dependency that is
// missing is an error: the package is inconsistent.
func loadOrder(roots []string, info map[string]modInfo, builtin map[string]bool) (order, missing []string, err error) {
	const (
		visiting = 1
		done     = 2
	)
	state := map[string]int{}
	var visit func(name string, chain []string) error
	visit = func(name string, chain []string) error {
		switch state[name] {
		case done:
			return nil
		case visiting:
			return fmt.Errorf("module dependency cycle: %s", strings.Join(append(chain, name), " -> "))
		}
		if builtin[name] {
			state[name] = done
			return nil
		}
		mi, ok := info[name]
		if !ok {
			return fmt.Errorf("module %s (needed by %s) not in package", name, chain[len(chain)-1])
		}
		state[name] = visiting
		for _, d := range mi.Depends {
			if err := visit(d, append(chain, name)); err != nil {
				return err
			}
		}
		state[name] = done
		order = append(order, name)
		return nil
	}
	for _, r := range roots {
		r = modName(r)
		if _, ok := info[r]; !ok && !builtin[r] {
			missing = append(missing, r)
			continue
		}
		if err := visit(r, nil); err != nil {
			return nil, nil, err
		}
	}
	return order, missing, nil
}
