// Package guest provides what a VM boots: the guest kernel, taken from
// Debian's linux-image package, and an initramfs holding hypefs-init, the
// kernel modules the guest needs and busybox. Everything is cached under
// the kernels directory, keyed by kernel version.
//
// Layout of the kernels directory (see docs/guest.md):
//
//	KERNELS/<version>/arch             "amd64" or "arm64"
//	KERNELS/<version>/vmlinux          PVH ELF kernel (Image on arm64)
//	KERNELS/<version>/modules/*.ko     the guest modules, flat
//	KERNELS/<version>/modules/order    their load order
//	KERNELS/<version>/initramfs/       built images, keyed by their inputs
//	KERNELS/.tmp-*                     work in progress, never "ready"
package guest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"hypefs/backend/layout"
)

// DefaultKernelsDir is where the kernel cache lives unless told otherwise.
const DefaultKernelsDir = "/var/lib/hypefs/kernels"

// Options says where the cache lives and where the pieces come from.
type Options struct {
	KernelsDir string // cache root (default /var/lib/hypefs/kernels)
	Init       string // path of the static hypefs-init binary (default: beside the running executable)
	// Busybox is the path of a static busybox. The default is the one
	// Fetch put into KernelsDir (busybox-<arch>), else /bin/busybox for
	// the host's own arch on Linux.
	Busybox string
	Arch    string // "amd64" (default) or "arm64"
	// KernelVersion picks a cached kernel; "" means the newest for Arch.
	KernelVersion string
}

// Boot is a ready kernel and initramfs.
type Boot struct {
	KernelVersion string // "6.1.0-56-amd64"
	Kernel        string // uncompressed kernel (PVH ELF vmlinux on amd64)
	Initramfs     string // compressed newc cpio
	// Cmdline holds the kernel arguments this kernel and init need
	// (console=..., panic=...). Callers append host-specific ones.
	Cmdline string
}

// ErrNoKernel means no kernel is cached; the error's text says how to get one.
var ErrNoKernel = errors.New("no guest kernel")

// Prepare returns the cached kernel and an initramfs built for opts,
// building the initramfs if the cached one is missing or stale.
func Prepare(ctx context.Context, opts Options) (*Boot, error) {
	opts = withDefaults(opts)
	version, err := pickKernel(opts.KernelsDir, opts.Arch, opts.KernelVersion)
	if err != nil {
		return nil, err
	}
	kdir := filepath.Join(opts.KernelsDir, version)
	initrd, err := ensureInitramfs(ctx, kdir, opts)
	if err != nil {
		return nil, err
	}
	return &Boot{
		KernelVersion: version,
		Kernel:        filepath.Join(kdir, layout.KernelImage(opts.Arch)),
		Initramfs:     initrd,
		Cmdline:       cmdline(opts.Arch),
	}, nil
}

// cmdline is what every boot of this kernel and init needs: the serial
// console, no reboot loop on panic (QEMU runs with -no-reboot, so panic=-1
// ends QEMU), and a quiet kernel so boot is not slowed by a serial log.
func cmdline(arch string) string {
	console := "ttyS0"
	if arch == "arm64" {
		console = "ttyAMA0"
	}
	return "console=" + console + " panic=-1 quiet"
}

func withDefaults(o Options) Options {
	if o.KernelsDir == "" {
		o.KernelsDir = DefaultKernelsDir
	}
	if o.Arch == "" {
		o.Arch = "amd64"
	}
	if o.Busybox == "" {
		o.Busybox = defaultBusybox(o.KernelsDir, o.Arch)
	}
	if o.Init == "" {
		if exe, err := os.Executable(); err == nil {
			o.Init = filepath.Join(filepath.Dir(exe), "hypefs-init")
		}
	}
	return o
}

// pickKernel returns the wanted version, or the newest cached for arch.
func pickKernel(dir, arch, want string) (string, error) {
	hint := fmt.Errorf("%w in %s (hint: run %q)", ErrNoKernel, dir, fetchHint(arch))
	ents, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("kernels directory: %w", err)
	}
	var best string
	for _, e := range ents {
		v := e.Name()
		if !e.IsDir() || strings.HasPrefix(v, ".") || (want != "" && v != want) {
			continue
		}
		a, err := os.ReadFile(filepath.Join(dir, v, layout.KernelArch))
		if err != nil || strings.TrimSpace(string(a)) != arch {
			continue
		}
		if best == "" || versionLess(best, v) {
			best = v
		}
	}
	if best == "" {
		if want != "" {
			return "", fmt.Errorf("%w %s for %s in %s (hint: run %q)", ErrNoKernel, want, arch, dir, fetchHint(arch))
		}
		return "", hint
	}
	return best, nil
}

// versionLess orders kernel versions: runs of digits compare as numbers,
// so 6.1.0-100 sorts after 6.1.0-56.
func versionLess(a, b string) bool {
	for a != "" && b != "" {
		da, ra := splitRun(a)
		db, rb := splitRun(b)
		if da != db {
			if isDigit(da[0]) && isDigit(db[0]) {
				na, nb := strings.TrimLeft(da, "0"), strings.TrimLeft(db, "0")
				if len(na) != len(nb) {
					return len(na) < len(nb)
				}
				if na != nb {
					return na < nb
				}
			} else {
				return da < db
			}
		}
		a, b = ra, rb
	}
	return len(a) < len(b)
}

// splitRun splits s after its leading run of digits or of non-digits.
func splitRun(s string) (string, string) {
	d := isDigit(s[0])
	i := 1
	for i < len(s) && isDigit(s[i]) == d {
		i++
	}
	return s[:i], s[i:]
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }
