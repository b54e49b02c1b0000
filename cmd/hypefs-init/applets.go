//go:build linux

package main

import (
	"fmt"
	"os"
	"os/exec"
)

// installApplets creates busybox's applet links when the initramfs has
// none: backend/guest can only list the applets by running busybox, which
// it cannot do for another arch's busybox.
func installApplets() error {
	if _, err := os.Lstat("/bin/sh"); err == nil {
		return nil
	}
	out, err := exec.Command("/bin/busybox", "--install", "-s").CombinedOutput()
	if err != nil {
		return fmt.Errorf("busybox --install: %w: %s", err, out)
	}
	return nil
}
