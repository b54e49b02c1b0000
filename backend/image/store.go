// Package image is hypefs' OCI image store: it pulls images with
// go-containerregistry (the guest's platform, indexes followed, digests
// verified, auth from the user's docker config), flattens their layers
// into one tree and converts it to a read-only EROFS disk shared by every
// instance of the same image digest. See docs/images.md.
//
//	DATA/images/
//	    refs.json                  reference -> image digest
//	    sha256/HEX/                one image, appears by rename, complete or absent
//	        rootfs.erofs           the flattened root filesystem (read-only base disk)
//	        config.json            the image's OCI config, as the registry sent it
//	        image.json             digest, sizes, platform, time pulled
//	    tmp/                       work in progress; emptied at start
package image

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"hypefs/backend/layout"
	"hypefs/internal/atomicfile"
	"hypefs/internal/errno"
)

// Image states, as the status file shows them.
const (
	Pulling    = "pulling"
	Converting = "converting"
	Ready      = "ready"
	Failed     = "failed"
)

// Entry is one reference the store knows: pulled, being pulled, or
// failed. Copies are handed out; the store keeps the original.
type Entry struct {
	Ref     string `json:"ref"`    // canonical, e.g. index.docker.io/library/alpine:3.20
	Digest  string `json:"digest"` // the platform image's manifest digest
	Size    int64  `json:"size"`   // bytes of the flattened root filesystem's files
	Config  []byte `json:"-"`      // the OCI config JSON
	Status  string `json:"status"`
	Done    int64  `json:"done"`  // compressed bytes fetched
	Total   int64  `json:"total"` // compressed bytes to fetch
	Err     string `json:"error,omitempty"`
	Updated time.Time
}

// meta is image.json.
type meta struct {
	Digest      string    `json:"digest"`
	Size        int64     `json:"size"`
	Compressed  int64     `json:"compressed"`
	Platform    string    `json:"platform"`
	RootfsBytes int64     `json:"rootfs_bytes"`
	Pulled      time.Time `json:"pulled"`
}

// Options configure a store.
type Options struct {
	Dir  string // DATA/images (layout.Layout.ImagesDir)
	Arch string // the guest's GOARCH; default runtime.GOARCH
	Log  *slog.Logger
	// Keychain, when set, gives every pull's registry credentials
	// (tests). Unset, a pull uses the docker config of the user who asked
	// for it (auth.go).
	Keychain authn.Keychain
	// MaxBytes is the most an image may unpack to, in bytes: every
	// entry of its layers, sparse files at their full size. Zero means
	// the smaller of DefaultMaxBytes and half the free space of Dir at
	// the time of the pull.
	MaxBytes int64
	// MaxPulls is how many pulls may fetch and unpack at once; more
	// wait their turn. Zero means DefaultMaxPulls.
	MaxPulls int
	// InstanceDir returns an instance's persistent directory (for its
	// writable disk).
	InstanceDir func(inst string) string
}

// Defaults of Options.
const (
	DefaultMaxBytes = 20 << 30
	DefaultMaxPulls = 4
)

// Store is the image cache.
type Store struct {
	opt     Options
	slots   chan struct{} // one per pull fetching and unpacking
	mu      sync.Mutex
	entries map[string]*Entry  // by canonical ref
	pulls   map[string]*flight // in flight, by canonical ref
	users   map[string]string  // instance -> digest of its live VM
	lastErr string
}

type flight struct {
	done chan struct{}
	e    Entry
	err  error
}

// Open opens (creating) the store and loads what is cached.
func Open(opt Options) (*Store, error) {
	if opt.Arch == "" {
		opt.Arch = runtime.GOARCH
	}
	if opt.Log == nil {
		opt.Log = slog.Default()
	}
	if opt.MaxPulls <= 0 {
		opt.MaxPulls = DefaultMaxPulls
	}
	s := &Store{opt: opt, entries: map[string]*Entry{}, pulls: map[string]*flight{}, users: map[string]string{},
		slots: make(chan struct{}, opt.MaxPulls)}
	for _, d := range []string{s.tmpDir(), filepath.Join(opt.Dir, "sha256")} {
		if err := os.MkdirAll(d, layout.PrivateDir); err != nil {
			return nil, fmt.Errorf("image store: %w", err)
		}
	}
	// Whatever a crash left half made.
	if ents, err := os.ReadDir(s.tmpDir()); err == nil {
		for _, e := range ents {
			os.RemoveAll(filepath.Join(s.tmpDir(), e.Name()))
		}
	}
	cleanScratch()
	refs := map[string]string{}
	if b, err := os.ReadFile(s.refsPath()); err == nil {
		if err := json.Unmarshal(b, &refs); err != nil {
			opt.Log.Warn("image refs unreadable; starting empty", "path", s.refsPath(), "err", err)
		}
	}
	for ref, dg := range refs {
		m, cfg, err := s.loadImage(dg)
		if err != nil {
			opt.Log.Warn("cached image incomplete; dropped", "ref", ref, "digest", dg, "err", err)
			continue
		}
		s.entries[ref] = &Entry{Ref: ref, Digest: dg, Size: m.Size, Config: cfg, Status: Ready,
			Done: m.Compressed, Total: m.Compressed, Updated: m.Pulled}
	}
	return s, nil
}

func (s *Store) tmpDir() string   { return filepath.Join(s.opt.Dir, layout.ImageTmp) }
func (s *Store) refsPath() string { return filepath.Join(s.opt.Dir, layout.ImageRefs) }

// ImageDir is the cache directory of an image digest ("sha256:HEX").
func (s *Store) ImageDir(digest string) string {
	algo, hex, _ := strings.Cut(digest, ":")
	return filepath.Join(s.opt.Dir, algo, hex)
}

func (s *Store) loadImage(digest string) (meta, []byte, error) {
	var m meta
	dir := s.ImageDir(digest)
	b, err := os.ReadFile(filepath.Join(dir, layout.ImageMeta))
	if err != nil {
		return m, nil, err
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, nil, err
	}
	if _, err := os.Stat(filepath.Join(dir, layout.ImageRootfs)); err != nil {
		return m, nil, err
	}
	cfg, err := os.ReadFile(filepath.Join(dir, layout.ImageConfig))
	return m, cfg, err
}

// saveRefsLocked writes refs.json from the ready entries.
func (s *Store) saveRefsLocked() error {
	refs := map[string]string{}
	for ref, e := range s.entries {
		if e.Status == Ready {
			refs[ref] = e.Digest
		}
	}
	return atomicfile.WriteJSON(s.refsPath(), refs, layout.PrivateFile)
}

// ParseRef parses a reference the way the store names it. The error is a
// sentence for users.
func ParseRef(ref string) (name.Reference, error) {
	r, err := name.ParseReference(strings.TrimSpace(ref))
	if err != nil {
		return nil, errno.Errorf(syscall.EINVAL, "%q is not a valid image reference (%v); write it as e.g. \"alpine:3.20\" or \"registry.example.com/team/app:v1\"", ref, err)
	}
	return r, nil
}

// Entries lists every image the store knows, sorted by reference.
func (s *Store) Entries() []Entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Entry, 0, len(s.entries))
	for _, e := range s.entries {
		out = append(out, *e)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Ref < out[b].Ref })
	return out
}

// Lookup returns the entry of a canonical reference.
func (s *Store) Lookup(ref string) (Entry, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.entries[ref]
	if !ok {
		return Entry{}, false
	}
	return *e, true
}

// LastError is the last error of a ctl command, as a sentence.
func (s *Store) LastError() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastErr
}

// Ctl runs one images/ctl command, "pull REF" or "rm REF", for the user
// uid (a pull uses their registry credentials).
func (s *Store) Ctl(ctx context.Context, cmd string, uid uint32) error {
	err := s.ctl(ctx, cmd, uid)
	s.mu.Lock()
	if err != nil {
		s.lastErr = err.Error()
	} else {
		s.lastErr = ""
	}
	s.mu.Unlock()
	return err
}

func (s *Store) ctl(ctx context.Context, cmd string, uid uint32) error {
	f := strings.Fields(cmd)
	if len(f) != 2 || (f[0] != "pull" && f[0] != "rm") {
		return errno.Errorf(syscall.EINVAL, "unknown command %q: write \"pull REF\" or \"rm REF\"", strings.TrimSpace(cmd))
	}
	if f[0] == "rm" {
		return s.Remove(f[1])
	}
	// A pull from ctl outlives a cancelled write: others may wait for it.
	_, err := s.Pull(context.WithoutCancel(ctx), f[1], uid)
	return err
}

// Get returns a ready image, pulling it (as the user uid) if it is not here.
func (s *Store) Get(ctx context.Context, ref string, uid uint32) (Entry, error) {
	r, err := ParseRef(ref)
	if err != nil {
		return Entry{}, err
	}
	s.mu.Lock()
	e, ok := s.entries[r.Name()]
	if ok && e.Status == Ready {
		if _, err := os.Stat(filepath.Join(s.ImageDir(e.Digest), layout.ImageRootfs)); err == nil {
			s.mu.Unlock()
			return *e, nil
		}
	}
	s.mu.Unlock()
	return s.Pull(ctx, ref, uid)
}

// Pull fetches ref (again) with the registry credentials of the user uid
// and converts it, unless its digest is cached. Concurrent pulls of the
// same reference share one (the image, once here, is everyone's); at most
// MaxPulls fetch at once, the others wait their turn.
func (s *Store) Pull(ctx context.Context, ref string, uid uint32) (Entry, error) {
	r, err := ParseRef(ref)
	if err != nil {
		return Entry{}, err
	}
	key := r.Name()
	s.mu.Lock()
	f, ok := s.pulls[key]
	if !ok {
		f = &flight{done: make(chan struct{})}
		s.pulls[key] = f
		prev := s.entries[key]
		e := &Entry{Ref: key, Status: Pulling, Updated: time.Now()}
		if prev != nil && prev.Status == Ready {
			// Keep showing the cached image while checking for a new one.
			cp := *prev
			e = &cp
		}
		s.entries[key] = e
		s.mu.Unlock()
		go func() {
			// Not tied to the first caller: others may be waiting.
			s.slots <- struct{}{}
			defer func() { <-s.slots }()
			e, err := s.pull(context.WithoutCancel(ctx), r, uid)
			s.mu.Lock()
			f.e, f.err = e, err
			delete(s.pulls, key)
			s.mu.Unlock()
			close(f.done)
		}()
	} else {
		s.mu.Unlock()
	}
	select {
	case <-f.done:
		return f.e, f.err
	case <-ctx.Done():
		return Entry{}, ctx.Err()
	}
}

// update changes the entry of key under the lock.
func (s *Store) update(key string, fn func(e *Entry)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.entries[key]
	if !ok {
		e = &Entry{Ref: key}
		s.entries[key] = e
	}
	fn(e)
	e.Updated = time.Now()
}

// Remove forgets a reference and deletes its image unless another
// reference still names the same digest. An image a live VM uses is
// refused with EBUSY.
func (s *Store) Remove(ref string) error {
	r, err := ParseRef(ref)
	if err != nil {
		return err
	}
	key := r.Name()
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.entries[key]
	if !ok {
		return errno.Errorf(syscall.ENOENT, "image %s is not in the store (see the images directory for what is)", key)
	}
	if _, busy := s.pulls[key]; busy {
		return errno.Errorf(syscall.EBUSY, "image %s is being pulled; remove it once the pull has ended", key)
	}
	if e.Digest != "" {
		var users []string
		for inst, dg := range s.users {
			if dg == e.Digest {
				users = append(users, inst)
			}
		}
		if len(users) > 0 {
			sort.Strings(users)
			return errno.Errorf(syscall.EBUSY, "image %s is in use by instance %s; stop it (echo kill > instances/%s/ctl) before removing the image", key, strings.Join(users, ", "), users[0])
		}
	}
	delete(s.entries, key)
	if err := s.saveRefsLocked(); err != nil {
		return fmt.Errorf("save image references: %w", err)
	}
	if e.Digest == "" {
		return nil
	}
	for _, o := range s.entries {
		if o.Digest == e.Digest {
			return nil
		}
	}
	dir := s.ImageDir(e.Digest)
	// Out of sight at once (a rename), then deleted.
	trash := filepath.Join(s.tmpDir(), "rm-"+filepath.Base(dir))
	if err := os.Rename(dir, trash); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("remove image %s: %w", key, err)
	}
	return os.RemoveAll(trash)
}

// use records that inst's VM runs on digest (for rm's EBUSY).
func (s *Store) use(inst, digest string) {
	s.mu.Lock()
	s.users[inst] = digest
	s.mu.Unlock()
}

func (s *Store) release(inst string) {
	s.mu.Lock()
	delete(s.users, inst)
	s.mu.Unlock()
}

// platform is the guest's platform: the guest always runs Linux, on the
// host's CPU architecture.
func (s *Store) platform() v1.Platform {
	return v1.Platform{OS: "linux", Architecture: s.opt.Arch}
}
