// Package shim is the per-VM supervisor: it owns one hypervisor engine,
// the VM's serial console (appended to the instance's log and fanned out
// to live readers), the exit record, and an HTTP API on a Unix socket that
// follows Cloud Hypervisor's (package api).
//
// A shim is started detached by the daemon and outlives it. It writes its
// record (api.Config.RecordPath) atomically before it reports ready, and
// it is the only waiter on the hypervisor, so it alone can record how the
// VM ended (api.Config.ExitPath). When the VM has ended it writes the exit
// record, closes its sockets and exits.
//
// The shim never imports the filesystem or backend packages, and the
// daemon never links this package: what they share is package api.
package shim

// ReadyMarker is the console line with which hypefs-init says the guest is up.
const ReadyMarker = "hypefs: guest ready"
