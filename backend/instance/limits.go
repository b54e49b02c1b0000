package instance

import (
	"syscall"

	"golang.org/x/sys/unix"

	"hypefs/internal/errno"
)

// Limits bound what a config may ask of the host.
type Limits struct {
	// MaxDiskMiB is the largest "disk" a config may ask for. Zero means
	// the free space of the data directory when the config is written:
	// the writable disk is a sparse file there, and one larger than the
	// space left would fill it.
	MaxDiskMiB int64
}

// limits is a manager's Limits and where to measure free space.
type limits struct {
	Limits
	data string
}

// checkDisk refuses a disk size over the ceiling (ENOSPC, with the key,
// the size, the ceiling and what to do).
func (l limits) checkDisk(disk string) *errno.Error {
	mib, err := SizeMiB(disk)
	if err != nil {
		return errno.Errorf(syscall.EINVAL, "config key \"disk\": %v", err)
	}
	ceiling, why := l.MaxDiskMiB, "the limit this hypefs was started with (--max-disk)"
	if ceiling <= 0 {
		free, ok := freeMiB(l.data)
		if !ok {
			return nil
		}
		ceiling, why = free, "the free space of "+l.data
	}
	if mib > ceiling {
		return errno.Errorf(syscall.ENOSPC, "config key \"disk\": %s (%d MiB) is more than %s allows: %d MiB (hint: ask for less, or free space)", disk, mib, why, ceiling)
	}
	return nil
}

// freeMiB is the space an unprivileged writer may still use under dir.
func freeMiB(dir string) (int64, bool) {
	var st unix.Statfs_t
	if unix.Statfs(dir, &st) != nil {
		return 0, false
	}
	return int64(st.Bavail) * int64(st.Bsize) >> 20, true
}
