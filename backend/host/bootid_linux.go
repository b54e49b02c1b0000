package host

import (
	"os"
	"strings"
)

// BootID identifies the current boot of the host. A pid recorded under
// another boot id belongs to a process that no longer exists, whatever
// process now has that number.
func BootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
