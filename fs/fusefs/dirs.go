package fusefs

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	hfs "hypefs/fs"
)

// openDirs counts, per directory node and process, the directory handles
// open on one mount. `rm -r` and `find -delete` hold a directory open while
// they unlink its entries, then remove it: an unlink from a process that
// holds the directory open is how the tree tells emptying a directory
// from removing one file (fs.Unlink). The kernel names a request's caller
// by thread; what counts is the process (its thread group).
type openDirs struct {
	mu sync.Mutex
	n  map[dirOpener]int
}

type dirOpener struct {
	node uint64
	tgid int
}

func newOpenDirs() *openDirs { return &openDirs{n: map[dirOpener]int{}} }

func (o *openDirs) add(k dirOpener, d int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.n[k] += d; o.n[k] <= 0 {
		delete(o.n, k)
	}
}

// holds reports whether the caller of ctx has directory node open.
func (o *openDirs) holds(ctx context.Context, node uint64) bool {
	k := dirOpener{node, callerTgid(ctx)}
	o.mu.Lock()
	defer o.mu.Unlock()
	return k.tgid > 0 && o.n[k] > 0
}

// callerTgid is the process (thread group) of a request's caller, or 0.
func callerTgid(ctx context.Context) int {
	c, ok := fuse.FromContext(ctx)
	if !ok || c.Pid == 0 {
		return 0
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", c.Pid))
	if err != nil {
		return int(c.Pid)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "Tgid:"); ok {
			if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
				return n
			}
		}
	}
	return int(c.Pid)
}

// dirHandle is an open directory: its entries, read when first asked for
// (a snapshot, as for any directory stream), and its place in the counts.
type dirHandle struct {
	x       *node
	opener  dirOpener
	once    sync.Once
	entries []fuse.DirEntry
	errno   syscall.Errno
	pos     int
}

var (
	_ gofs.FileReaddirenter = (*dirHandle)(nil)
	_ gofs.FileSeekdirer    = (*dirHandle)(nil)
	_ gofs.FileReleasedirer = (*dirHandle)(nil)
	_ gofs.FileFsyncdirer   = (*dirHandle)(nil)
)

// OpendirHandle opens a directory, counting the caller among its holders.
func (x *node) OpendirHandle(ctx context.Context, _ uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	if _, ok := x.n.(hfs.Dir); !ok {
		return nil, 0, syscall.ENOTDIR
	}
	h := &dirHandle{x: x, opener: dirOpener{x.n.ID(), callerTgid(ctx)}}
	if h.opener.tgid > 0 {
		x.dirs.add(h.opener, 1)
	}
	return h, 0, 0
}

func (h *dirHandle) load(ctx context.Context) {
	h.once.Do(func() {
		es, err := hfs.Entries(as(ctx), h.x.n)
		if err != nil {
			h.errno = hfs.Errno(err)
			return
		}
		for _, e := range es {
			h.entries = append(h.entries, fuse.DirEntry{Name: e.Name, Ino: e.Node.ID(), Mode: stable(e.Node).Mode})
		}
	})
}

func (h *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	h.load(ctx)
	if h.errno != 0 {
		return nil, h.errno
	}
	if h.pos >= len(h.entries) {
		return nil, 0
	}
	e := h.entries[h.pos]
	h.pos++
	e.Off = uint64(h.pos)
	return &e, 0
}

func (h *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	h.load(ctx)
	if off > uint64(len(h.entries)) {
		return syscall.EINVAL
	}
	h.pos = int(off)
	return 0
}

func (h *dirHandle) Releasedir(context.Context, uint32) {
	if h.opener.tgid > 0 {
		h.x.dirs.add(h.opener, -1)
	}
}

// Fsyncdir succeeds: there is nothing to make durable that is not already.
func (h *dirHandle) Fsyncdir(context.Context, uint32) syscall.Errno { return 0 }
