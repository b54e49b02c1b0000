//go:build darwin && amd64

package vz

import (
	"fmt"

	"github.com/Code-Hex/vz/v3"

	"hypefs/shim/engine"
)

// Virtualization.framework saves and restores VMs on Apple silicon only.
var errNoSaveRestore = fmt.Errorf("saving and restoring vms needs an Apple silicon Mac with macOS 14: %w", engine.ErrUnsupported)

func saveRestoreSupported(*vz.VirtualMachineConfiguration) error { return errNoSaveRestore }
func saveState(*vz.VirtualMachine, string) error                 { return errNoSaveRestore }
func restoreState(*vz.VirtualMachine, string) error              { return errNoSaveRestore }
