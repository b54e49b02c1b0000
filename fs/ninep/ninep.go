// Package ninep serves an fs tree over 9P2000.L with github.com/hugelgupf/p9,
// so that a remote host or a guest mounts it the Plan 9 way:
//
//	mount -t 9p -o trans=tcp,port=5640,version=9p2000.L HOST /n/vmhost
//
// It is a thin adapter, like fs/fusefs: every decision about content and
// errnos is the tree's. Requests map one to one onto fs nodes (walk →
// Lookup, readdir → Entries, mkdir/unlinkat(AT_REMOVEDIR) → MkdirDir,
// lopen/read/write → File.Open and its Handle, setattr size → Truncater),
// so changes made over 9P go through the same backend calls as FUSE's.
//
// Closing: 9P has no close(2) that returns an error. A fid that wrote has
// its handle flushed on Tfsync (whose error the client sees) and on clunk
// (whose error the protocol drops; the tree records it in the instance's
// `error` file).
//
// Follow files (console, events): p9 gives handlers no context and a
// Tflush waits for the request it flushes, and Linux's v9fs waits for a
// reply without heeding Ctrl-C, so a read never blocks longer than
// FollowWait. See followRead for what a read returns, and docs/9p.md.
package ninep

import (
	"context"
	"errors"
	"io"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"

	hfs "hypefs/fs"
)

// FollowWait is the longest a read of a follow file waits for data when
// none is buffered. After it, the read fails with EINTR, which readers
// retry (cat, tail, Go's os.File, Python) and which lets the reading
// process act on a pending signal (Ctrl-C).
var FollowWait = time.Second

// Linux open(2) flag values, which 9P2000.L's Tlopen carries as they are.
const (
	oNonblock   = 0o4000
	atRemoveDir = 0x200
	v9fsMagic   = 0x01021997
)

// errno converts a tree error into the errno p9 sends in Rlerror.
func errno(err error) error {
	if err == nil {
		return nil
	}
	return linux.Errno(hfs.Errno(err))
}

func qidOf(n hfs.Node) p9.QID {
	if n.Mode().IsDir() {
		return p9.QID{Type: p9.TypeDir, Path: n.ID()}
	}
	return p9.QID{Type: p9.TypeRegular, Path: n.ID()}
}

// file is one fid: a node, who walked to it, and, once opened, its handle.
type file struct {
	s   *Server
	n   hfs.Node
	who hfs.Caller // the attach user: every fid walked from its attach acts as them

	h         hfs.Handle // set by Open
	nonblock  bool       // opened with O_NONBLOCK
	wrote     atomic.Bool
	gaveData  atomic.Bool // the last follow read returned data
	dirOpened bool        // a directory opened (counted in s.dirs until Close)
}

var _ p9.File = (*file)(nil)

// ctx is what tree calls get: the server's context, carrying the caller.
func (f *file) ctx() context.Context { return hfs.WithCaller(f.s.ctx, f.who) }

// may refuses (EACCES) what the tree's owners and modes do not let the
// caller do to n (fs.Permitted): the check the kernel makes over FUSE.
func (f *file) may(n hfs.Node, want uint32) error {
	if !hfs.Permitted(f.who, n, want) {
		return linux.EACCES
	}
	return nil
}

func (f *file) Walk(names []string) ([]p9.QID, p9.File, error) {
	if len(names) == 0 {
		return nil, &file{s: f.s, n: f.n, who: f.who}, nil
	}
	n := f.n
	qids := make([]p9.QID, 0, len(names))
	for _, name := range names {
		if n.Mode().IsDir() {
			if err := f.may(n, hfs.MayExec); err != nil {
				return nil, nil, err
			}
		}
		c, err := hfs.Lookup(f.ctx(), n, name)
		if err != nil {
			return nil, nil, errno(err)
		}
		n = c
		qids = append(qids, qidOf(n))
	}
	return qids, &file{s: f.s, n: n, who: f.who}, nil
}

func (f *file) WalkGetAttr(names []string) ([]p9.QID, p9.File, p9.AttrMask, p9.Attr, error) {
	qids, nf, err := f.Walk(names)
	if err != nil {
		return nil, nil, p9.AttrMask{}, p9.Attr{}, err
	}
	_, mask, attr, _ := nf.GetAttr(p9.AttrMaskAll)
	return qids, nf, mask, attr, nil
}

func (f *file) StatFS() (p9.FSStat, error) {
	return p9.FSStat{Type: v9fsMagic, BlockSize: 4096, NameLength: 255}, nil
}

// attrMask is what GetAttr fills in.
var attrMask = p9.AttrMask{Mode: true, NLink: true, UID: true, GID: true, RDev: true,
	ATime: true, MTime: true, CTime: true, INo: true, Size: true, Blocks: true}

func (f *file) GetAttr(p9.AttrMask) (p9.QID, p9.AttrMask, p9.Attr, error) {
	at := hfs.Stat(f.ctx(), f.n, f.h)
	mode := p9.ModeFromOS(at.Mode)
	if at.Mode&os.ModeSticky != 0 {
		mode |= p9.Sticky
	}
	a := p9.Attr{
		Mode:      mode,
		UID:       p9.UID(at.UID),
		GID:       p9.GID(at.GID),
		NLink:     p9.NLink(at.Nlink),
		Size:      at.Size,
		Blocks:    at.Blocks,
		BlockSize: 4096,
	}
	sec, nsec := uint64(at.Mtime.Unix()), uint64(at.Mtime.Nanosecond())
	a.ATimeSeconds, a.ATimeNanoSeconds = sec, nsec
	a.MTimeSeconds, a.MTimeNanoSeconds = sec, nsec
	a.CTimeSeconds, a.CTimeNanoSeconds = sec, nsec
	return qidOf(f.n), attrMask, a, nil
}

// SetAttr hands the change to the tree's rules (fs.Setattr). The shell's
// `>` arrives as open, then setattr size=0.
func (f *file) SetAttr(valid p9.SetAttrMask, attr p9.SetAttr) error {
	owner := f.who.Root() || f.who.UID == hfs.AccessOf(f.n).UID
	if (valid.Permissions || valid.UID || valid.GID) && !owner {
		return linux.EPERM // as the kernel: only the owner may chmod or chown
	}
	if valid.Size || valid.ATime || valid.MTime {
		if err := f.may(f.n, hfs.MayWrite); err != nil && !owner {
			return err
		}
	}
	a := hfs.SetAttr{Times: valid.ATime || valid.MTime}
	if valid.Permissions {
		mode := os.FileMode(attr.Permissions & 0o7777)
		a.Mode = &mode
	}
	if valid.UID {
		uid := uint32(attr.UID)
		a.UID = &uid
	}
	if valid.GID {
		gid := uint32(attr.GID)
		a.GID = &gid
	}
	if valid.Size {
		a.Size = &attr.Size
	}
	if valid.MTimeNotSystemTime {
		a.Mtime = time.Unix(int64(attr.MTimeSeconds), int64(attr.MTimeNanoSeconds))
	}
	return errno(hfs.Setattr(f.ctx(), f.n, a))
}

// Close runs when the fid is clunked (or its connection ends). A handle
// that took writes is flushed first, as close(2) does over FUSE.
func (f *file) Close() error {
	if f.dirOpened {
		f.s.openDir(f.n.ID(), -1)
	}
	if f.h == nil {
		return nil
	}
	if f.wrote.Load() {
		f.h.Flush(f.ctx())
	}
	f.h.Release()
	return nil
}

func (f *file) Open(mode p9.OpenFlags) (p9.QID, uint32, error) {
	if f.n.Mode().IsDir() {
		if mode.Mode() != p9.ReadOnly {
			return p9.QID{}, 0, linux.EISDIR
		}
		if err := f.may(f.n, hfs.MayRead); err != nil {
			return p9.QID{}, 0, err
		}
		f.dirOpened = true
		f.s.openDir(f.n.ID(), 1)
		return qidOf(f.n), 0, nil
	}
	want := map[p9.OpenFlags]uint32{p9.ReadOnly: hfs.MayRead, p9.WriteOnly: hfs.MayWrite, p9.ReadWrite: hfs.MayRead | hfs.MayWrite}[mode.Mode()]
	if err := f.may(f.n, want); err != nil {
		return p9.QID{}, 0, err
	}
	// Only the access mode and O_NONBLOCK mean anything to the tree; the
	// other Linux flags (O_TRUNC arrives as a setattr) are not passed on.
	f.nonblock = uint32(mode)&oNonblock != 0
	flags := mode.OSFlags()
	if f.nonblock {
		flags |= syscall.O_NONBLOCK
	}
	h, err := hfs.Open(f.ctx(), f.n, flags)
	if err != nil {
		return p9.QID{}, 0, errno(err)
	}
	f.h = h
	return qidOf(f.n), 0, nil
}

func (f *file) ReadAt(p []byte, off int64) (int, error) {
	if f.h == nil {
		return 0, linux.EISDIR
	}
	if f.h.Stream() {
		return f.followRead(p, off)
	}
	n, err := f.h.Read(f.ctx(), p, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return n, errno(err)
	}
	return n, nil
}

// followRead reads a follow file (console, events). What is buffered is
// returned at once. With nothing buffered:
//   - on an O_NONBLOCK fid, it returns 0 bytes at once (the tree's answer
//     for a non-blocking open, as over FUSE);
//   - after a read that returned data, it fails with EAGAIN at once.
//     Linux's v9fs keeps sending reads to fill the caller's buffer unless
//     O_NONBLOCK is set; an error ends that loop and the kernel hands the
//     caller the bytes it has, dropping the error.
//   - otherwise it waits up to FollowWait for data, then fails with EINTR
//     (readers retry it; a process with Ctrl-C pending dies as it should).
//
// Otherwise a read returns 0 (end of file) only when the follow has ended
// for good (the VM stopped).
func (f *file) followRead(p []byte, off int64) (int, error) {
	wait := FollowWait
	if f.nonblock || f.gaveData.Load() {
		wait = 0
	}
	ctx, cancel := context.WithTimeout(f.ctx(), wait)
	defer cancel()
	n, err := f.h.Read(ctx, p, off)
	if n > 0 {
		f.gaveData.Store(true)
		return n, nil
	}
	f.gaveData.Store(false)
	if err == nil || errors.Is(err, io.EOF) {
		return 0, nil
	}
	if hfs.Errno(err) == syscall.EINTR && ctx.Err() != nil && f.s.ctx.Err() == nil {
		if wait == 0 {
			return 0, linux.EAGAIN
		}
		return 0, linux.EINTR
	}
	return 0, errno(err)
}

func (f *file) WriteAt(p []byte, off int64) (int, error) {
	if f.h == nil {
		return 0, linux.EISDIR
	}
	f.wrote.Store(true)
	n, err := f.h.Write(f.ctx(), p, off)
	if err != nil {
		return n, errno(err)
	}
	return n, nil
}

// FSync flushes a handle that took writes: a config written in pieces is
// committed here, and its errno is fsync's.
func (f *file) FSync() error {
	if f.h == nil || !f.wrote.Load() {
		return nil
	}
	return errno(f.h.Flush(f.ctx()))
}

func (f *file) Readdir(offset uint64, count uint32) (p9.Dirents, error) {
	es, err := hfs.Entries(f.ctx(), f.n)
	if err != nil {
		return nil, errno(err)
	}
	if offset >= uint64(len(es)) {
		return nil, nil
	}
	out := make(p9.Dirents, 0, len(es)-int(offset))
	for k := offset; k < uint64(len(es)); k++ {
		q := qidOf(es[k].Node)
		out = append(out, p9.Dirent{QID: q, Offset: k + 1, Type: q.Type, Name: es[k].Name})
	}
	return out, nil
}

func (f *file) Mkdir(name string, _ p9.FileMode, _ p9.UID, _ p9.GID) (p9.QID, error) {
	if err := f.mayChange(); err != nil {
		return p9.QID{}, err
	}
	c, err := hfs.Mkdir(f.ctx(), f.n, name)
	if err != nil {
		return p9.QID{}, errno(err)
	}
	return qidOf(c), nil
}

// UnlinkAt is rmdir when flags has AT_REMOVEDIR; unlinking a file is
// handed to the tree's rule (fs.Unlink), as over FUSE. 9P does not say
// who asks: the directory counts as being emptied while any fid has it
// open (Linux opens it to read it, as rm -r does).
func (f *file) UnlinkAt(name string, flags uint32) error {
	if err := f.mayChange(); err != nil {
		return err
	}
	c, err := hfs.Lookup(f.ctx(), f.n, name)
	if err != nil {
		return errno(err)
	}
	if err := hfs.MayRemove(f.who, f.n, c); err != nil {
		return errno(err)
	}
	if flags&atRemoveDir == 0 {
		return errno(hfs.Unlink(f.ctx(), f.n, name, f.s.dirOpen(f.n.ID())))
	}
	return errno(hfs.Rmdir(f.ctx(), f.n, name))
}

// mayChange refuses (EACCES) a change of the directory's entries to a
// caller without write and search permission on it, as the kernel
// does before it asks a filesystem.
func (f *file) mayChange() error {
	if !f.n.Mode().IsDir() {
		return linux.ENOTDIR
	}
	return f.may(f.n, hfs.MayWrite|hfs.MayExec)
}

// The tree's refusals (fs.ErrNoChange, fs.ErrNoXattr), once the caller
// may change the directory at all.
var noChange, noXattr = errno(hfs.ErrNoChange), errno(hfs.ErrNoXattr)

func (f *file) refuseChange() error {
	if err := f.mayChange(); err != nil {
		return err
	}
	return noChange
}

func (f *file) RenameAt(string, p9.File, string) error { return f.refuseChange() }
func (f *file) Rename(p9.File, string) error           { return noChange }
func (f *file) Renamed(p9.File, string)                {}

func (f *file) Create(name string, _ p9.OpenFlags, _ p9.FileMode, _ p9.UID, _ p9.GID) (p9.File, p9.QID, uint32, error) {
	if err := f.mayChange(); err != nil {
		return nil, p9.QID{}, 0, err
	}
	return nil, p9.QID{}, 0, errno(hfs.Create(f.ctx(), f.n, name))
}
func (f *file) Symlink(string, string, p9.UID, p9.GID) (p9.QID, error) {
	return p9.QID{}, f.refuseChange()
}
func (f *file) Link(p9.File, string) error { return f.refuseChange() }
func (f *file) Mknod(string, p9.FileMode, uint32, uint32, p9.UID, p9.GID) (p9.QID, error) {
	return p9.QID{}, f.refuseChange()
}
func (f *file) Readlink() (string, error) { return "", linux.EINVAL }

// Locks are accepted and not enforced: the files are synthetic.
func (f *file) Lock(int, p9.LockType, p9.LockFlags, uint64, uint64, string) (p9.LockStatus, error) {
	return p9.LockStatusOK, nil
}

func (f *file) SetXattr(string, []byte, p9.XattrFlags) error { return noXattr }
func (f *file) GetXattr(string) ([]byte, error)              { return nil, noXattr }
func (f *file) ListXattrs() ([]string, error)                { return nil, noXattr }
func (f *file) RemoveXattr(string) error                     { return noXattr }
