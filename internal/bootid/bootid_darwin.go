package bootid

import "golang.org/x/sys/unix"

// Current identifies the current boot of the host (see the Linux twin).
func Current() string {
	s, err := unix.Sysctl("kern.bootsessionuuid")
	if err != nil {
		return ""
	}
	return s
}
