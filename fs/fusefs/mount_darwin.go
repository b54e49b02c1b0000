package fusefs

import (
	"errors"
	"os"
	"syscall"
)

// mountHint is what to check when mounting fails.
const mountHint = "is macFUSE installed and its system extension allowed (System Settings, Privacy & Security, then a reboot)? see docs/macos.md"

// deadMount reports whether stat's error says the mount's daemon is gone:
// macFUSE answers ENXIO ("Device not configured"), not Linux's ENOTCONN,
// which older osxfuse releases used.
func deadMount(err error) bool {
	return errors.Is(err, syscall.ENXIO) || errors.Is(err, syscall.ENOTCONN) || errors.Is(err, syscall.ECONNABORTED)
}

// staleUnmounts clear a dead mount. macOS has no fusermount3: umount -f,
// then diskutil's forced unmount, which also works for a user who owns
// the mount.
func staleUnmounts(mnt string) [][]string {
	return [][]string{{"umount", "-f", mnt}, {"diskutil", "unmount", "force", mnt}}
}

func forceUnmounts(mnt string) [][]string { return staleUnmounts(mnt) }

func clearHint(mnt string) string {
	return "umount -f " + mnt + ", or diskutil unmount force " + mnt
}

// hypefsType: macOS has no mountinfo to tell a live hypefs by; a live
// mount there is left alone (the new mount then fails with macFUSE's own
// error).
const hypefsType = ""

// topFuseMount reports a dead mount on path: one whose stat fails the way
// a mount whose daemon is gone does.
func topFuseMount(path string) (string, bool) {
	_, err := os.Stat(path)
	return "macfuse", err != nil && deadMount(err)
}
