package fusefs

import (
	"errors"
	"fmt"
	"log"
	"os"
	"os/exec"
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

// Mount serves tree at mountpoint and returns the running server. A dead
// mount left by a crashed daemon ("transport endpoint is not connected")
// is cleared first.
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
		return nil, fmt.Errorf("mount %s: %w (hint: is /dev/fuse there and fuse3 installed? run \"make deps\")", mountpoint, err)
	}
	return &Server{Server: srv, mnt: mountpoint, tree: tree, st: root.st}, nil
}

// ClearStale unmounts a dead FUSE mount at mountpoint, lazily when
// something still holds it. A healthy mountpoint is left alone.
func ClearStale(mountpoint string) error {
	_, err := os.Stat(mountpoint)
	if err == nil || !errors.Is(err, syscall.ENOTCONN) && !errors.Is(err, syscall.ECONNABORTED) {
		return nil
	}
	if out, err := exec.Command("fusermount3", "-u", mountpoint).CombinedOutput(); err == nil {
		return nil
	} else if out2, err2 := exec.Command("fusermount3", "-uz", mountpoint).CombinedOutput(); err2 != nil {
		return fmt.Errorf("clear stale mount %s: %s / %s", mountpoint, out, out2)
	}
	return nil
}
