package bootid

import (
	"os"
	"runtime"
	"testing"
)

func TestCurrent(t *testing.T) {
	if runtime.GOOS == "linux" {
		if _, err := os.Stat("/proc/sys/kernel/random/boot_id"); err != nil {
			t.Skip("no /proc/sys/kernel/random/boot_id here")
		}
	}
	id := Current()
	if len(id) < 32 || id != Current() {
		t.Fatalf("boot id %q (then %q)", id, Current())
	}
}
