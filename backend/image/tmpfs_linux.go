package image

import "golang.org/x/sys/unix"

// tmpfsFree reports the free bytes of dir if it is a tmpfs.
func tmpfsFree(dir string) (int64, bool) {
	var st unix.Statfs_t
	if unix.Statfs(dir, &st) != nil || st.Type != unix.TMPFS_MAGIC {
		return 0, false
	}
	return int64(st.Bavail) * int64(st.Bsize), true
}
