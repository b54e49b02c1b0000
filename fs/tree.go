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

	"hypefs/backend/host"
	"hypefs/backend/instance"
)

// Tree is the whole hypefs tree over one instance manager.
type Tree struct {
	m       *instance.Manager
	version string
	root    *staticDir

	mu   sync.Mutex
	dirs map[*instance.Instance]*instanceDir

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
	case ev.State == instance.New:
		c = Change{Made, InstancePath(ev.Instance)}
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

// Watch registers fn to be called with every change. fn must not block
// for long.
func (t *Tree) Watch(fn func(Change)) {
	t.watchMu.Lock()
	t.watchers = append(t.watchers, fn)
	t.watchMu.Unlock()
}

// New builds the tree.
func New(m *instance.Manager, version string) *Tree {
	t := &Tree{m: m, version: version, dirs: map[*instance.Instance]*instanceDir{}, hub: NewHub()}
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
		{"events", NewEventsFile(t.hub, "")},
	}}
	sort.Slice(t.root.entries, func(a, b int) bool { return t.root.entries[a].Name < t.root.entries[b].Name })
	return t
}

// AddRoot adds a node at the root (before the tree is served), e.g. the
// image store's "images" directory.
func (t *Tree) AddRoot(name string, n Node) {
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

// Fixed marks staticDir as a FixedDir.
func (d *staticDir) Fixed() {}

// instancesDir lists the manager's instances; mkdir and rmdir create and
// delete them.
type instancesDir struct {
	base
	t *Tree
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

func (d *instancesDir) Mkdir(_ context.Context, name string) (Node, error) {
	i, err := d.t.m.Create(name)
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
	t.dirs[i] = d
	return d
}

type instanceDir struct {
	staticDir
	i *instance.Instance
}

func newInstanceDir(i *instance.Instance, hub *Hub) *instanceDir {
	d := &instanceDir{staticDir: staticDir{base: newBase(os.ModeDir | 0o755)}, i: i}
	d.entries = []Entry{
		{"config", NewDocFile(instance.MaxConfig,
			func(context.Context) []byte { return i.ConfigJSON() },
			jsonComplete,
			func(_ context.Context, doc []byte) error { return i.SetConfig(doc) })},
		{"console", NewConsoleFile(
			func() (string, bool) {
				st := i.State()
				return i.ConsoleSocket(), st == instance.Running || st == instance.Booting || st == instance.Paused || st == instance.Stopping
			},
			func(msg string) error { return i.Refuse(syscall.EIO, msg) })},
		{"ctl", NewCtlFile(0o644,
			func(context.Context) []byte { return line(strings.Join(i.ValidCommands(), "\n")) },
			func(_ context.Context, b []byte) error { return i.Ctl(string(b)) })},
		{"error", NewGenFile(func(context.Context) []byte { return line(i.ErrorText()) })},
		{"events", NewEventsFile(hub, i.Name())},
		{"info", NewGenFile(func(context.Context) []byte { return jsonLine(i.Info()) })},
		{"log", NewBackedFile(i.LogPath())},
		{StatusName, NewGenFile(func(context.Context) []byte { return line(i.State()) }).WithMtime(i.StateChanged)},
		{"exit", NewGenFile(func(context.Context) []byte {
			if code, ok := i.GuestExit(); ok {
				return line(strconv.Itoa(code))
			}
			return nil
		})},
		{"vmm.log", NewBackedFile(i.VMMLogPath())},
	}
	sort.Slice(d.entries, func(a, b int) bool { return d.entries[a].Name < d.entries[b].Name })
	return d
}

// jsonComplete says whether a config write holds a whole document: valid
// JSON, or JSON broken in a way more bytes cannot mend (so the write
// itself fails). Only a document cut short (the decoder runs out of
// input inside its first value) waits for more writes.
func jsonComplete(doc []byte) bool {
	doc = bytes.TrimSpace(doc)
	if len(doc) == 0 {
		return false
	}
	var v json.RawMessage
	err := json.NewDecoder(bytes.NewReader(doc)).Decode(&v)
	return !errors.Is(err, io.ErrUnexpectedEOF)
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
