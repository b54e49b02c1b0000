//go:build darwin

package vz

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// saveRestoreOS refuses save/restore before macOS 14, where the framework
// has no such API.
func saveRestoreOS() error {
	v, err := unix.Sysctl("kern.osproductversion")
	if err != nil {
		return fmt.Errorf("macOS version: %w", err)
	}
	return needMacOS(v, 14, "saving and restoring vms")
}
