// Package deptest holds the test that keeps each binary within its
// layers: the shim (cmd/hypefs-shim) links no filesystem or backend
// package, the daemon (cmd/hypefs) links no part of the shim's server
// (only the contract, shim/api, and its client), and the guest's init
// (cmd/hypefs-init) links neither. It has no code of its own.
package deptest
