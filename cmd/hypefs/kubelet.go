package main

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// kubelet runs hypefs-kubelet, the Kubernetes node (a separate binary, so
// that the daemon carries none of the Kubernetes client), found next to
// this binary, in this process's place.
func kubelet(args []string) {
	bin := filepath.Join(selfDir(), "hypefs-kubelet")
	if _, err := os.Stat(bin); err != nil {
		fatal(fmt.Errorf("hypefs-kubelet is not next to hypefs in %s (hint: \"make build\" builds it into bin/)", selfDir()))
	}
	err := syscall.Exec(bin, append([]string{bin}, args...), os.Environ())
	fatal(fmt.Errorf("run %s: %w", bin, err))
}
