package image

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"golang.org/x/sys/unix"

	"hypefs/backend/layout"
	"hypefs/internal/atomicfile"
	"hypefs/internal/cleanup"
	"hypefs/internal/errno"
)

// pull resolves r, fetches the image for the guest's platform, and
// converts it, reporting progress in the entry of r.
func (s *Store) pull(ctx context.Context, r name.Reference, uid uint32) (Entry, error) {
	key := r.Name()
	var prev Entry
	s.mu.Lock()
	if p, ok := s.entries[key]; ok {
		prev = *p
	}
	s.mu.Unlock()
	e, err := s.pullImage(ctx, r, uid)
	if err != nil {
		s.update(key, func(e *Entry) {
			if prev.Status == Ready && prev.Digest != "" {
				// A re-pull failed: the image cached before still serves,
				// whatever the failed pull had started to show.
				if _, _, lerr := s.loadImage(prev.Digest); lerr == nil {
					*e = prev
					e.Err = err.Error()
					return
				}
			}
			e.Err = err.Error()
			e.Status = Failed
		})
		s.opt.Log.Warn("image pull failed", "ref", key, "err", err)
		return Entry{}, err
	}
	s.mu.Lock()
	e.Ref = key
	s.entries[key] = &e
	serr := s.saveRefsLocked()
	s.mu.Unlock()
	if serr != nil {
		return Entry{}, fmt.Errorf("save image references: %w", serr)
	}
	return e, nil
}

// pullJob is one pull of one reference, as named steps: resolve the
// image for the guest's platform, measure its layers, flatten them into a
// scratch tree, convert the tree to EROFS, store it. Every scratch
// directory is removed through one cleanup stack, whichever step fails.
type pullJob struct {
	s        *Store
	ctx      context.Context
	r        name.Reference
	key, reg string
	keychain authn.Keychain // the credentials of who asked
	max      int64          // the most the image may unpack to

	img     v1.Image
	digest  string
	cfgFile *v1.ConfigFile
	rawCfg  []byte
	layers  []v1.Layer
	total   int64      // compressed bytes of every layer
	work    string     // scratch directory under the store's tmp/
	fl      *flattener // the flattened tree
}

func (s *Store) pullImage(ctx context.Context, r name.Reference, uid uint32) (Entry, error) {
	p := &pullJob{s: s, ctx: ctx, r: r, key: r.Name(), reg: r.Context().RegistryStr(), keychain: s.keychain(uid), max: s.maxBytes()}
	if err := p.resolve(); err != nil {
		return Entry{}, err
	}
	// Cached already (another reference, or an earlier pull)?
	if m, cfg, err := s.loadImage(p.digest); err == nil {
		return Entry{Digest: p.digest, Size: m.Size, Config: cfg, Status: Ready, Done: m.Compressed, Total: m.Compressed, Updated: time.Now()}, nil
	}
	var scratch cleanup.Stack
	defer scratch.Unwind()
	for _, step := range []func(*cleanup.Stack) error{p.measure, p.flatten, p.convert} {
		if err := step(&scratch); err != nil {
			return Entry{}, err
		}
	}
	return Entry{Digest: p.digest, Size: p.fl.size, Config: p.rawCfg, Status: Ready, Done: p.total, Total: p.total, Updated: time.Now()}, nil
}

// resolve finds the image for the guest's platform and reads its config.
func (p *pullJob) resolve() error {
	desc, err := remote.Get(p.r,
		remote.WithContext(p.ctx),
		remote.WithAuthFromKeychain(p.keychain),
		remote.WithPlatform(p.s.platform()),
		remote.WithTransport(loopbackOnlyHTTP{remote.DefaultTransport}))
	if err != nil {
		return p.explain(err)
	}
	if desc.MediaType.IsIndex() {
		idx, err := desc.ImageIndex()
		if err != nil {
			return p.explain(err)
		}
		im, err := idx.IndexManifest()
		if err != nil {
			return p.explain(err)
		}
		if !hasVariant(im, p.s.platform()) {
			return errno.Errorf(syscall.ENOENT, "image %s has no variant for %s/%s, the platform of this host's guests; pick an image built for it", p.key, p.s.platform().OS, p.s.platform().Architecture)
		}
	}
	if p.img, err = desc.Image(); err != nil {
		return p.explain(err)
	}
	dg, err := p.img.Digest()
	if err != nil {
		return p.explain(err)
	}
	p.digest = dg.String()
	if p.cfgFile, err = p.img.ConfigFile(); err != nil {
		return p.explain(err)
	}
	if c := p.cfgFile; c.OS != "" && (c.OS != "linux" || (c.Architecture != "" && c.Architecture != p.s.opt.Arch)) {
		return errno.Errorf(syscall.ENOEXEC, "image %s is built for %s/%s, but this host's guests run linux/%s; pick an image built for it", p.key, c.OS, c.Architecture, p.s.opt.Arch)
	}
	if p.rawCfg, err = p.img.RawConfigFile(); err != nil {
		return p.explain(err)
	}
	return nil
}

// hasVariant reports whether an index names an image for want (a child
// without a platform counts as linux/amd64, as go-containerregistry
// reads it).
func hasVariant(im *v1.IndexManifest, want v1.Platform) bool {
	for _, m := range im.Manifests {
		have := v1.Platform{OS: "linux", Architecture: "amd64"}
		if m.Platform != nil {
			have = *m.Platform
		}
		if have.Satisfies(want) {
			return true
		}
	}
	return false
}

// measure lists the layers and their size, and shows the pull started.
func (p *pullJob) measure(*cleanup.Stack) error {
	var err error
	if p.layers, err = p.img.Layers(); err != nil {
		return p.explain(err)
	}
	if len(p.cfgFile.RootFS.DiffIDs) != len(p.layers) {
		return errno.Errorf(syscall.EIO, "image %s is malformed: its config lists %d layers but its manifest %d", p.key, len(p.cfgFile.RootFS.DiffIDs), len(p.layers))
	}
	for _, l := range p.layers {
		n, err := l.Size()
		if err != nil {
			return p.explain(err)
		}
		p.total += n
	}
	p.s.update(p.key, func(e *Entry) {
		e.Status, e.Err, e.Digest, e.Config, e.Done, e.Total = Pulling, "", p.digest, p.rawCfg, 0, p.total
	})
	return nil
}

// flatten applies every layer to one scratch tree: in memory (tmpfs) when
// it fits, since creating thousands of files costs far more on a disk; on
// the data disk otherwise, or when memory ran out.
func (p *pullJob) flatten(scratch *cleanup.Stack) error {
	work, err := os.MkdirTemp(p.s.tmpDir(), "pull-")
	if err != nil {
		return fmt.Errorf("image store: %w", err)
	}
	scratch.Push(func() { os.RemoveAll(work) })
	p.work = work
	var noRoom error
	for _, dir := range p.s.scratchDirs(work, p.total) {
		tree, err := privateTree(dir, scratch)
		if err != nil {
			noRoom = err
			continue
		}
		err = p.applyLayers(tree, dir != work)
		if (errors.Is(err, syscall.ENOSPC) || errors.Is(err, errNoMemoryRoom)) && dir != work {
			os.RemoveAll(filepath.Dir(tree)) // give the memory back at once
			p.s.update(p.key, func(e *Entry) { e.Done = 0 })
			noRoom = err
			continue
		}
		return err
	}
	return fmt.Errorf("image store: no room to unpack the image: %w", noRoom)
}

// privateTree makes an empty tree under dir inside a private (0700)
// directory: the layer's own mode for "./" applies to the tree, never to
// what other users of a shared tmpfs can reach.
func privateTree(dir string, scratch *cleanup.Stack) (string, error) {
	priv, err := os.MkdirTemp(dir, scratchPrefix)
	if err != nil {
		return "", err
	}
	scratch.Push(func() { os.RemoveAll(priv) })
	tree := filepath.Join(priv, "root")
	if err := os.Mkdir(tree, 0o755); err != nil {
		return "", err
	}
	return tree, nil
}

// applyLayers flattens the layers, lowest first, into tree, and gives it
// the directories the guest mounts on. What the layers declare is bounded
// before it is written: by the image limit (EFBIG), and in memory also
// by half of what tmpfs has free (then the pull starts over on disk).
func (p *pullJob) applyLayers(tree string, inMemory bool) error {
	p.fl = newFlattener(tree)
	p.fl.limit, p.fl.over = p.max, p.tooBig
	if free, ok := tmpfsFree(shmDir); inMemory && ok && free/2 < p.max {
		p.fl.limit = free / 2
		p.fl.over = func(int64, *tar.Header) error { return errNoMemoryRoom }
	}
	var done int64
	for i, l := range p.layers {
		if err := p.applyLayer(l, p.cfgFile.RootFS.DiffIDs[i], &done); err != nil {
			return err
		}
	}
	p.fl.finish()
	addMountPoints(tree)
	return nil
}

// errNoMemoryRoom: the layers declare more than tmpfs should hold; the
// pull starts over on disk.
var errNoMemoryRoom = errors.New("the image does not fit in memory")

// tooBig refuses an image whose layers declare more than the limit.
func (p *pullJob) tooBig(declared int64, hdr *tar.Header) error {
	return errno.Errorf(syscall.EFBIG, "image %s is refused: its layers declare more than %s (%s is %s, sparse files counting their full size), and this hypefs takes images of at most %s (hint: use a smaller image, or start hypefs with a larger --image-max-bytes)",
		p.key, humanBytes(p.max), hdr.Name, humanBytes(hdr.Size), humanBytes(p.max))
}

// maxBytes is the most an image may unpack to now (Options.MaxBytes).
func (s *Store) maxBytes() int64 {
	if s.opt.MaxBytes > 0 {
		return s.opt.MaxBytes
	}
	var st unix.Statfs_t
	if unix.Statfs(s.opt.Dir, &st) != nil {
		return DefaultMaxBytes
	}
	return min(DefaultMaxBytes, int64(st.Bavail)*int64(st.Bsize)/2)
}

// humanBytes writes a size the way people read it.
func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%d bytes", n)
}

// convert makes the image's directory (EROFS disk, config, metadata),
// durable before it is renamed into place: a power cut must never leave
// a ready-looking image with an empty config.
func (p *pullJob) convert(*cleanup.Stack) error {
	t0 := time.Now()
	p.s.update(p.key, func(e *Entry) { e.Status, e.Done = Converting, p.total })
	dir := filepath.Join(p.work, "image")
	if err := os.Mkdir(dir, layout.PrivateDir); err != nil {
		return err
	}
	if err := makeEROFS(p.ctx, filepath.Join(dir, layout.ImageRootfs), p.fl.root); err != nil {
		return fmt.Errorf("convert image %s: %w", p.key, err)
	}
	p.s.opt.Log.Debug("image converted", "ref", p.key, "mkfs", time.Since(t0))
	fi, err := os.Stat(filepath.Join(dir, layout.ImageRootfs))
	if err != nil {
		return err
	}
	m := meta{Digest: p.digest, Size: p.fl.size, Compressed: p.total, Platform: "linux/" + p.s.opt.Arch, RootfsBytes: fi.Size(), Pulled: time.Now().UTC()}
	if err := atomicfile.WriteFile(filepath.Join(dir, layout.ImageConfig), p.rawCfg, layout.PrivateFile); err != nil {
		return err
	}
	if err := atomicfile.WriteJSON(filepath.Join(dir, layout.ImageMeta), m, layout.PrivateFile); err != nil {
		return err
	}
	if err := atomicfile.SyncDir(dir); err != nil {
		return fmt.Errorf("convert image %s: %w", p.key, err)
	}
	final := p.s.ImageDir(p.digest)
	os.MkdirAll(filepath.Dir(final), layout.PrivateDir)
	err = os.Rename(dir, final)
	if err == nil {
		atomicfile.SyncDir(filepath.Dir(final))
	} else if _, _, lerr := p.s.loadImage(p.digest); lerr != nil {
		// Unless another pull of the same digest won the race: its copy serves.
		return fmt.Errorf("store image %s: %w", p.key, err)
	}
	return nil
}

func isNetErr(err error) bool {
	var ne net.Error
	var ue *url.Error
	return errors.As(err, &ne) || errors.As(err, &ue) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET)
}

// explain turns a registry or network failure into a sentence naming the
// cause and what to do.
func (p *pullJob) explain(err error) error {
	key, reg := p.key, p.reg
	var te *transport.Error
	if errors.As(err, &te) {
		codes := map[transport.ErrorCode]bool{}
		for _, d := range te.Errors {
			codes[d.Code] = true
		}
		switch {
		case te.StatusCode == http.StatusUnauthorized || te.StatusCode == http.StatusForbidden ||
			codes[transport.UnauthorizedErrorCode] || codes[transport.DeniedErrorCode]:
			return errno.Errorf(syscall.EACCES, "registry %s refused access to image %s (auth refused: %v); log in with \"docker login %s\" or check the name", reg, key, te, reg)
		case te.StatusCode == http.StatusNotFound || codes[transport.ManifestUnknownErrorCode] || codes[transport.NameUnknownErrorCode]:
			return errno.Errorf(syscall.ENOENT, "image %s is unknown: registry %s has no such repository or tag; check the name and tag", key, reg)
		case codes[transport.BlobUnknownErrorCode]:
			return errno.Errorf(syscall.EIO, "image %s is incomplete in registry %s: a layer it names is missing (%v); push the image again", key, reg, te)
		}
		return errno.Errorf(syscall.EIO, "registry %s failed to serve image %s: %v", reg, key, te)
	}
	var pe *plainHTTPError
	var ce *credentialsError
	switch {
	case errors.As(err, &pe):
		return errno.New(syscall.EPERM, pe.Error())
	case errors.As(err, &ce):
		return errno.Errorf(syscall.EACCES, "image %s cannot be pulled with your registry credentials: %s", key, ce.msg)
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled):
		return errno.Errorf(syscall.ETIMEDOUT, "pulling image %s from registry %s was cut short (%v); try again", key, reg, err)
	case isNetErr(err):
		return errno.Errorf(syscall.EHOSTUNREACH, "registry %s is unreachable, so image %s cannot be pulled (%v); check the registry's address and that it is up", reg, key, rootCause(err))
	case errors.Is(err, io.ErrUnexpectedEOF):
		return errno.Errorf(syscall.EIO, "image %s from registry %s is truncated (%v); %s", key, reg, err, pullAgain)
	}
	// What is left (a size or digest that does not match) the registry
	// library says in its own words.
	return errno.Errorf(syscall.EIO, "cannot pull image %s from registry %s: %v; %s", key, reg, err, pullAgain)
}

func rootCause(err error) error {
	for {
		u := errors.Unwrap(err)
		if u == nil {
			return err
		}
		var op *net.OpError
		if errors.As(err, &op) {
			return op
		}
		err = u
	}
}

// loopbackOnlyHTTP refuses plain HTTP to anything but a loopback
// registry (go-containerregistry would also use it for RFC 1918 and
// .local names).
type loopbackOnlyHTTP struct{ next http.RoundTripper }

type plainHTTPError struct{ host string }

func (e *plainHTTPError) Error() string {
	return fmt.Sprintf("registry %s cannot be used: it is not reachable over HTTPS, and hypefs allows plain HTTP for loopback registries only; serve it over HTTPS", e.host)
}

func (t loopbackOnlyHTTP) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme == "http" && !isLoopback(req.URL.Hostname()) {
		return nil, &plainHTTPError{host: req.URL.Host}
	}
	return t.next.RoundTrip(req)
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// makeEROFS builds the read-only base disk from tree: uncompressed (the
// guest reads it without spending emulated CPU on decompression), with
// owners, modes, xattrs and times as they are.
func makeEROFS(ctx context.Context, out, tree string) error {
	bin, err := exec.LookPath("mkfs.erofs")
	if err != nil {
		return errors.New("mkfs.erofs is missing (hint: run \"make deps\", which installs erofs-utils)")
	}
	cmd := exec.CommandContext(ctx, bin, "--quiet", out, tree)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("mkfs.erofs: %w: %s", err, strings.TrimSpace(string(b)))
	}
	f, err := os.Open(out)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Chmod(layout.PrivateFile); err != nil {
		return err
	}
	return f.Sync()
}

// scratchPrefix names this daemon's flattened trees (layout.ScratchPrefix).
var scratchPrefix = layout.ScratchPrefix + strconv.Itoa(os.Getpid()) + "-"

// shmDir is where trees go when they fit in memory.
const shmDir = "/dev/shm"

// scratchDirs lists where to flatten, best first: tmpfs when the image
// (guessed at 4x its compressed size) takes under a quarter of the
// memory it has free, then the work directory on the data disk.
func (s *Store) scratchDirs(work string, compressed int64) []string {
	if free, ok := tmpfsFree(shmDir); ok && compressed*4 < free/4 {
		return []string{shmDir, work}
	}
	return []string{work}
}

// cleanScratch removes trees that dead daemons left in tmpfs.
func cleanScratch() {
	ents, _ := os.ReadDir(shmDir)
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), layout.ScratchPrefix)
		if !ok {
			continue
		}
		pidS, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidS)
		if err != nil || pid <= 0 {
			continue
		}
		if unix.Kill(pid, 0) == unix.ESRCH {
			os.RemoveAll(filepath.Join(shmDir, e.Name()))
		}
	}
}

// addMountPoints gives the root the directories the guest mounts on
// (/dev, /proc, /sys) and a /tmp when the image has none, as container
// runtimes do. Made here, in the shared base, they cost the guest no
// copy-up in the overlay at every instance's first boot.
func addMountPoints(tree string) {
	for _, d := range []struct {
		name string
		mode os.FileMode
	}{{"dev", 0o755}, {"proc", 0o555}, {"sys", 0o555}, {"tmp", 0o1777}} {
		p := filepath.Join(tree, d.name)
		if _, err := os.Lstat(p); os.IsNotExist(err) {
			os.Mkdir(p, 0o755)
			unix.Chmod(p, uint32(d.mode))
		}
	}
}
