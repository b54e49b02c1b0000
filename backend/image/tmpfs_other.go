//go:build !linux

package image

// tmpfsFree: no tmpfs scratch space outside Linux; trees go to disk.
func tmpfsFree(string) (int64, bool) { return 0, false }
