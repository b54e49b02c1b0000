package fusefs

import (
	"fmt"
	"log"
	"os"
	"os/exec"
	"strings"
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

// Mount serves tree at mountpoint and returns the running server. A dead
// mount left by a crashed daemon is cleared first (ClearStale).
func Mount(mountpoint string, tree *hfs.Tree, debug bool) (*Server, error) {
	if err := ClearStale(mountpoint); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(mountpoint, 0o755); err != nil {
		return nil, fmt.Errorf("create mountpoint: %w", err)
	}
	zero := time.Duration(0)
	root := &node{n: tree.Root(), st: newWakeState()}
	opts := &gofs.Options{
		EntryTimeout:    &zero,
		AttrTimeout:     &zero,
		NegativeTimeout: &zero,
		RootStableAttr:  &gofs.StableAttr{Ino: 1},
		MountOptions: fuse.MountOptions{
			FsName:        "hypefs",
			Name:          "hypefs",
			AllowOther:    os.Geteuid() == 0,
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
func ClearStale(mountpoint string) error {
	_, err := os.Stat(mountpoint)
	if err == nil || !deadMount(err) {
		return nil
	}
	return clearDead(mountpoint, staleUnmounts(mountpoint), runTool)
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
