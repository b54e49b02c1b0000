// Package layout owns where hypefs keeps things on disk: every file and
// directory name the daemon and its backend parts use is named here, and
// docs/layout.md describes each one. (The shim is handed its paths in its
// config; only the engine names what it makes inside its own e/.)
//
//	DATA/instances/NAME/           survives reboots
//	    state.json                 the daemon's record: config, state, error, last exit
//	    console.log                the serial console, appended to by the shim
//	    vmm.log                    the hypervisor's own output
//	    shim.log                   the shim's log (JSON lines)
//	    exit.json                  how the VM last ended, written by the shim
//	    machine-id                 the VM's machine identifier (vz)
//	    disk.ext4, run-config.img, image.json   image instances (backend/image)
//	DATA/instances/.NAME.deleted-N/   an instance being removed
//	DATA/images/                   the OCI image store (backend/image)
//	    refs.json, tmp/, sha256/HEX/{rootfs.erofs,config.json,image.json}
//	DATA/network/leases.json       guest addresses (backend/network)
//	DATA/lock                      held (flock) by the one daemon that uses DATA
//	RUN/i/NAME/ (or RUN/h/HASH/)   gone after a reboot
//	    shim.json                  the shim's record: pids, boot id, start time
//	    shim-config.json           what the daemon asked the shim to run
//	    api.sock                   the shim's HTTP API
//	    console.sock               live console
//	    vsock.sock                 vsock proxy (CONNECT port)
//	    e/                         the engine's private sockets
//	KERNELS/VERSION/               a guest kernel: vmlinux (Image on arm64), arch,
//	                               modules/, initramfs/ (backend/guest)
//	KERNELS/busybox-ARCH           the guest's static busybox
package layout

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"hypefs/internal/sock"
)

// Files of an instance's data directory.
const (
	StateFile  = "state.json"
	ConsoleLog = "console.log"
	VMMLog     = "vmm.log"
	ShimLog    = "shim.log"
	ExitFile   = "exit.json"
	MachineID  = "machine-id"
)

// Who may read what hypefs keeps on disk: nobody but its owner (root).
// Every directory under the data and run roots, the roots included, is
// PrivateDir and every file PrivateFile (sockets too): state files, run
// configs and console logs hold environments, keys and output that other
// local users must not read except through the mount, whose own modes
// say who may. The guest kernel cache is the exception: it holds nothing
// secret, and the hypervisor, which runs as an unprivileged user, reads
// its kernel and initramfs (mode 0644; backend/guest).
const (
	PrivateDir  os.FileMode = 0o700
	PrivateFile os.FileMode = 0o600
)

// DataLock is the file under the data root that the daemon using it
// holds locked (flock), with its pid inside: a second daemon on the same
// data directory refuses to start.
const DataLock = "lock"

// Files of an instance's run directory.
const (
	ShimRecord  = "shim.json"
	ShimConfig  = "shim-config.json"
	APISock     = "api.sock"
	ConsoleSock = "console.sock"
	VsockSock   = "vsock.sock"
	EngineDir   = "e"
	// LongestSock is the longest socket name under a run directory,
	// including the engine's ("e/s.qmp", "e/s.con").
	LongestSock = ConsoleSock
)

// The image store (backend/image, docs/images.md): DATA/images.
const (
	ImagesDir   = "images"
	ImageRefs   = "refs.json"    // reference -> image digest, for ready images
	ImageTmp    = "tmp"          // pulls in progress; emptied at start
	ImageRootfs = "rootfs.erofs" // in sha256/HEX/: the read-only base disk
	ImageConfig = "config.json"  // in sha256/HEX/: the OCI config
	ImageMeta   = "image.json"   // in sha256/HEX/: digest, sizes, platform
	// ScratchPrefix starts the trees flattened in tmpfs (/dev/shm), with
	// the daemon's pid after it, so that a later daemon can tell a dead
	// one's leftovers.
	ScratchPrefix = "hypefs-tree-"
)

// Files the image part keeps in an instance's data directory.
const (
	WritableDisk  = "disk.ext4"      // the writable layer (overlayfs upper), kept across boots
	RunConfigDisk = "run-config.img" // argv, env, workdir, user; rewritten at every boot
	ImageInUse    = "image.json"     // the reference and digest the VM runs
)

// Guest networking (backend/network, docs/network.md): DATA/network.
const (
	NetworkDir = "network"
	Leases     = "leases.json" // the subnet, the last address, instance -> address
)

// The guest kernel cache (backend/guest, docs/guest.md): KERNELS/VERSION/
// holds one kernel, its modules and the initramfs images built from them.
const (
	KernelArch       = "arch"            // "amd64" or "arm64"
	KernelModules    = "modules"         // <name>.ko, flat
	KernelModOrder   = "modules/order"   // module names in load order, one a line
	KernelModMissing = "modules/missing" // modules the guest asks for that the package lacks
	KernelInitramfs  = "initramfs"       // built initramfs images: HASH.cpio.gz, and .ref files
)

// KernelImage is the uncompressed kernel in a version's directory.
func KernelImage(arch string) string {
	if arch == "arm64" {
		return "Image"
	}
	return "vmlinux"
}

// Busybox is the static busybox for a guest architecture, beside the
// kernels (KERNELS/busybox-ARCH).
func Busybox(arch string) string { return "busybox-" + arch }

// NetnsLock is the lock file that makes one daemon the manager of guest
// networking in the network namespace whose inode is ino.
func NetnsLock(ino uint64) string { return fmt.Sprintf("/run/lock/hypefs-net-%d.lock", ino) }

// SunPathMax is the size of sockaddr_un.sun_path, NUL included.
func SunPathMax() int { return sock.PathMax() }

// NamePattern is what an instance name may look like.
var NamePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,62}$`)

// ValidName reports whether name may name an instance (and so a directory).
func ValidName(name string) bool { return NamePattern.MatchString(name) }

// Layout is the three roots.
type Layout struct {
	Data    string // --data
	Run     string // --run
	Kernels string // --kernels
}

// ImagesDir is the image store's directory.
func (l Layout) ImagesDir() string { return filepath.Join(l.Data, ImagesDir) }

// NetworkDir is guest networking's directory.
func (l Layout) NetworkDir() string { return filepath.Join(l.Data, NetworkDir) }

// InstancesDir holds one directory per instance.
func (l Layout) InstancesDir() string { return filepath.Join(l.Data, "instances") }

// InstanceDir is an instance's persistent directory.
func (l Layout) InstanceDir(name string) string { return filepath.Join(l.InstancesDir(), name) }

// InstanceFile is a file in an instance's persistent directory.
func (l Layout) InstanceFile(name, file string) string {
	return filepath.Join(l.InstanceDir(name), file)
}

// Trash is where an instance directory goes while it is removed: renamed
// first, so that a crash mid-removal never leaves a directory that loads
// as a half instance.
func (l Layout) Trash(name string, n int64) string {
	return filepath.Join(l.InstancesDir(), fmt.Sprintf(".%s%s%d", name, trashMark, n))
}

const trashMark = ".deleted-"

// IsTrash reports whether an entry of the instances directory is an
// instance being removed.
func IsTrash(entry string) bool {
	return strings.HasPrefix(entry, ".") && strings.Contains(entry, trashMark)
}

// The run root's own namespaces: instances' run directories live under
// RunByName (RUN/i/NAME) or, when that path would not leave room for
// their sockets, under RunByHash (RUN/h/HASH); so no instance name can
// clash with what the daemon keeps in the run root itself (a 9P socket,
// say) or with the other namespace.
const (
	RunByName = "i"
	RunByHash = "h"
)

// MakeRoots makes the data and run roots, or makes existing ones
// private (PrivateDir): what hypefs keeps there is root's alone.
func (l Layout) MakeRoots() error {
	for _, d := range []string{l.Data, l.Run} {
		if err := os.MkdirAll(d, PrivateDir); err != nil {
			return fmt.Errorf("create %s: %w", d, err)
		}
		if err := os.Chmod(d, PrivateDir); err != nil {
			return fmt.Errorf("make %s private: %w", d, err)
		}
	}
	return nil
}

// Lock is the data directory's lock file (DataLock).
func (l Layout) Lock() string { return filepath.Join(l.Data, DataLock) }

// RunDir is an instance's runtime directory, RUN/i/NAME. Socket paths
// must fit sun_path: when RUN/i/NAME/LongestSock would not, the directory
// is RUN/h/ and a hash of the name (never a truncated name).
func (l Layout) RunDir(name string) string {
	d := filepath.Join(l.Run, RunByName, name)
	if len(filepath.Join(d, LongestSock)) < SunPathMax() {
		return d
	}
	sum := sha256.Sum256([]byte(name))
	return filepath.Join(l.Run, RunByHash, hex.EncodeToString(sum[:])[:24])
}

// RunFile is a file in an instance's runtime directory.
func (l Layout) RunFile(name, file string) string { return filepath.Join(l.RunDir(name), file) }

// SocketsFit reports whether the run root leaves room for socket paths at
// all, even hashed; a run root longer than that cannot work.
func (l Layout) SocketsFit() bool {
	return len(filepath.Join(l.Run, RunByHash, "123456789012345678901234", LongestSock)) < SunPathMax()
}
