//go:build linux

package main

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Linux input event codes (include/uapi/linux/input-event-codes.h).
const (
	evKey    = 1
	keyPower = 116
)

// inputEventSize is sizeof(struct input_event) on 64-bit kernels:
// struct timeval (16), type (2), code (2), value (4).
const inputEventSize = 24

// watchPowerButton returns a channel that receives when any input device
// reports KEY_POWER pressed. On microvm, QMP system_powerdown raises an
// ACPI GED event that the button module turns into KEY_POWER, and evdev
// exposes it as /dev/input/event*. The device node shows up a moment
// after the module loads; a press before it is open is lost, so this
// waits (at most 2 s) until one is open before returning: the host may
// press the button as soon as it reads "guest ready". Later devices are
// picked up by a rescan for a few seconds.
func watchPowerButton() <-chan struct{} {
	ch := make(chan struct{}, 1)
	seen := map[string]bool{}
	scan := func() int {
		paths, _ := filepath.Glob("/dev/input/event*")
		for _, p := range paths {
			if seen[p] {
				continue
			}
			f, err := os.Open(p)
			if err != nil {
				continue
			}
			seen[p] = true
			go readPowerKey(f, ch)
		}
		return len(seen)
	}
	// Wait only where the kernel has an input device for a power key
	// (ACPI button, gpio-keys) whose node is still to appear; a machine
	// without one (vz) must not pay 2 s for nothing.
	for deadline := time.Now().Add(2 * time.Second); scan() == 0 && hasPowerKey() && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	go func() {
		for i := 0; i < 10; i++ {
			time.Sleep(time.Duration(i+1) * 100 * time.Millisecond)
			scan()
		}
	}()
	return ch
}

func readPowerKey(f *os.File, ch chan<- struct{}) {
	defer f.Close()
	buf := make([]byte, inputEventSize*16)
	for {
		n, err := f.Read(buf)
		if err != nil {
			return
		}
		for b := buf[:n]; len(b) >= inputEventSize; b = b[inputEventSize:] {
			if isPowerPress(b[:inputEventSize]) {
				select {
				case ch <- struct{}{}:
				default:
				}
			}
		}
	}
}

// isPowerPress reports whether one input_event is KEY_POWER going down.
func isPowerPress(ev []byte) bool {
	typ := binary.NativeEndian.Uint16(ev[16:])
	code := binary.NativeEndian.Uint16(ev[18:])
	value := int32(binary.NativeEndian.Uint32(ev[20:]))
	return typ == evKey && code == keyPower && value == 1
}

// powerOff ends the VM: it stops every process (TERM and HUP, then KILL
// after a 2 s grace period), syncs, unmounts, and asks the kernel to power off. Under
// QEMU that makes QEMU exit; a restart (hypefs.poweroff=restart) does the
// same when QEMU runs with -no-reboot and is the fallback when power-off
// returns.
func powerOff(cfg config, why string, r *reaper, pending <-chan string) {
	fmt.Printf("hypefs: powering off (%s)\n", why)
	unix.Sync()
	// SIGHUP too: an interactive shell ignores SIGTERM but, like a
	// program whose terminal went away, ends on a hangup. SIGCONT wakes
	// stopped jobs so they see both.
	unix.Kill(-1, unix.SIGTERM)
	unix.Kill(-1, unix.SIGHUP)
	unix.Kill(-1, unix.SIGCONT)
	deadline := time.Now().Add(2 * time.Second)
	for r.reapAll() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	unix.Kill(-1, unix.SIGKILL)
	for r.reapAll() && time.Now().Before(deadline.Add(time.Second)) {
		time.Sleep(10 * time.Millisecond)
	}
	if pending != nil {
		// The program ended with the rest: let its exit status line be
		// printed before the machine goes.
		select {
		case <-pending:
		case <-time.After(time.Second):
		}
	}
	// Drain the console, so the last lines reach the host.
	unix.IoctlSetInt(1, unix.TCSBRK, 1)
	unix.Sync()
	unmountAll()
	unix.Sync()
	if !cfg.restart {
		unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	}
	unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
	// Nothing else to do: PID 1 must not exit (that panics the kernel).
	for {
		time.Sleep(time.Hour)
	}
}

// hasPowerKey reports whether the kernel knows an input device that can
// send KEY_POWER (the ACPI power button, or gpio-keys on arm64 virt).
func hasPowerKey() bool {
	b, err := os.ReadFile("/proc/bus/input/devices")
	if err != nil {
		return false
	}
	s := string(b)
	return strings.Contains(s, "Power Button") || strings.Contains(s, "gpio-keys") || strings.Contains(s, "gpio_keys")
}
