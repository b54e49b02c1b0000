// Package layout owns where hypefs keeps things on disk. Every file an
// instance has is named here, and docs/layout.md describes each one.
//
//	DATA/instances/NAME/           survives reboots
//	    state.json                 the daemon's record: config, state, error, last exit
//	    console.log                the serial console, appended to by the shim
//	    vmm.log                    the hypervisor's own output
//	    shim.log                   the shim's log (JSON lines)
//	    exit.json                  how the VM last ended, written by the shim
//	    machine-id                 the VM's machine identifier (vz)
//	    disk.ext4, run-config.img, image.json   image instances (backend/image)
//	DATA/images/                   the OCI image store (backend/image)
//	RUN/NAME/ (or RUN/h/HASH/)     gone after a reboot
//	    shim.json                  the shim's record: pids, boot id, start time
//	    shim-config.json           what the daemon asked the shim to run
//	    api.sock                   the shim's HTTP API
//	    console.sock               live console
//	    vsock.sock                 vsock proxy (CONNECT port)
//	    e/                         the engine's private sockets
package layout

import (
	"crypto/sha256"
	"encoding/hex"
	"path/filepath"
	"regexp"
	"runtime"
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

// SunPathMax is the size of sockaddr_un.sun_path, NUL included.
func SunPathMax() int {
	if runtime.GOOS == "darwin" {
		return 104
	}
	return 108
}

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

// InstancesDir holds one directory per instance.
func (l Layout) InstancesDir() string { return filepath.Join(l.Data, "instances") }

// InstanceDir is an instance's persistent directory.
func (l Layout) InstanceDir(name string) string { return filepath.Join(l.InstancesDir(), name) }

// InstanceFile is a file in an instance's persistent directory.
func (l Layout) InstanceFile(name, file string) string {
	return filepath.Join(l.InstanceDir(name), file)
}

// RunDir is an instance's runtime directory. Socket paths must fit
// sun_path: when RUN/NAME/LongestSock would not, the directory is named
// by a hash of the name instead (never a truncated name).
func (l Layout) RunDir(name string) string {
	d := filepath.Join(l.Run, name)
	if len(filepath.Join(d, LongestSock)) < SunPathMax() {
		return d
	}
	sum := sha256.Sum256([]byte(name))
	return filepath.Join(l.Run, "h", hex.EncodeToString(sum[:])[:24])
}

// RunFile is a file in an instance's runtime directory.
func (l Layout) RunFile(name, file string) string { return filepath.Join(l.RunDir(name), file) }

// SocketsFit reports whether the run root leaves room for socket paths at
// all, even hashed; a run root longer than that cannot work.
func (l Layout) SocketsFit() bool {
	return len(filepath.Join(l.Run, "h", "123456789012345678901234", LongestSock)) < SunPathMax()
}
