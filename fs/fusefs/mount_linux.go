package fusefs

import (
	"errors"
	"syscall"
)

// mountHint is what to check when mounting fails.
const mountHint = `is /dev/fuse there and fuse3 installed? run "make deps"`

// deadMount reports whether stat's error says the mount's daemon is gone:
// "transport endpoint is not connected", or ECONNABORTED for a request
// that was in flight.
func deadMount(err error) bool {
	return errors.Is(err, syscall.ENOTCONN) || errors.Is(err, syscall.ECONNABORTED)
}

// staleUnmounts clear a dead mount: a plain unmount, then a lazy one for
// when something still holds it.
func staleUnmounts(mnt string) [][]string {
	return [][]string{{"fusermount3", "-u", mnt}, {"fusermount3", "-uz", mnt}}
}

func forceUnmounts(mnt string) [][]string { return [][]string{{"fusermount3", "-uz", mnt}} }

func clearHint(mnt string) string {
	return "fusermount3 -uz " + mnt + ", or as root umount -l " + mnt
}
