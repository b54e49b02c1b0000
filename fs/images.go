package fs

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"syscall"

	"hypefs/backend/image"
)

// NewImagesDir builds the images/ directory over an image store:
//
//	images/ctl                   write "pull REF" or "rm REF"; read lists the commands
//	images/error                 the last ctl error as a sentence; empty if none
//	images/REGISTRY/REPO…/TAG/   one image: ref, digest, size, config, status, progress, error
func NewImagesDir(s *image.Store) Dir {
	r := &imagesRoot{s: s, nodes: map[string]Node{}, own: rootOwned}
	r.ctl = NewCtlFile(modeImagesCtl,
		func(context.Context) []byte { return []byte("pull REF\nrm REF\n") },
		func(ctx context.Context, b []byte) error { return s.Ctl(ctx, string(b), CallerOf(ctx).UID) })
	r.errf = NewGenFile(func(context.Context) []byte { return line(s.LastError()) })
	r.top = &imagesDir{base: newBase(modeImagesDir), r: r}
	return r.top
}

// adopt gives images/ and every node it makes the tree's ownership.
func (d *imagesDir) adopt(o *Ownership) {
	r := d.r
	r.mu.Lock()
	defer r.mu.Unlock()
	r.own = o
	r.ctl.(*CtlFile).setAccess(o, modeImagesCtl)
	r.errf.(*GenFile).setAccess(o, modeShared)
	r.top.setAccess(o, modeImagesDir)
}

type imagesRoot struct {
	s         *image.Store
	ctl, errf Node
	top       *imagesDir
	mu        sync.Mutex
	nodes     map[string]Node // by path under images/, so inodes stay put
	own       *Ownership      // the tree's: images are shared read-only
}

// paths maps each entry's directory path (REGISTRY/REPO…/TAG) to its ref.
func (r *imagesRoot) paths() map[string]string {
	out := map[string]string{}
	for _, e := range r.s.Entries() {
		if p := imagePath(e.Ref); p != "" {
			out[p] = e.Ref
		}
	}
	return out
}

// imagePath is the directory of a canonical reference: registry, the
// repository's components, then the tag (or the digest).
func imagePath(ref string) string {
	rr, err := image.ParseRef(ref)
	if err != nil {
		return ""
	}
	id := rr.Identifier()
	return rr.Context().RegistryStr() + "/" + rr.Context().RepositoryStr() + "/" + id
}

// imagesDir is images/ or one of the directories under it that lead to
// image directories.
type imagesDir struct {
	base
	r      *imagesRoot
	prefix string // "" for images/ itself, else "REGISTRY[/REPO…]"
}

func (d *imagesDir) child(name string) string {
	if d.prefix == "" {
		return name
	}
	return d.prefix + "/" + name
}

func (d *imagesDir) Lookup(_ context.Context, name string) (Node, error) {
	if d.prefix == "" {
		switch name {
		case "ctl":
			return d.r.ctl, nil
		case "error":
			return d.r.errf, nil
		}
	}
	p := d.child(name)
	paths := d.r.paths()
	if ref, ok := paths[p]; ok {
		return d.r.imageNode(p, ref), nil
	}
	for q := range paths {
		if strings.HasPrefix(q, p+"/") {
			return d.r.dirNode(p), nil
		}
	}
	return nil, syscall.ENOENT
}

func (d *imagesDir) Entries(ctx context.Context) ([]Entry, error) {
	var out []Entry
	if d.prefix == "" {
		out = append(out, Entry{"ctl", d.r.ctl}, Entry{"error", d.r.errf})
	}
	seen := map[string]bool{}
	pre := d.child("")
	for q := range d.r.paths() {
		if !strings.HasPrefix(q, pre) {
			continue
		}
		name, _, _ := strings.Cut(q[len(pre):], "/")
		if name == "" || seen[name] {
			continue
		}
		seen[name] = true
		if n, err := d.Lookup(ctx, name); err == nil {
			out = append(out, Entry{name, n})
		}
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Name < out[b].Name })
	return out, nil
}

func (r *imagesRoot) dirNode(p string) Node {
	r.mu.Lock()
	defer r.mu.Unlock()
	if n, ok := r.nodes[p]; ok {
		if _, isDir := n.(*imagesDir); isDir {
			return n
		}
	}
	n := &imagesDir{base: newBase(modeImagesDir), r: r, prefix: p}
	n.own = r.own
	r.nodes[p] = n
	return n
}

func (r *imagesRoot) imageNode(p, ref string) Node {
	r.mu.Lock()
	defer r.mu.Unlock()
	if n, ok := r.nodes[p]; ok {
		if _, isImg := n.(*staticDir); isImg {
			return n
		}
	}
	s := r.s
	get := func() image.Entry { e, _ := s.Lookup(ref); return e }
	d := &staticDir{base: newBase(modeImagesDir), entries: []Entry{
		{"config", NewGenFile(func(context.Context) []byte {
			c := get().Config
			if len(c) > 0 && c[len(c)-1] != '\n' {
				c = append(append([]byte{}, c...), '\n')
			}
			return c
		})},
		{"digest", NewGenFile(func(context.Context) []byte { return line(get().Digest) })},
		{"error", NewGenFile(func(context.Context) []byte { return line(get().Err) })},
		{"progress", NewGenFile(func(context.Context) []byte {
			e := get()
			return line(fmt.Sprintf("%d/%d", e.Done, e.Total))
		})},
		{"ref", NewGenFile(func(context.Context) []byte { return line(ref) })},
		{"size", NewGenFile(func(context.Context) []byte {
			e := get()
			if e.Status != image.Ready {
				return nil
			}
			return line(fmt.Sprint(e.Size))
		})},
		{"status", NewGenFile(func(context.Context) []byte { return line(get().Status) })},
	}}
	own(d, r.own, func(_ string, cur os.FileMode) os.FileMode {
		if cur.IsDir() {
			return modeImagesDir
		}
		return modeShared
	}, "")
	r.nodes[p] = d
	return d
}
