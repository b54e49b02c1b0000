//go:build linux

package main

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// consoleDev is the console's own device (e.g. /dev/hvc0) once
// attachConsole found it, "" when the kernel gave the init a console
// itself: the shell and the program get it as their controlling tty.
var consoleDev string

// attachConsole makes fds 0-2 the console when the init started without
// one. Virtualization.framework has no UART: the console is hvc0 on a
// virtio console, and virtio_console is a module, so when the kernel
// starts the init /dev/console cannot be opened and Go opens fds 0-2 on
// /dev/null. Once the modules are loaded and the console named by the
// last console= has registered, attachConsole (waiting up to wait for
// that) opens /dev/console on fds 0-2, so that everything the init prints
// from then on (ready, exit status) reaches the host.
//
// /dev/console, not /dev/hvc0: when the shell, a session leader with
// hvc0 as its controlling tty, exits, the kernel hangs the tty up, and
// every file opened on it then fails with EIO; files opened through
// /dev/console are spared, as the kernel's own initial console is.
func attachConsole(cmdline string, wait time.Duration) error {
	if isTerminal(1) {
		return nil // the kernel's /dev/console was there from the start
	}
	name := consoleName(cmdline)
	var f *os.File
	var err error
	for deadline := time.Now().Add(wait); ; time.Sleep(10 * time.Millisecond) {
		if f, err = openConsole(name); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no console within %v: %w", wait, err)
		}
	}
	defer f.Close()
	for fd := 0; fd <= 2; fd++ {
		if err := unix.Dup3(int(f.Fd()), fd, 0); err != nil {
			return fmt.Errorf("console on fd %d: %w", fd, err)
		}
	}
	if name != "" {
		consoleDev = "/dev/" + name
	}
	return nil
}

// openConsole opens /dev/console once the console named name (if any)
// is the active one and its device node exists.
func openConsole(name string) (*os.File, error) {
	if name != "" {
		b, _ := os.ReadFile("/sys/class/tty/console/active")
		if !slices.Contains(strings.Fields(string(b)), name) {
			return nil, fmt.Errorf("console %s has not registered", name)
		}
		if _, err := os.Stat("/dev/" + name); err != nil {
			return nil, err
		}
	}
	// O_NOCTTY: the console must not become PID 1's controlling
	// terminal, or the shell could not make it its own.
	return os.OpenFile("/dev/console", os.O_RDWR|unix.O_NOCTTY, 0)
}

// consoleName is the device named by the last console= on the command
// line (the kernel makes that one /dev/console), without its options:
// "console=ttyS0,115200n8" is ttyS0.
func consoleName(cmdline string) string {
	name := ""
	for _, f := range strings.Fields(cmdline) {
		if v, ok := strings.CutPrefix(f, "console="); ok {
			v, _, _ = strings.Cut(v, ",")
			if v != "" && !strings.Contains(v, "/") {
				name = v
			}
		}
	}
	return name
}

func isTerminal(fd int) bool {
	_, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	return err == nil
}

// consoleTTY returns the console device for the shell and the program:
// the one attachConsole attached, else the device behind /dev/console
// (the last console= on the command line, e.g. /dev/ttyS0), or
// /dev/console if unknown.
func consoleTTY() string {
	if consoleDev != "" {
		return consoleDev
	}
	b, err := os.ReadFile("/sys/class/tty/console/active")
	if err != nil {
		return "/dev/console"
	}
	fs := strings.Fields(string(b))
	if len(fs) == 0 {
		return "/dev/console"
	}
	dev := "/dev/" + fs[len(fs)-1]
	if _, err := os.Stat(dev); err != nil {
		return "/dev/console"
	}
	return dev
}
