package fs

import (
	"context"
	"os"
	"syscall"
	"time"

	"hypefs/internal/errno"
)

// The rules below are the tree's answers to the requests every protocol
// carries alike (stat, open, chmod/chown/truncate/utimes, lookup,
// readdir, mkdir, rmdir, unlink, create). The adapters translate their protocol's request into these
// calls and the answer back, and decide nothing themselves.

// Attr is what stat(2) shows of a node.
type Attr struct {
	Mode     os.FileMode // permission bits (sticky included), plus os.ModeDir for a directory
	Nlink    uint32
	Size     uint64
	Blocks   uint64 // 512-byte blocks
	UID, GID uint32 // owner and group (AccessOf)
	// Mtime is when the content last changed; ctime and atime show the
	// same time (nothing else about a node changes, and reads do not
	// count), so times change only when content does.
	Mtime time.Time
}

// Stat returns a node's attributes; h, if not nil, is a handle of the
// node open in the caller (fstat), which may know better (a log opened
// before its instance was removed keeps its own size).
func Stat(ctx context.Context, n Node, h Handle) Attr {
	acc := AccessOf(n)
	a := Attr{Mode: acc.Mode, UID: acc.UID, GID: acc.GID, Nlink: 1}
	if n.Mode().IsDir() {
		a.Nlink = 2
		if d, ok := n.(Dated); ok {
			a.Mtime = d.Changed()
		}
	} else if f, ok := n.(File); ok {
		size, mtime := f.Stat(ctx)
		if s, ok := h.(StatHandle); ok && h != nil {
			size, mtime = s.Stat()
		}
		a.Size = uint64(size)
		a.Blocks = (a.Size + 511) / 512
		a.Mtime = mtime
	}
	if a.Mtime.IsZero() {
		a.Mtime = started
	}
	return a
}

// started is the time of the daemon's start: the time of what has no
// other (the root, README, version).
var started = time.Now()

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
	Mode     *os.FileMode // chmod: the permission bits asked for
	UID, GID *uint32      // chown, chgrp
	Size     *uint64      // truncate
	Times    bool         // utimes (atime, mtime or both)
	Mtime    time.Time
}

// Setattr applies a change under the tree's rules. A mode or owner that
// is what the node has already is accepted (cp -a and rsync -a set them
// after copying); a real change is refused (EPERM, and the instance's
// error file says so). A truncate is taken by files that accept one (the
// O_TRUNC of a shell's `>` on ctl and config), refused elsewhere (EPERM);
// times are taken by files that accept them, ignored on directories and
// refused on other files (EPERM). A zero Mtime means now.
func Setattr(ctx context.Context, n Node, a SetAttr) error {
	acc := AccessOf(n)
	if a.Mode != nil && a.Mode.Perm() != acc.Mode.Perm() {
		return refuse(n, "chmod", errno.Errorf(syscall.EPERM,
			"modes of hypefs files are fixed: %s is %#o, chmod asked for %#o (hint: cp and rsync without -p/-a copy into the tree)",
			what(n), acc.Mode.Perm(), a.Mode.Perm()))
	}
	if a.UID != nil && *a.UID != acc.UID || a.GID != nil && *a.GID != acc.GID {
		return refuse(n, "chown", errno.Errorf(syscall.EPERM,
			"owners of hypefs files are fixed: %s belongs to %d:%d (hint: cp and rsync without -p/-a copy into the tree)", what(n), acc.UID, acc.GID))
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
// files it has, renamed, linked or made a device (EPERM), nothing is
// unlinked file by file (see Unlink), and no file carries extended
// attributes (ENOTSUP).
const (
	ErrNoChange syscall.Errno = syscall.EPERM
	ErrNoXattr  syscall.Errno = syscall.ENOTSUP
)

// Lookup finds name in the directory n (ENOTDIR if n is not one); the
// follow files are found this way.
func Lookup(ctx context.Context, n Node, name string) (Node, error) {
	d, ok := n.(Dir)
	if !ok {
		return nil, syscall.ENOTDIR
	}
	return d.Lookup(ctx, name)
}

// Entries lists the directory n (ENOTDIR if n is not one) as readdir
// shows it: without its follow files (see Follower), which are found by
// name only.
func Entries(ctx context.Context, n Node) ([]Entry, error) {
	d, ok := n.(Dir)
	if !ok {
		return nil, syscall.ENOTDIR
	}
	es, err := d.Entries(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Entry, 0, len(es))
	for _, e := range es {
		if _, follows := e.Node.(Follower); !follows {
			out = append(out, e)
		}
	}
	return out, nil
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

// Unlink removes name from directory n. Nothing in the tree is removed
// file by file: an instance goes whole with rmdir. But `rm -r` and `find
// -delete` empty a directory before they remove it: an unlink from a
// process that holds n open (emptying) is accepted without effect where
// n lets it (an instance that does not run), so that their final rmdir
// removes the instance. Any other unlink is refused (ErrNoChange), with a
// sentence in the instance's error file.
func Unlink(ctx context.Context, n Node, name string, emptying bool) error {
	if u, ok := n.(Unlinker); ok {
		return u.Unlink(ctx, name, emptying)
	}
	if _, ok := n.(Dir); !ok {
		return syscall.ENOTDIR
	}
	return ErrNoChange
}

// Create refuses a new file called name in directory n (ErrNoChange):
// the tree holds only its own files. In an instance's directory the error
// file says why, and what to use instead.
func Create(ctx context.Context, n Node, name string) error {
	if c, ok := n.(Creater); ok {
		return c.Create(ctx, name)
	}
	if _, ok := n.(Dir); !ok {
		return syscall.ENOTDIR
	}
	return ErrNoChange
}

// refuse records err through n's instance, if n belongs to one.
func refuse(n Node, cause string, err *errno.Error) error {
	if r, ok := n.(refuser); ok && r.refuser() != nil {
		return r.refuser()(cause, err)
	}
	return err
}

// what names a node in a sentence.
func what(n Node) string {
	if nm, ok := n.(interface{ name() string }); ok && nm.name() != "" {
		return nm.name()
	}
	return "the file"
}
