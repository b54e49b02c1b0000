// Package fs is hypefs' file tree, independent of the protocol that serves
// it. Adapters (fs/fusefs for FUSE, fs/ninep for 9P2000.L) translate their
// protocol's requests into the rules in rules.go (Lookup, Entries, Stat,
// Open, Setattr, Mkdir, Rmdir, and the refusals ErrNoChange and
// ErrNoXattr) and the nodes' handles; every semantic decision (what a
// read returns, which errno a write gets, which attribute may change) is
// made here, once.
//
// Errors are syscall.Errno values, or refusals (internal/errno.Error) that
// carry one; anything else is EIO.
//
// Deadlocks to avoid (from go-fuse's list): the daemon must never exec
// from, chdir into or mmap its own mount, and must not send kernel
// notifications from inside a request for a related node.
package fs

import (
	"context"
	"errors"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"hypefs/internal/errno"
)

// Node is a file or a directory.
type Node interface {
	// ID is unique for the life of the process; adapters use it as the
	// inode number.
	ID() uint64
	// Mode is the permission bits plus os.ModeDir for directories.
	Mode() os.FileMode
}

// Entry is a named child.
type Entry struct {
	Name string
	Node Node
}

// Dir is a directory.
type Dir interface {
	Node
	Lookup(ctx context.Context, name string) (Node, error)
	Entries(ctx context.Context) ([]Entry, error)
}

// FixedDir is a directory whose entries never change while it exists;
// adapters may let clients cache its names.
type FixedDir interface {
	Dir
	Fixed()
}

// MkdirDir is a directory whose children users create and remove.
type MkdirDir interface {
	Dir
	Mkdir(ctx context.Context, name string) (Node, error)
	Rmdir(ctx context.Context, name string) error
}

// File is a regular file.
type File interface {
	Node
	// Stat returns the size and modification time to report.
	Stat(ctx context.Context) (size int64, mtime time.Time)
	Open(ctx context.Context, flags int) (Handle, error)
}

// Dated is a directory that knows when its entries last changed (its
// mtime); other directories show the daemon's start.
type Dated interface {
	Changed() time.Time
}

// Follower is a follow file (console, events): a read blocks until
// something happens. Directories do not list them (they are found by
// name, as /proc's thread ids are), so that cp -r, tar, zip, rsync,
// grep -r, find, du, wc and file managers never meet a read that does not
// end; `cat console` still follows.
type Follower interface {
	Follows()
}

// Unlinker is a directory that answers unlink itself (see Unlink).
type Unlinker interface {
	Unlink(ctx context.Context, name string, emptying bool) error
}

// Creater is a directory that answers the creation of a file itself
// (see Create).
type Creater interface {
	Create(ctx context.Context, name string) error
}

// StatHandle is an open handle that knows its file's size and time
// better than the node (see Stat).
type StatHandle interface {
	Stat() (size int64, mtime time.Time)
}

// Truncater is a file that accepts a truncate (the O_TRUNC of `echo x >`).
type Truncater interface {
	Truncate(ctx context.Context, size uint64) error
}

// Toucher is a file whose times may be set (utimes).
type Toucher interface {
	Touch(mtime time.Time) error
}

// Handle is an open file.
type Handle interface {
	// Read reads at off. A follow handle may block until data arrives or
	// ctx ends (then it returns EINTR).
	Read(ctx context.Context, p []byte, off int64) (int, error)
	Write(ctx context.Context, p []byte, off int64) (int, error)
	// Flush runs on every close(2) of a descriptor; its error is close's.
	Flush(ctx context.Context) error
	Release()
	// DirectIO asks the adapter to bypass the page cache.
	DirectIO() bool
	// Stream marks a handle without offsets (console, events).
	Stream() bool
}

// Backed is a handle that reads a real file; Fd returns its descriptor.
type Backed interface {
	Fd() (int, bool)
}

var lastID atomic.Uint64

// NewID returns a fresh node id. Ids 1 (the root) and below are reserved.
func NewID() uint64 { return lastID.Add(1) + 1 }

// Errno maps an error to the errno to return.
func Errno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return syscall.EINTR
	}
	return errno.Of(err)
}
