package vz

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"

	"hypefs/shim/engine"
)

// Config is the VM configuration the adapter builds with vz, derived from
// an engine.Spec.
type Config struct {
	Kernel      string
	Initrd      string
	Cmdline     string
	CPUs        uint
	MemoryBytes uint64
	Disks       []DiskConfig
	NICs        []NICConfig
	// Entropy, Balloon and Vsock add a virtio-rng device, a traditional
	// memory balloon and the framework's virtio socket device.
	Entropy bool
	Balloon bool
	Vsock   bool
	// MachineID is the generic machine identifier's data representation;
	// nil only where the framework has none (macOS 12).
	MachineID []byte
}

// DiskConfig is one virtio-blk disk over a raw image file.
type DiskConfig struct {
	Path     string
	ReadOnly bool
	// Caching is always "cached": the framework's automatic mode corrupts
	// Linux guests' filesystems (UTM issue 4840).
	Caching string
}

// NICConfig is one virtio-net device on the framework's NAT.
type NICConfig struct {
	MAC string
}

const mib = 1 << 20

// configFromSpec turns spec into a Config and refuses, with a sentence,
// what vz cannot do. It does not touch the machine identifier.
func configFromSpec(spec engine.Spec, lim limits) (Config, error) {
	c := Config{
		Kernel:      spec.Kernel,
		Initrd:      spec.Initramfs,
		Cmdline:     HVCCmdline(spec.Cmdline),
		Entropy:     true,
		Balloon:     true,
		Vsock:       true,
		MemoryBytes: uint64(spec.MemoryMiB) * mib,
	}
	switch spec.Accel {
	case "", "hvf":
	default:
		return Config{}, fmt.Errorf("accel %q is not available with vz (it always uses hvf)", spec.Accel)
	}
	if err := checkKernel(spec.Kernel); err != nil {
		return Config{}, err
	}
	if spec.Initramfs != "" {
		if _, err := os.Stat(spec.Initramfs); err != nil {
			return Config{}, fmt.Errorf("initramfs: %w", err)
		}
	}
	if spec.CPUs < 1 {
		return Config{}, fmt.Errorf("cpus %d: at least 1 is needed", spec.CPUs)
	}
	c.CPUs = uint(spec.CPUs)
	if c.CPUs < lim.MinCPUs || (lim.MaxCPUs > 0 && c.CPUs > lim.MaxCPUs) {
		return Config{}, fmt.Errorf("cpus %d: outside this Mac's range %d-%d", spec.CPUs, lim.MinCPUs, lim.MaxCPUs)
	}
	if spec.MemoryMiB < 1 || c.MemoryBytes < lim.MinMemory || (lim.MaxMemory > 0 && c.MemoryBytes > lim.MaxMemory) {
		return Config{}, fmt.Errorf("memory %d MiB: outside this Mac's range %d-%d MiB",
			spec.MemoryMiB, lim.MinMemory/mib, lim.MaxMemory/mib)
	}
	for i, d := range spec.Disks {
		if err := checkDisk(d.Path); err != nil {
			return Config{}, fmt.Errorf("disk %d: %w", i, err)
		}
		c.Disks = append(c.Disks, DiskConfig{Path: d.Path, ReadOnly: d.ReadOnly, Caching: "cached"})
	}
	for i, n := range spec.NICs {
		if n.Tap != "" {
			return Config{}, fmt.Errorf("nic %d: tap device %q: %w: vz attaches NICs to its NAT only",
				i, n.Tap, engine.ErrUnsupported)
		}
		mac, err := stableMAC(n.MAC, spec.Name, i)
		if err != nil {
			return Config{}, fmt.Errorf("nic %d: %w", i, err)
		}
		c.NICs = append(c.NICs, NICConfig{MAC: mac})
	}
	return c, nil
}

// HVCCmdline puts the console on hvc0, the only console a vz guest has
// (there is no UART: a console=ttyAMA0 from the generic arm64 command line
// would swallow every byte the guest prints). Other console= arguments
// are dropped; the last console= names /dev/console.
func HVCCmdline(cmdline string) string {
	var out []string
	for _, f := range strings.Fields(cmdline) {
		if !strings.HasPrefix(f, "console=") {
			out = append(out, f)
		}
	}
	return strings.Join(append(out, "console=hvc0"), " ")
}

// compressedKernels are the magic numbers of kernels vz cannot boot: the
// framework hangs on anything but a raw arm64 Image.
var compressedKernels = []struct {
	off   int
	magic string
	name  string
}{
	{0, "\x1f\x8b", "gzip"},
	{0, "\xfd7zXZ\x00", "xz"},
	{0, "\x28\xb5\x2f\xfd", "zstd"},
	{0, "BZh", "bzip2"},
	{0, "\x04\x22\x4d\x18", "lz4"},
	{0, "\x02\x21\x4c\x18", "lz4 legacy"},
	{0, "\x5d\x00\x00", "lzma"},
	{4, "zimg", "EFI zboot"},
}

// arm64ImageMagic is at offset 56 of every arm64 Image (Linux's
// Documentation/arch/arm64/booting.rst).
const arm64ImageMagic = "ARM\x64"

// checkKernel refuses compressed and non-arm64 kernels by their header.
func checkKernel(path string) error {
	if path == "" {
		return errors.New("kernel: no path given")
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("kernel: %w", err)
	}
	defer f.Close()
	head := make([]byte, 64)
	n, err := io.ReadFull(f, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("kernel %s: %w", path, err)
	}
	head = head[:n]
	for _, c := range compressedKernels {
		if len(head) >= c.off+len(c.magic) && string(head[c.off:c.off+len(c.magic)]) == c.magic {
			return fmt.Errorf("kernel %s is %s-compressed: vz boots only an uncompressed arm64 Image (decompress it first)", path, c.name)
		}
	}
	if len(head) < 60 || string(head[56:60]) != arm64ImageMagic {
		return fmt.Errorf("kernel %s is not an arm64 Image (no ARM\\x64 magic at offset 56)", path)
	}
	return nil
}

// checkDisk refuses missing and qcow2 disks: vz reads raw images only.
func checkDisk(path string) error {
	if !filepath.IsAbs(path) {
		return fmt.Errorf("path %q is not absolute", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	head := make([]byte, 4)
	if n, _ := io.ReadFull(f, head); n == 4 && bytes.Equal(head, []byte("QFI\xfb")) {
		return fmt.Errorf("%s is a qcow2 image: vz needs a raw one", path)
	}
	return nil
}

// stableMAC validates the configured MAC, or derives one from the
// instance name and NIC index when none is given: the guest's DHCP lease on
// the NAT follows the MAC, so it must not change across boots.
func stableMAC(mac, name string, index int) (string, error) {
	if mac == "" {
		sum := sha256.Sum256(fmt.Appendf(nil, "%s/%d", name, index))
		return net.HardwareAddr{0x52, 0x54, 0x00, sum[0], sum[1], sum[2]}.String(), nil
	}
	hw, err := net.ParseMAC(mac)
	if err != nil {
		return "", fmt.Errorf("mac %q: %w", mac, err)
	}
	if len(hw) != 6 {
		return "", fmt.Errorf("mac %q: not a 6-byte ethernet address", mac)
	}
	if hw[0]&1 != 0 {
		return "", fmt.Errorf("mac %q: a multicast address cannot name a NIC", mac)
	}
	return hw.String(), nil
}
