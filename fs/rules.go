package fs

import (
	"context"
	"os"
	"syscall"
	"time"
)

// The rules below are the tree's answers to the requests every protocol
// carries alike (stat, open, chmod/chown/truncate/utimes). The adapters
// translate their protocol's request into these calls and the answer back,
// and decide nothing themselves.

// Attr is what stat(2) shows of a node.
type Attr struct {
	Mode   os.FileMode // permission bits, plus os.ModeDir for a directory
	Nlink  uint32
	Size   uint64
	Blocks uint64 // 512-byte blocks
	Mtime  time.Time
}

// Stat returns a node's attributes. A directory is sized 0 and dated now;
// a file reports its Stat (a file without a time of its own, now).
func Stat(ctx context.Context, n Node) Attr {
	a := Attr{Mode: n.Mode(), Nlink: 1, Mtime: time.Now()}
	if n.Mode().IsDir() {
		a.Nlink = 2
		return a
	}
	if f, ok := n.(File); ok {
		size, mtime := f.Stat(ctx)
		a.Size = uint64(size)
		a.Blocks = (a.Size + 511) / 512
		if !mtime.IsZero() {
			a.Mtime = mtime
		}
	}
	return a
}

// Open opens a file for I/O with open(2) flags. A directory cannot be
// opened as a file (EISDIR); a file without write permission bits cannot
// be opened for writing (EACCES).
func Open(ctx context.Context, n Node, flags int) (Handle, error) {
	f, ok := n.(File)
	if !ok {
		return nil, syscall.EISDIR
	}
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY && f.Mode().Perm()&0o222 == 0 {
		return nil, syscall.EACCES
	}
	return f.Open(ctx, flags)
}

// SetAttr is a change of attributes as a client asks for it.
type SetAttr struct {
	Mode  bool    // chmod
	Owner bool    // chown or chgrp
	Size  *uint64 // truncate
	Times bool    // utimes (atime, mtime or both)
	Mtime time.Time
}

// Setattr applies a change under the tree's rules: modes and owners never
// change (EPERM); a truncate is taken by files that accept one (the
// O_TRUNC of a shell's `>` on ctl and config), refused elsewhere (EPERM);
// times are taken by files that accept them, ignored on directories and
// refused on other files (EPERM). A zero Mtime means now.
func Setattr(ctx context.Context, n Node, a SetAttr) error {
	if a.Mode || a.Owner {
		return syscall.EPERM
	}
	if a.Size != nil {
		t, ok := n.(Truncater)
		if !ok {
			return syscall.EPERM
		}
		if err := t.Truncate(ctx, *a.Size); err != nil {
			return err
		}
	}
	if !a.Times {
		return nil
	}
	t, ok := n.(Toucher)
	if !ok {
		if n.Mode().IsDir() {
			return nil
		}
		return syscall.EPERM
	}
	mt := a.Mtime
	if mt.IsZero() {
		mt = time.Now()
	}
	return t.Touch(mt)
}

// The tree holds no free-form files: nothing can be created beside the
// files it has, unlinked, renamed, linked or made a device (EPERM), and
// no file carries extended attributes (ENOTSUP).
const (
	ErrNoChange syscall.Errno = syscall.EPERM
	ErrNoXattr  syscall.Errno = syscall.ENOTSUP
)

// Lookup finds name in the directory n (ENOTDIR if n is not one).
func Lookup(ctx context.Context, n Node, name string) (Node, error) {
	d, ok := n.(Dir)
	if !ok {
		return nil, syscall.ENOTDIR
	}
	return d.Lookup(ctx, name)
}

// Entries lists the directory n (ENOTDIR if n is not one).
func Entries(ctx context.Context, n Node) ([]Entry, error) {
	d, ok := n.(Dir)
	if !ok {
		return nil, syscall.ENOTDIR
	}
	return d.Entries(ctx)
}

// Mkdir makes name in n: only a directory whose children users make
// (instances/) takes it; anywhere else it is ErrNoChange.
func Mkdir(ctx context.Context, n Node, name string) (Node, error) {
	d, ok := n.(MkdirDir)
	if !ok {
		return nil, ErrNoChange
	}
	return d.Mkdir(ctx, name)
}

// Rmdir removes name from n, under Mkdir's rule.
func Rmdir(ctx context.Context, n Node, name string) error {
	d, ok := n.(MkdirDir)
	if !ok {
		return ErrNoChange
	}
	return d.Rmdir(ctx, name)
}
