package fusefs

import (
	"errors"
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
