package vz

import (
	"net"
	"os"
)

// hypervisor is the part of Virtualization.framework the engine needs
// before a VM exists. The darwin adapter implements it with vz; tests use
// a fake.
type hypervisor interface {
	// supported says whether VMs can run here at all (Apple silicon only).
	supported() error
	// limits reports the framework's CPU and memory bounds.
	limits() limits
	// newMachineID creates a fresh generic machine identifier; it wraps
	// engine.ErrUnsupported where the macOS version has none (before 13).
	newMachineID() ([]byte, error)
	// checkMachineID reports whether the framework accepts id as a generic
	// machine identifier's data representation: it answers nil for a
	// damaged one, which must never reach a configuration.
	checkMachineID(id []byte) error
	// newVM builds and validates a VM for cfg. The guest reads its console
	// input from con.guestIn and writes its output to con.guestOut.
	newVM(cfg Config, con consoleFiles) (vmHandle, error)
}

// vmHandle is one framework VM. Every call blocks until the framework's
// completion handler has run.
type vmHandle interface {
	Start() error
	Pause() error
	Resume() error
	// RequestStop presses the virtual power button.
	RequestStop() error
	Stop() error
	// NextState returns the next state change. The framework has one shared
	// notification channel per VM, so exactly one goroutine (the
	// machine's watcher) calls this. It returns false once quit is closed.
	NextState(quit <-chan struct{}) (State, bool)
	// ConnectVsock opens a connection to a vsock port of the guest. With
	// an error the connection is nil (a nil interface, never a nil
	// pointer inside one).
	ConnectVsock(port uint32) (net.Conn, error)
}

// limits are the framework's bounds for a VM configuration.
type limits struct {
	MinCPUs, MaxCPUs     uint
	MinMemory, MaxMemory uint64 // bytes
}

// consoleFiles are the guest's ends of the console pipes. Virtualization
// framework does not duplicate these descriptors (vz v3.7.1 passes the raw
// fd), so the machine keeps the *os.File values referenced for the VM's
// whole life: a collected *os.File would close the fd under the guest.
type consoleFiles struct {
	guestIn  *os.File // the guest reads its input here
	guestOut *os.File // the guest writes its output here
}
