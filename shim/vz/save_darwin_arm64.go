//go:build darwin && arm64

package vz

import (
	"fmt"

	"github.com/Code-Hex/vz/v3"

	"hypefs/shim/engine"
)

// saveRestoreSupported checks the macOS version first (the framework's
// own check needs macOS 14 to exist) and then asks the framework whether
// this configuration can be saved.
func saveRestoreSupported(conf *vz.VirtualMachineConfiguration) error {
	if err := saveRestoreOS(); err != nil {
		return err
	}
	ok, err := conf.ValidateSaveRestoreSupport()
	if err != nil {
		return fmt.Errorf("the framework cannot save this vm: %v: %w", err, engine.ErrUnsupported)
	}
	if !ok {
		return fmt.Errorf("the framework cannot save this vm's configuration: %w", engine.ErrUnsupported)
	}
	return nil
}

func saveState(vm *vz.VirtualMachine, path string) error { return vm.SaveMachineStateToPath(path) }

func restoreState(vm *vz.VirtualMachine, path string) error {
	return vm.RestoreMachineStateFromURL(path)
}
