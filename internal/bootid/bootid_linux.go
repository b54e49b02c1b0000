// Package bootid names the current boot of the host. A pid recorded under
// another boot id belongs to a process that no longer exists, whatever
// process now has that number; the daemon and the shim both stamp and
// compare it, so it lives below both.
package bootid

import (
	"os"
	"strings"
)

// Current identifies the current boot of the host, or "" when it cannot
// be read.
func Current() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
