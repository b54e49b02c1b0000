package host

import "golang.org/x/sys/unix"

// BootID identifies the current boot of the host (see the Linux twin).
func BootID() string {
	s, err := unix.Sysctl("kern.bootsessionuuid")
	if err != nil {
		return ""
	}
	return s
}
