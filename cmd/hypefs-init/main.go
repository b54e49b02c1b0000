//go:build linux

// Command hypefs-init is PID 1 of every hypefs guest. It lives in the
// initramfs that backend/guest builds. It mounts the pseudo
// filesystems, loads the guest's kernel modules, prints
// "hypefs: guest ready" on the console (hosts wait for that line), runs
// the guest's program, reaps orphans, and powers the VM off when the
// program exits or the ACPI power button is pressed.
//
// It reads its settings from hypefs.* parameters on the kernel command
// line; see config.go and docs/guest.md.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"time"

	"golang.org/x/sys/unix"
)

// readyLine is what hosts wait for on the console; keep it stable.
const readyLine = "hypefs: guest ready"

func main() {
	start := time.Now()
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "hypefs-init: not PID 1; this program is the init of a hypefs guest")
		os.Exit(2)
	}
	mountErr := mountBase()
	cfg := parseCmdline(readCmdline())
	logf := func(format string, args ...any) {
		if cfg.debug {
			fmt.Printf("hypefs: %.3fs "+format+"\n", append([]any{time.Since(start).Seconds()}, args...)...)
		}
	}
	if mountErr != nil {
		fmt.Printf("hypefs: %v\n", mountErr)
	}
	logf("mounted")

	// Ctrl-Alt-Del and signals sent to PID 1 mean "shut down".
	unix.Reboot(unix.LINUX_REBOOT_CMD_CAD_OFF)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, unix.SIGINT, unix.SIGTERM, unix.SIGPWR)
	// Before the reaper starts: it would reap busybox under exec's Wait.
	if err := installApplets(); err != nil {
		fmt.Printf("hypefs: %v\n", err)
	}
	r := startReaper()

	if cfg.modules {
		for _, err := range loadModules(modulesDir) {
			fmt.Printf("hypefs: %v\n", err)
		}
		logf("modules loaded")
	}
	unix.Sethostname([]byte(cfg.hostname))
	if err := setupNetwork(readCmdline()); err != nil {
		fmt.Printf("hypefs: network: %v\n", err)
	}
	logf("network configured")
	power := watchPowerButton()

	fmt.Println(readyLine)
	logf("ready")

	var why string
	var pending <-chan string // the program's end, still to be reported
	mainExit, err := runMain(cfg, r)
	if err != nil {
		why = err.Error()
		if cfg.run == "image" {
			// The program never ran: say so with docker's code for it.
			fmt.Printf(exitLine+"\n", 125)
		}
	} else {
		select {
		case st := <-mainExit:
			why = st
		case <-power:
			why, pending = "power button", mainExit
		case s := <-sigs:
			why, pending = "signal "+s.String(), mainExit
		}
	}
	powerOff(cfg, why, r, pending)
}
