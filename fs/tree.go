package fs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"hypefs/backend/host"
	"hypefs/backend/instance"
	"hypefs/internal/errno"
)

// Tree is the whole hypefs tree over one instance manager.
type Tree struct {
	m       *instance.Manager
	version string
	root    *staticDir
	own     *Ownership // root's and the daemon's group (ShareWith)

	mu      sync.Mutex
	dirs    map[*instance.Instance]*instanceDir
	changed time.Time // when an instance last came or went

	hostExtra []func() []byte

	hub      *Hub
	watchMu  sync.Mutex
	watchers []func(Change)
}

// Names of the tree that the adapters need to reach on their own mount.
const (
	InstancesName = "instances"
	StatusName    = "status"
)

// InstancePath is an instance's directory, relative to the root.
func InstancePath(name string) string { return InstancesName + "/" + name }

// Change is a change of the tree made other than through an adapter's own
// request (a state change, an instance made over 9P), which an adapter
// may have to show its kernel's watchers (FUSE: see fusefs.Waker).
type Change struct {
	Kind ChangeKind
	Path string // slash-separated, relative to the root
}

// ChangeKind says what happened at a Change's path.
type ChangeKind int

const (
	Made    ChangeKind = iota + 1 // a directory appeared
	Removed                       // a directory went
	Touched                       // a file's contents and mtime changed
)

// Event takes an instance event from the manager: it is published to the
// events files and handed to the watchers as the change of the tree it
// is. Call it from the manager's OnEvent.
func (t *Tree) Event(ev instance.Event) {
	t.hub.Publish(ev)
	var c Change
	switch {
	case ev.Deleted:
		c = Change{Removed, InstancePath(ev.Instance)}
		t.touchInstances(ev.Time)
	case ev.State == instance.New:
		c = Change{Made, InstancePath(ev.Instance)}
		t.touchInstances(ev.Time)
	case ev.State != "":
		c = Change{Touched, InstancePath(ev.Instance) + "/" + StatusName}
	default:
		return // a refusal: only the error file changed
	}
	t.watchMu.Lock()
	ws := append([]func(Change){}, t.watchers...)
	t.watchMu.Unlock()
	for _, w := range ws {
		w(c)
	}
}

// touchInstances records that instances/ changed at when.
func (t *Tree) touchInstances(when time.Time) {
	t.mu.Lock()
	if when.After(t.changed) {
		t.changed = when
	}
	t.mu.Unlock()
}

// Watch registers fn to be called with every change. fn must not block
// for long.
func (t *Tree) Watch(fn func(Change)) {
	t.watchMu.Lock()
	t.watchers = append(t.watchers, fn)
	t.watchMu.Unlock()
}

// New builds the tree.
func New(m *instance.Manager, version string) *Tree {
	t := &Tree{m: m, version: version, dirs: map[*instance.Instance]*instanceDir{}, hub: NewHub(),
		own: &Ownership{noGroup: true}}
	t.root = &staticDir{base: base{id: 1, mode: os.ModeDir | 0o755}, entries: []Entry{
		{"README", NewGenFile(func(context.Context) []byte { return []byte(manual) })},
		{"version", NewGenFile(func(context.Context) []byte { return line(t.version) })},
		{"host", NewGenFile(func(context.Context) []byte {
			b := hostFile()
			for _, f := range t.hostExtra {
				b = append(b, f()...)
			}
			return b
		})},
		{InstancesName, &instancesDir{base: newBase(os.ModeDir | 0o755), t: t}},
		{"events", NewEventsFile(t.hub, "", nil)},
	}}
	t.root.entries[len(t.root.entries)-1].Node.(*EventsFile).setMtime(t.hub.Last)
	sort.Slice(t.root.entries, func(a, b int) bool { return t.root.entries[a].Name < t.root.entries[b].Name })
	own(t.root, t.own, rootMode, "")
	return t
}

// ShareWith lets the members of group gid use the tree (see access.go);
// without it the tree is root's alone. Call it before the tree is served.
func (t *Tree) ShareWith(gid uint32) {
	t.own.GID, t.own.noGroup = gid, false
}

// Group is the daemon's group, if the tree is shared with one.
func (t *Tree) Group() (gid uint32, ok bool) { return t.own.GID, !t.own.noGroup }

// InstanceOwnership is who an instance's nodes belong to: its owner, and
// the daemon's group. Nodes added to an instance's directory take it.
func (t *Tree) InstanceOwnership(i *instance.Instance) *Ownership {
	o := i.Owner()
	return &Ownership{UID: o.UID, GID: t.own.GID, noGroup: t.own.noGroup}
}

// AddRoot adds a node at the root (before the tree is served), e.g. the
// image store's "images" directory; it is the tree's, with the modes of
// rootMode.
func (t *Tree) AddRoot(name string, n Node) {
	own(n, t.own, rootMode, name)
	t.root.entries = append(t.root.entries, Entry{name, n})
	sort.Slice(t.root.entries, func(a, b int) bool { return t.root.entries[a].Name < t.root.entries[b].Name })
}

// AddHostFacts adds lines ("key value\n") to /host, e.g. the bridge and
// subnet of guest networking.
func (t *Tree) AddHostFacts(f func() []byte) { t.hostExtra = append(t.hostExtra, f) }

// Root is the tree's root directory (id 1).
func (t *Tree) Root() Dir { return t.root }

type staticDir struct {
	base
	entries []Entry
}

func (d *staticDir) Lookup(_ context.Context, name string) (Node, error) {
	for _, e := range d.entries {
		if e.Name == name {
			return e.Node, nil
		}
	}
	return nil, syscall.ENOENT
}

func (d *staticDir) Entries(context.Context) ([]Entry, error) { return d.entries, nil }

func (d *staticDir) fixedEntries() []Entry { return d.entries }

// Fixed marks staticDir as a FixedDir.
func (d *staticDir) Fixed() {}

// Changed is the directory's mtime: its entries never change.
func (d *staticDir) Changed() time.Time { return d.changed() }

// instancesDir lists the manager's instances; mkdir and rmdir create and
// delete them.
type instancesDir struct {
	base
	t *Tree
}

// Changed is when an instance last came or went (or the daemon started).
func (d *instancesDir) Changed() time.Time {
	d.t.mu.Lock()
	defer d.t.mu.Unlock()
	return d.t.changed
}

func (d *instancesDir) Lookup(_ context.Context, name string) (Node, error) {
	i := d.t.m.Get(name)
	if i == nil {
		return nil, syscall.ENOENT
	}
	return d.t.dirFor(i), nil
}

func (d *instancesDir) Entries(context.Context) ([]Entry, error) {
	names := d.t.m.Names()
	out := make([]Entry, 0, len(names))
	for _, n := range names {
		if i := d.t.m.Get(n); i != nil {
			out = append(out, Entry{Name: n, Node: d.t.dirFor(i)})
		}
	}
	return out, nil
}

// Mkdir makes an instance that belongs to the caller.
func (d *instancesDir) Mkdir(ctx context.Context, name string) (Node, error) {
	c := CallerOf(ctx)
	i, err := d.t.m.Create(name, instance.Owner{UID: c.UID, GID: c.GID})
	if err != nil {
		return nil, err
	}
	return d.t.dirFor(i), nil
}

func (d *instancesDir) Rmdir(_ context.Context, name string) error {
	i, err := d.t.m.Delete(name)
	if err != nil {
		return err
	}
	d.t.mu.Lock()
	delete(d.t.dirs, i)
	d.t.mu.Unlock()
	return nil
}

// dirFor returns the one directory node of an instance. A new instance of
// the same name gets a new node, so a stale inode never shows its files.
func (t *Tree) dirFor(i *instance.Instance) *instanceDir {
	t.mu.Lock()
	defer t.mu.Unlock()
	if d, ok := t.dirs[i]; ok {
		return d
	}
	d := newInstanceDir(i, t.hub)
	own(d, t.InstanceOwnership(i), instanceMode, "")
	t.dirs[i] = d
	return d
}

type instanceDir struct {
	staticDir
	i *instance.Instance
}

// newInstanceDir makes an instance's directory. Every file's mtime is when
// what it shows last changed (see docs/filesystem.md), and a refusal made
// by the tree for one of them is recorded in the instance's error file.
func newInstanceDir(i *instance.Instance, hub *Hub) *instanceDir {
	d := &instanceDir{staticDir: staticDir{base: newBase(os.ModeDir | 0o755)}, i: i}
	d.mtime = i.Created
	config := NewDocFile(instance.MaxConfig,
		func(context.Context) []byte { return i.ConfigJSON() },
		jsonSplit,
		func(_ context.Context, doc []byte) error { return i.SetConfig(doc) })
	config.WithMtime(i.ConfigChanged)
	ctl := NewCtlFile(0o644, func(context.Context) []byte { return ctlText(i) },
		func(_ context.Context, b []byte) error { return i.Ctl(string(b)) })
	ctl.WithMtime(i.StateChanged)
	console := NewConsoleFile(i.Console)
	console.setMtime(i.StateChanged)
	events := NewEventsFile(hub, i.Name(), i.Gone)
	events.setMtime(i.StateChanged)
	d.entries = []Entry{
		{"config", config},
		{"console", console},
		{"ctl", ctl},
		{"error", NewGenFile(func(context.Context) []byte { return line(i.ErrorText()) }).WithMtime(i.ErrorTime)},
		{"events", events},
		{"info", NewGenFile(func(ctx context.Context) []byte { return jsonLine(infoFor(CallerOf(ctx), i)) }).WithMtime(i.InfoChanged)},
		{"log", NewBackedFile(i.LogPath(), i.Gone)},
		{StatusName, NewGenFile(func(context.Context) []byte { return line(i.State()) }).WithMtime(i.StateChanged)},
		{"exit", NewGenFile(func(context.Context) []byte {
			if code, ok := i.GuestExit(); ok {
				return line(strconv.Itoa(code))
			}
			return nil
		}).WithMtime(i.ExitTime)},
		{"vmm.log", NewBackedFile(i.VMMLogPath(), i.Gone)},
	}
	for _, e := range d.entries {
		e.Node.(timed).setOwner(e.Name, i.Refuse)
	}
	sort.Slice(d.entries, func(a, b int) bool { return d.entries[a].Name < d.entries[b].Name })
	return d
}

// infoFor is what info shows caller: all of it to the owner and root;
// to other members, not the shim's sockets, which reach the VM's API and
// vsock (they are root's on disk anyway).
func infoFor(c Caller, i *instance.Instance) instance.Info {
	in := i.Info()
	if !c.Root() && c.UID != i.Owner().UID {
		in.APISocket, in.VsockSocket = "", ""
	}
	return in
}

// ctlText is what ctl reads: the commands valid now, one per line, and
// for an instance without a config, how to boot it.
func ctlText(i *instance.Instance) []byte {
	b := line(strings.Join(i.ValidCommands(), "\n"))
	if i.State() == instance.New {
		b = append(b, "# no config yet: write one to boot (echo '{}' > config)\n"...)
	}
	return b
}

// Unlink answers rm and find -delete in an instance's directory (see
// fs.Unlink): emptying the directory of an instance that does not run is
// accepted and changes nothing, so that the rmdir that follows removes
// the instance; of a running one it is refused with EBUSY. Any other
// unlink is refused with EPERM.
func (d *instanceDir) Unlink(ctx context.Context, name string, emptying bool) error {
	if _, err := d.Lookup(ctx, name); err != nil {
		return err
	}
	cause := fmt.Sprintf("unlink %q", name)
	switch {
	case emptying && !d.i.Running():
		return nil
	case emptying:
		return d.i.Refuse(cause, errno.Errorf(syscall.EBUSY,
			"instance %q is %s: rm -r cannot remove it while it runs (hint: echo kill > ctl, or shutdown, then rm -r again)", d.i.Name(), d.i.State()))
	}
	return d.i.Refuse(cause, errno.Errorf(syscall.EPERM,
		"%s cannot be removed on its own: an instance's files go with the instance (hint: rmdir instances/%s, or rm -r, removes the whole instance)", name, d.i.Name()))
}

// Create refuses a new file in an instance's directory, and says what to
// use instead: sed -i and editors that save through a temporary file next
// to the original cannot work here.
func (d *instanceDir) Create(_ context.Context, name string) error {
	return d.i.Refuse(fmt.Sprintf("create %q", name), errno.Errorf(syscall.EPERM,
		"%q cannot be created: an instance's directory holds only its own files, so programs that save through a temporary file next to the original (sed -i, some editors) fail here (hint: vim and ed save in place; or jq '...' config > config.new && cat config.new > config)", name))
}

// jsonSplit finds the first document in what a config's open received:
// its length, and whether it is complete. A document is complete when it
// is a JSON value, or broken in a way more bytes cannot mend (so the
// write itself fails); only a value cut short (the decoder runs out of
// input inside it) waits for more writes.
func jsonSplit(buf []byte) (int, bool) {
	if len(bytes.TrimSpace(buf)) == 0 {
		return 0, false
	}
	dec := json.NewDecoder(bytes.NewReader(buf))
	var v json.RawMessage
	err := dec.Decode(&v)
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF):
		return 0, false
	case err != nil:
		return len(buf), true
	}
	return int(dec.InputOffset()), true
}

func jsonLine(v any) []byte {
	b, _ := json.MarshalIndent(v, "", "  ")
	return append(b, '\n')
}

func hostFile() []byte {
	f := host.Probe()
	var b bytes.Buffer
	fmt.Fprintf(&b, "os %s\narch %s\ncpus %d\nmemory %d\naccel %s\naccel_reason %s\nhypervisor %s\n",
		f.OS, f.Arch, f.CPUs, f.MemoryBytes, f.Accel, f.AccelReason, f.Hypervisor)
	return b.Bytes()
}
