package vz

import (
	"fmt"
	"strconv"
	"strings"

	"hypefs/shim/engine"
)

// needMacOS returns an error wrapping engine.ErrUnsupported when the macOS
// product version (sysctl kern.osproductversion, "14.2.1") is older than
// major.
func needMacOS(version string, major int, what string) error {
	first, _, _ := strings.Cut(strings.TrimSpace(version), ".")
	n, err := strconv.Atoi(first)
	if err != nil {
		return fmt.Errorf("macOS version %q: not a version number", version)
	}
	if n < major {
		return fmt.Errorf("%s needs macOS %d or later (this is %s): %w", what, major, version, engine.ErrUnsupported)
	}
	return nil
}
