package fusefs

import (
	"fmt"
	"log"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	hfs "hypefs/fs"
)

// Server is a mounted tree: the FUSE server, and what its nodes and its
// waker share.
type Server struct {
	*fuse.Server
	mnt  string
	tree *hfs.Tree
	st   *wakeState
}

// Mount serves tree at mountpoint and returns the running server. Dead
// mounts left by crashed daemons are cleared first, and a live hypefs
// there is refused (ClearStale).
func Mount(mountpoint string, tree *hfs.Tree, debug bool) (*Server, error) {
	if err := ClearStale(mountpoint); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(mountpoint, 0o755); err != nil {
		return nil, fmt.Errorf("create mountpoint: %w", err)
	}
	zero := time.Duration(0)
	root := &node{n: tree.Root(), st: newWakeState(), dirs: newOpenDirs()}
	opts := &gofs.Options{
		EntryTimeout:    &zero,
		AttrTimeout:     &zero,
		NegativeTimeout: &zero,
		RootStableAttr:  &gofs.StableAttr{Ino: 1},
		MountOptions: fuse.MountOptions{
			FsName: "hypefs",
			Name:   "hypefs",
			// Every local user may reach the mount, and the kernel checks
			// each access against the owners and modes the tree reports
			// (default_permissions): see docs/security.md.
			AllowOther:    os.Geteuid() == 0,
			Options:       []string{"default_permissions"},
			Debug:         debug,
			MaxReadAhead:  1 << 20,
			MaxWrite:      1 << 20,
			DisableXAttrs: true,
			PanicHandler: func(v any) fuse.Status {
				log.Printf("hypefs: panic in a FUSE request: %v", v)
				return fuse.EIO
			},
		},
	}
	srv, err := gofs.Mount(mountpoint, root, opts)
	if err != nil {
		return nil, fmt.Errorf("mount %s: %w (hint: %s)", mountpoint, err, mountHint)
	}
	return &Server{Server: srv, mnt: mountpoint, tree: tree, st: root.st}, nil
}

// ClearStale unmounts a dead FUSE mount at mountpoint, the one a crashed
// daemon leaves behind (stat fails with the platform's dead-mount errno:
// ENOTCONN on Linux, ENXIO with macFUSE). A healthy or absent mountpoint
// is left alone. The platform's unmount commands are tried in order, the
// forceful ones last.
//
// Each round looks at the topmost FUSE mount of mountpoint (on Linux in
// /proc/self/mountinfo, since several can be stacked there) and asks it
// for its statfs, which always reaches its daemon (a stat of the
// directory may be answered from the kernel's cache of a dead mount); a
// dead one is unmounted, lazily when something still holds it (a shell's
// working directory), until none is left. A live hypefs is refused with a
// sentence; another live filesystem is left alone.
func ClearStale(mountpoint string) error {
	for round := 0; round < 64; round++ {
		fstype, mounted := topFuseMount(mountpoint)
		if !mounted {
			return nil
		}
		switch probe(mountpoint) {
		case mountAlive:
			if fstype == hypefsType {
				return fmt.Errorf("%s is already served by a running hypefs (hint: stop that one first, with Ctrl-C or kill, or choose another mountpoint)", mountpoint)
			}
			return nil
		case mountHung:
			if fstype == hypefsType {
				return fmt.Errorf("%s is already served by a hypefs that does not answer (hint: kill that daemon; a new one then clears its mount)", mountpoint)
			}
			return nil
		}
		if err := clearDead(mountpoint, staleUnmounts(mountpoint), runTool); err != nil {
			return err
		}
	}
	return fmt.Errorf("clear the dead mounts at %s: more than 64 are stacked there (hint: %s)", mountpoint, clearHint(mountpoint))
}

type mountState int

const (
	mountAlive mountState = iota
	mountDead
	mountHung
)

// probe asks the filesystem mounted on path for its statfs.
func probe(path string) mountState {
	ch := make(chan error, 1)
	go func() {
		var st syscall.Statfs_t
		ch <- syscall.Statfs(path, &st)
	}()
	select {
	case err := <-ch:
		if deadMount(err) {
			return mountDead
		}
		return mountAlive
	case <-time.After(3 * time.Second):
		return mountHung
	}
}

// ForceUnmount detaches the mount at mountpoint even while files on it are
// open (the end of a daemon whose clean unmount keeps failing).
func ForceUnmount(mountpoint string) error {
	return clearDead(mountpoint, forceUnmounts(mountpoint), runTool)
}

// clearDead runs cmds until one succeeds; when none does, the error names
// each failure and how to clear the mount by hand.
func clearDead(mountpoint string, cmds [][]string, run func(name string, args ...string) ([]byte, error)) error {
	var fails []string
	for _, c := range cmds {
		out, err := run(c[0], c[1:]...)
		if err == nil {
			return nil
		}
		msg := fmt.Sprintf("%s: %v", strings.Join(c, " "), err)
		if o := strings.TrimSpace(string(out)); o != "" {
			msg += " (" + o + ")"
		}
		fails = append(fails, msg)
	}
	return fmt.Errorf("clear the dead mount at %s: %s (hint: %s)", mountpoint, strings.Join(fails, "; "), clearHint(mountpoint))
}

func runTool(name string, args ...string) ([]byte, error) {
	return exec.Command(name, args...).CombinedOutput()
}
