// Package fusefs serves an fs.Tree over FUSE with go-fuse v2.
//
// Every node implements the operations a shell or file manager uses; the
// ones that would otherwise default to success (go-fuse's Unlink and Rmdir
// remove the child silently) or to ENOTSUP (Setattr, which breaks the
// O_TRUNC of `echo x > file`) are answered explicitly.
//
// Caching: entry and attribute timeouts are zero, so the kernel asks again
// every time and never shows stale state or a VM that has gone.
package fusefs

import (
	"context"
	"os"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	hfs "hypefs/fs"
)

// cacheTimeout is how long the kernel may keep what cannot go stale:
//   - names in a fixed directory (the root, an instance's directory);
//   - instance names: every change of instances/ reaches the kernel as a
//     real mkdir or rmdir on the mount, the user's own or the daemon's
//     (Waker), so its dentry cache is told of each one;
//   - a directory's attributes, which never change.
//
// A file's attributes are never cached: sizes and times change with state.
const cacheTimeout = time.Hour

func setTimeouts(parent, c hfs.Node, out *fuse.EntryOut) {
	_, fixed := parent.(hfs.FixedDir)
	_, instances := parent.(hfs.MkdirDir)
	if fixed || instances {
		out.SetEntryTimeout(cacheTimeout)
	}
	if c.Mode().IsDir() {
		out.SetAttrTimeout(cacheTimeout)
	}
}

// node is one inode: a tree node, its path from the root ("" for the
// root) and its mount's shared state.
type node struct {
	gofs.Inode
	n    hfs.Node
	path string
	st   *wakeState
	dirs *openDirs
}

// childPath is the path of the child called name.
func (x *node) childPath(name string) string {
	if x.path == "" {
		return name
	}
	return x.path + "/" + name
}

var (
	_ gofs.NodeLookuper   = (*node)(nil)
	_ gofs.NodeReaddirer  = (*node)(nil)
	_ gofs.NodeGetattrer  = (*node)(nil)
	_ gofs.NodeSetattrer  = (*node)(nil)
	_ gofs.NodeOpener     = (*node)(nil)
	_ gofs.NodeMkdirer    = (*node)(nil)
	_ gofs.NodeRmdirer    = (*node)(nil)
	_ gofs.NodeUnlinker   = (*node)(nil)
	_ gofs.NodeRenamer    = (*node)(nil)
	_ gofs.NodeCreater    = (*node)(nil)
	_ gofs.NodeMknoder    = (*node)(nil)
	_ gofs.NodeSymlinker  = (*node)(nil)
	_ gofs.NodeLinker     = (*node)(nil)
	_ gofs.NodeSetxattrer = (*node)(nil)
	_ gofs.NodeFsyncer    = (*node)(nil)

	_ gofs.NodeOpendirHandler = (*node)(nil)
)

func stable(n hfs.Node) gofs.StableAttr {
	mode := uint32(syscall.S_IFREG)
	if n.Mode().IsDir() {
		mode = syscall.S_IFDIR
	}
	return gofs.StableAttr{Mode: mode, Ino: n.ID()}
}

func (x *node) child(ctx context.Context, name string, c hfs.Node) *gofs.Inode {
	return x.NewInode(ctx, &node{n: c, path: x.childPath(name), st: x.st, dirs: x.dirs}, stable(c))
}

// fill answers stat: h is the caller's open handle, if any (fstat).
func fill(ctx context.Context, n hfs.Node, h hfs.Handle, a *fuse.Attr) {
	at := hfs.Stat(ctx, n, h)
	a.Ino = n.ID()
	a.Mode = stable(n).Mode | modeBits(at.Mode)
	a.Nlink, a.Size, a.Blocks = at.Nlink, at.Size, at.Blocks
	a.Owner = fuse.Owner{Uid: at.UID, Gid: at.GID}
	a.SetTimes(&at.Mtime, &at.Mtime, &at.Mtime)
}

// treeHandle is the tree's handle behind a FUSE file handle, if any.
func treeHandle(fh gofs.FileHandle) hfs.Handle {
	switch f := fh.(type) {
	case *handle:
		return f.h
	case *passthrough:
		return f.h
	}
	return nil
}

// modeBits are the permission bits of m in stat's encoding, sticky,
// setuid and setgid included (the kernel enforces instances/' sticky bit).
func modeBits(m os.FileMode) uint32 {
	b := uint32(m.Perm())
	if m&os.ModeSticky != 0 {
		b |= syscall.S_ISVTX
	}
	if m&os.ModeSetuid != 0 {
		b |= syscall.S_ISUID
	}
	if m&os.ModeSetgid != 0 {
		b |= syscall.S_ISGID
	}
	return b
}

// as is ctx carrying the FUSE caller for the tree (fs.WithCaller): who
// makes an instance, who sees info's sockets, whose credentials a pull
// uses. The kernel has already checked the caller's permissions
// (default_permissions).
func as(ctx context.Context) context.Context {
	if c, ok := fuse.FromContext(ctx); ok {
		return hfs.WithCaller(ctx, hfs.Caller{UID: c.Uid, GID: c.Gid})
	}
	return ctx
}

func (x *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	ctx = as(ctx)
	if a := x.st.announced(x.childPath(name)); a != announceNone && self(ctx) {
		if a == announceCreate { // so that the waker's mkdir reaches Mkdir
			return nil, syscall.ENOENT
		}
		// announceDelete: so that the waker's rmdir reaches Rmdir.
		gone := &goneDir{id: hfs.NewID()}
		fill(ctx, gone, nil, &out.Attr)
		return x.child(ctx, name, gone), 0
	}
	c, err := hfs.Lookup(ctx, x.n, name)
	if err != nil {
		return nil, hfs.Errno(err)
	}
	fill(ctx, c, nil, &out.Attr)
	setTimeouts(x.n, c, out)
	return x.child(ctx, name, c), 0
}

// goneDir stands for an instance directory that is already gone, for the
// length of the waker's rmdir.
type goneDir struct{ id uint64 }

func (g *goneDir) ID() uint64                                       { return g.id }
func (g *goneDir) Mode() os.FileMode                                { return os.ModeDir | 0o700 }
func (g *goneDir) Lookup(context.Context, string) (hfs.Node, error) { return nil, syscall.ENOENT }
func (g *goneDir) Entries(context.Context) ([]hfs.Entry, error)     { return nil, nil }

func (x *node) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	ctx = as(ctx)
	es, err := hfs.Entries(ctx, x.n)
	if err != nil {
		return nil, hfs.Errno(err)
	}
	out := make([]fuse.DirEntry, 0, len(es))
	for _, e := range es {
		out = append(out, fuse.DirEntry{Name: e.Name, Ino: e.Node.ID(), Mode: stable(e.Node).Mode})
	}
	return gofs.NewListDirStream(out), 0
}

func (x *node) Getattr(ctx context.Context, fh gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	ctx = as(ctx)
	fill(ctx, x.n, treeHandle(fh), &out.Attr)
	if x.n.Mode().IsDir() {
		out.SetTimeout(cacheTimeout)
	}
	return 0
}

// Setattr hands the change to the tree's rules (fs.Setattr).
func (x *node) Setattr(ctx context.Context, fh gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	ctx = as(ctx)
	var a hfs.SetAttr
	if m, ok := in.GetMode(); ok {
		mode := os.FileMode(m & 0o7777)
		a.Mode = &mode
	}
	if uid, ok := in.GetUID(); ok {
		a.UID = &uid
	}
	if gid, ok := in.GetGID(); ok {
		a.GID = &gid
	}
	if size, ok := in.GetSize(); ok {
		a.Size = &size
	}
	mt, okM := in.GetMTime()
	_, okA := in.GetATime()
	// The daemon's own touch (see Waker) changes nothing: its point is
	// the inotify event the kernel sends for it.
	a.Times, a.Mtime = (okM || okA) && !self(ctx), mt
	if err := hfs.Setattr(ctx, x.n, a); err != nil {
		return hfs.Errno(err)
	}
	fill(ctx, x.n, treeHandle(fh), &out.Attr)
	return 0
}

// Fsync succeeds on every file and directory (fsync, fdatasync,
// fsyncdir): what the tree takes is applied when written, and its files
// on disk are the daemon's to make durable.
func (x *node) Fsync(context.Context, gofs.FileHandle, uint32) syscall.Errno { return 0 }

func (x *node) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	ctx = as(ctx)
	h, err := hfs.Open(ctx, x.n, int(flags))
	if err != nil {
		return nil, 0, hfs.Errno(err)
	}
	var ff uint32
	if h.DirectIO() {
		ff |= fuse.FOPEN_DIRECT_IO
	}
	if h.Stream() {
		ff |= fuse.FOPEN_NONSEEKABLE | fuse.FOPEN_STREAM
	}
	if _, ok := h.(hfs.Backed); ok {
		return &passthrough{handle{h: h}}, ff, 0
	}
	return &handle{h: h}, ff, 0
}

func (x *node) Mkdir(ctx context.Context, name string, _ uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	ctx = as(ctx)
	var c hfs.Node
	var err error
	path := x.childPath(name)
	if self(ctx) {
		// The daemon announcing an instance made elsewhere (Waker).
		c, err = hfs.Lookup(ctx, x.n, name)
	} else {
		x.st.markLocal(path)
		if c, err = hfs.Mkdir(ctx, x.n, name); err != nil {
			x.st.takeLocal(path)
		}
	}
	if err != nil {
		return nil, hfs.Errno(err)
	}
	fill(ctx, c, nil, &out.Attr)
	setTimeouts(x.n, c, out)
	return x.child(ctx, name, c), 0
}

func (x *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	ctx = as(ctx)
	if self(ctx) {
		// The daemon announcing an instance removed elsewhere (Waker).
		if _, err := hfs.Lookup(ctx, x.n, name); err == nil {
			return syscall.EBUSY
		}
		return 0
	}
	path := x.childPath(name)
	x.st.markLocal(path)
	err := hfs.Rmdir(ctx, x.n, name)
	if err != nil {
		x.st.takeLocal(path)
	}
	return hfs.Errno(err)
}

// Unlink hands the tree whether the caller holds this directory open
// (rm -r, find -delete emptying it before they remove it).
func (x *node) Unlink(ctx context.Context, name string) syscall.Errno {
	ctx = as(ctx)
	return hfs.Errno(hfs.Unlink(ctx, x.n, name, x.dirs.holds(ctx, x.n.ID())))
}

// Create goes to the tree's rule (fs.Create): refused, with a sentence in
// an instance's error file.
func (x *node) Create(ctx context.Context, name string, _, _ uint32, _ *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	ctx = as(ctx)
	return nil, nil, 0, hfs.Errno(hfs.Create(ctx, x.n, name))
}

// The tree's other refusals (fs.ErrNoChange, fs.ErrNoXattr).
func (x *node) Rename(context.Context, string, gofs.InodeEmbedder, string, uint32) syscall.Errno {
	return hfs.ErrNoChange
}
func (x *node) Mknod(context.Context, string, uint32, uint32, *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return nil, hfs.ErrNoChange
}
func (x *node) Symlink(context.Context, string, string, *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return nil, hfs.ErrNoChange
}
func (x *node) Link(context.Context, gofs.InodeEmbedder, string, *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return nil, hfs.ErrNoChange
}
func (x *node) Setxattr(context.Context, string, []byte, uint32) syscall.Errno {
	return hfs.ErrNoXattr
}

type handle struct{ h hfs.Handle }

// passthrough lets the kernel read a backed file (the console log) itself,
// at the speed of the disk; go-fuse falls back to Read where it cannot.
type passthrough struct{ handle }

func (p *passthrough) PassthroughFd() (int, bool) { return p.h.(hfs.Backed).Fd() }

var _ gofs.FilePassthroughFder = (*passthrough)(nil)

var (
	_ gofs.FileReader   = (*handle)(nil)
	_ gofs.FileWriter   = (*handle)(nil)
	_ gofs.FileFlusher  = (*handle)(nil)
	_ gofs.FileReleaser = (*handle)(nil)
)

func (f *handle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	ctx = as(ctx)
	n, err := f.h.Read(ctx, dest, off)
	if err != nil {
		return nil, hfs.Errno(err)
	}
	return fuse.ReadResultData(dest[:n]), 0
}

func (f *handle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	ctx = as(ctx)
	n, err := f.h.Write(ctx, data, off)
	if err != nil {
		return 0, hfs.Errno(err)
	}
	return uint32(n), 0
}

func (f *handle) Flush(ctx context.Context) syscall.Errno { return hfs.Errno(f.h.Flush(as(ctx))) }
func (f *handle) Release(context.Context) syscall.Errno {
	f.h.Release()
	return 0
}
