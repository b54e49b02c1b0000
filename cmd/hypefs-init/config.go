//go:build linux

package main

import (
	"os"
	"strings"
)

// config is what the kernel command line asks of the init. Parameters
// with a dot are not passed to init by the kernel (it takes them for
// module parameters), so the init reads /proc/cmdline itself.
//
//	hypefs.run=shell|poweroff|image  what to run after "guest ready" (default shell; image: see image.go)
//	hypefs.poweroff=off|restart  how to end the VM (default off)
//	hypefs.modules=0           do not load the initramfs's modules
//	hypefs.hostname=NAME       the guest's hostname (default hypefs)
//	hypefs.debug=1             print boot step timings on the console
type config struct {
	run      string
	restart  bool // end the VM with a reboot (QEMU -no-reboot exits) instead of power-off
	modules  bool
	hostname string
	debug    bool
}

func readCmdline() string {
	b, _ := os.ReadFile("/proc/cmdline")
	return string(b)
}

// parseCmdline reads the hypefs.* parameters from a kernel command line;
// unknown values fall back to the defaults.
func parseCmdline(cmdline string) config {
	c := config{run: "shell", modules: true, hostname: "hypefs"}
	for _, f := range strings.Fields(cmdline) {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "hypefs.run":
			if v != "" {
				c.run = v
			}
		case "hypefs.poweroff":
			c.restart = v == "restart"
		case "hypefs.modules":
			c.modules = v != "0"
		case "hypefs.hostname":
			if v != "" {
				c.hostname = v
			}
		case "hypefs.debug":
			c.debug = v != "0"
		}
	}
	return c
}
