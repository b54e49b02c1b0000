package fusefs

import (
	"errors"
	"os"
	"strconv"
	"strings"
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

// hypefsType is the filesystem type a hypefs mount shows in mountinfo.
const hypefsType = "fuse.hypefs"

// topFuseMount is the type (fuse.hypefs, ...) of the topmost mount on
// path, if that is a FUSE mount.
func topFuseMount(path string) (string, bool) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", false
	}
	fstype, found := "", false
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 7 || unescapeMount(f[4]) != path {
			continue
		}
		for k := 6; k+1 < len(f); k++ {
			if f[k] == "-" {
				fstype = f[k+1]
				found = strings.HasPrefix(fstype, "fuse")
				break
			}
		}
	}
	return fstype, found
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, "\\") {
		return s
	}
	var b strings.Builder
	for k := 0; k < len(s); k++ {
		if s[k] == '\\' && k+3 < len(s) {
			if n, err := strconv.ParseUint(s[k+1:k+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				k += 3
				continue
			}
		}
		b.WriteByte(s[k])
	}
	return b.String()
}
