package fs

import (
	"context"
	"os"
	"syscall"
)

// Who may do what (docs/security.md). Every node has an owner, a group
// and permission bits, which stat shows as they are and which decide
// every access: over FUSE the kernel checks them (default_permissions),
// over 9P the adapter does, with Permitted and MayRemove below.
//
//   - The tree belongs to root and to the daemon's group (--group, hypefs
//     by default): members may list it, read what is shared, make
//     instances and pull images; anyone else may not even enter it.
//   - An instance belongs to the user who made it: its directory and its
//     files carry that user's uid. The owner (and root) may configure,
//     control, type into, read the console and logs of, and remove it;
//     other members may list it and read its status, info, error, exit
//     and events.
//   - instances/ is sticky, as /tmp is: members make instances there,
//     but only an instance's owner (or root) may remove it.
//   - Without the group (it does not exist on the host), the tree is
//     root's alone: the group's bits are dropped from every mode.
//
// The modes are in one place, here; a node added later to an instance
// follows instanceMode's rule (owner only) unless listed.
const (
	modeRootDir      = os.ModeDir | 0o750
	modeInstancesDir = os.ModeDir | os.ModeSticky | 0o770
	modeShared       = 0o440 // README, version, host, /events, images' files
	modeImagesDir    = os.ModeDir | 0o750
	modeImagesCtl    = 0o660 // members pull and remove images
	modeInstanceDir  = os.ModeDir | 0o750
)

// instanceModes are the modes of an instance's files: what members may
// read is 0440 (0640 where the owner writes); the config (it holds the
// environment), the console and the logs are the owner's alone.
var instanceModes = map[string]os.FileMode{
	"config":  0o600,
	"ctl":     0o640,
	"console": 0o600,
	"log":     0o400,
	"vmm.log": 0o400,
	"status":  0o440,
	"info":    0o440,
	"error":   0o440,
	"exit":    0o440,
	"events":  0o440,
}

// instanceMode is the mode of the instance file or directory called name,
// of current mode cur: as listed, else the owner's alone (what a new
// kind of file or directory gets unless someone decides otherwise).
func instanceMode(name string, cur os.FileMode) os.FileMode {
	if name == "" {
		return modeInstanceDir
	}
	if m, ok := instanceModes[name]; ok {
		return m
	}
	if cur.IsDir() {
		return os.ModeDir | 0o700
	}
	return cur.Perm() & 0o600
}

// Ownership is who a node belongs to: its owner and group. Nodes of one
// instance share one; the tree's other nodes share the tree's.
type Ownership struct {
	UID, GID uint32
	// noGroup: the daemon's group does not exist; group bits are dropped.
	noGroup bool
}

// Owned is a node that knows its Ownership.
type Owned interface {
	Ownership() *Ownership
}

// rootOwned is root's, alone: what images/ has until the tree adopts it.
var rootOwned = &Ownership{noGroup: true}

// Access is what a node allows, as stat shows it.
type Access struct {
	UID, GID uint32
	Mode     os.FileMode // type bits and permission bits
}

// AccessOf is the one answer to "who owns n and what may they do". A node
// outside any tree's ownership is root's, with the mode it has.
func AccessOf(n Node) Access {
	mode := n.Mode()
	on, ok := n.(Owned)
	if !ok || on.Ownership() == nil {
		return Access{Mode: mode}
	}
	o := on.Ownership()
	if o.noGroup {
		mode &^= 0o070
	}
	return Access{UID: o.UID, GID: o.GID, Mode: mode}
}

// Caller is who makes a request: over FUSE the calling process's uid and
// gid (the kernel checks groups itself), over 9P the attach user with
// its groups.
type Caller struct {
	UID, GID uint32
	Groups   []uint32
}

// Root reports whether c is root, who may do anything.
func (c Caller) Root() bool { return c.UID == 0 }

// in reports whether c is in group gid.
func (c Caller) in(gid uint32) bool {
	if c.GID == gid {
		return true
	}
	for _, g := range c.Groups {
		if g == gid {
			return true
		}
	}
	return false
}

type callerKey struct{}

// WithCaller returns ctx carrying c: adapters call the tree with it.
func WithCaller(ctx context.Context, c Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// CallerOf is the caller ctx carries; without one (the daemon itself,
// tests calling the tree directly) the caller is root.
func CallerOf(ctx context.Context) Caller {
	c, _ := ctx.Value(callerKey{}).(Caller)
	return c
}

// Permission bits asked of a node, as access(2) has them.
const (
	MayRead  = 4
	MayWrite = 2
	MayExec  = 1
)

// Permitted reports whether c may access n for want (MayRead, MayWrite,
// MayExec, or'ed): the kernel's rule (generic_permission) for those who
// have no kernel to ask (9P). Root may read and write anything and enter
// any directory.
func Permitted(c Caller, n Node, want uint32) bool {
	a := AccessOf(n)
	perm := uint32(a.Mode.Perm())
	if c.Root() {
		if want&MayExec == 0 || a.Mode.IsDir() {
			return true
		}
		return perm&0o111 != 0
	}
	var bits uint32
	switch {
	case c.UID == a.UID:
		bits = perm >> 6
	case c.in(a.GID):
		bits = perm >> 3
	default:
		bits = perm
	}
	return bits&want == want
}

// MayRemove says whether c may remove child from dir (rmdir), as the
// kernel does: EACCES without write and search permission on dir; EPERM,
// dir being sticky, unless c owns the child or dir (or is root); nil when
// it may.
func MayRemove(c Caller, dir, child Node) error {
	if !Permitted(c, dir, MayWrite|MayExec) {
		return syscall.EACCES
	}
	d := AccessOf(dir)
	if d.Mode&os.ModeSticky == 0 || c.Root() || c.UID == d.UID || c.UID == AccessOf(child).UID {
		return nil
	}
	return syscall.EPERM
}

// own gives n (and, for a fixed directory, every node below it) the
// ownership o and, through mode, its permission bits.
func own(n Node, o *Ownership, mode func(name string, cur os.FileMode) os.FileMode, name string) {
	if b, ok := n.(interface{ setAccess(*Ownership, os.FileMode) }); ok {
		b.setAccess(o, mode(name, n.Mode()))
	}
	if a, ok := n.(adopter); ok {
		a.adopt(o)
	}
	if d, ok := n.(fixedLister); ok {
		for _, e := range d.fixedEntries() {
			own(e.Node, o, mode, e.Name)
		}
	}
}

// rootMode is the mode of the tree's own nodes: the root (name ""),
// instances/, images/, and the shared files.
func rootMode(name string, cur os.FileMode) os.FileMode {
	switch {
	case name == "":
		return modeRootDir
	case name == InstancesName:
		return modeInstancesDir
	case cur.IsDir():
		return modeImagesDir
	}
	return modeShared
}

// fixedLister is a directory of fixed entries (staticDir and what embeds it).
type fixedLister interface {
	fixedEntries() []Entry
}

// adopter is a node that makes nodes of its own later (images/): they
// get its ownership.
type adopter interface {
	adopt(o *Ownership)
}
