// Package vz is the macOS engine: it hosts the VM inside the shim process
// with Apple's Virtualization.framework through github.com/Code-Hex/vz/v3.
//
// Linux cannot compile the framework binding (cgo and the macOS SDK), so
// the package is split in two. Everything that decides something — how a
// spec becomes a VM configuration, which states end a VM and how, the
// console plumbing, vsock dialing — lives in files that build on
// every OS and talks to the framework only through the small hypervisor
// and vmHandle interfaces (hypervisor.go). The darwin files are a thin
// adapter from those interfaces to vz; the tests drive the logic through a
// fake on Linux.
//
// Snapshots and restores are refused (engine.ErrUnsupported): the
// framework restores Linux guests unreliably and its saved state opens
// only on the Mac that wrote it. See docs/macos.md.
package vz
