package main

import "golang.org/x/sys/unix"

// prepareProcess makes the shim a child subreaper, so helpers the
// hypervisor leaves behind are reparented to it and reaped.
func prepareProcess() {
	unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
}
