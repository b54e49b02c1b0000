//go:build linux

// Command hypefs-init is PID 1 of every hypefs guest. It lives in the
// initramfs that backend/guest builds. It mounts the pseudo
// filesystems, loads the guest's kernel modules, prints
// "hypefs: guest ready" on the console (hosts wait for that line), runs
// the guest's program, reaps orphans, and powers the VM off when the
// program exits or the ACPI power button is pressed. On a machine without
// a UART (Virtualization.framework) it attaches fds 0-2 to the console
// once the modules that make it are loaded, and it configures a NIC the
// host gave no address by DHCP (udhcpc, with the init as its script).
//
// It reads its settings from hypefs.* parameters on the kernel command
// line; see config.go and docs/guest.md.
package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/signal"
	"time"

	"golang.org/x/sys/unix"
)

// readyLine is what hosts wait for on the console; keep it stable.
const readyLine = "hypefs: guest ready"

func main() {
	start := time.Now()
	if isDHCPEvent(os.Args) {
		os.Exit(dhcpMain(os.Args))
	}
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "hypefs-init: not PID 1; this program is the init of a hypefs guest")
		os.Exit(2)
	}
	// What the init says before its console exists (see attachConsole)
	// waits here and follows once it does.
	var early bytes.Buffer
	var out io.Writer = &early
	say := func(format string, args ...any) { fmt.Fprintf(out, "hypefs: "+format+"\n", args...) }
	mountErr := mountBase()
	cmdline := readCmdline()
	cfg := parseCmdline(cmdline)
	logf := func(format string, args ...any) {
		if cfg.debug {
			say("%.3fs "+format, append([]any{time.Since(start).Seconds()}, args...)...)
		}
	}
	if mountErr != nil {
		say("%v", mountErr)
	}
	logf("mounted")

	// Ctrl-Alt-Del and signals sent to PID 1 mean "shut down".
	unix.Reboot(unix.LINUX_REBOOT_CMD_CAD_OFF)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, unix.SIGINT, unix.SIGTERM, unix.SIGPWR)
	// Before the reaper starts: it would reap busybox under exec's Wait.
	if err := installApplets(); err != nil {
		say("%v", err)
	}
	r := startReaper()

	if cfg.modules {
		for _, err := range loadModules(modulesDir) {
			say("%v", err)
		}
		logf("modules loaded")
	}
	consoleErr := attachConsole(cmdline, 3*time.Second)
	early.WriteTo(os.Stdout)
	out = os.Stdout
	if consoleErr != nil {
		say("%v", consoleErr)
	}
	unix.Sethostname([]byte(cfg.hostname))
	if err := setupNetwork(cmdline, cfg.hostname); err != nil {
		say("network: %v", err)
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
