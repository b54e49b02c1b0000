package image

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"

	"hypefs/backend/instance"
	"hypefs/internal/atomicfile"
)

// pull resolves r, fetches the image for the guest's platform, and
// converts it, reporting progress in the entry of r.
func (s *Store) pull(ctx context.Context, r name.Reference) (Entry, error) {
	key := r.Name()
	var prev Entry
	s.mu.Lock()
	if p, ok := s.entries[key]; ok {
		prev = *p
	}
	s.mu.Unlock()
	e, err := s.pullImage(ctx, r)
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

func (s *Store) pullImage(ctx context.Context, r name.Reference) (Entry, error) {
	key := r.Name()
	reg := r.Context().RegistryStr()
	opts := []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuthFromKeychain(s.opt.Keychain),
		remote.WithPlatform(s.platform()),
		remote.WithTransport(loopbackOnlyHTTP{remote.DefaultTransport}),
	}
	desc, err := remote.Get(r, opts...)
	if err != nil {
		return Entry{}, explain(key, reg, err)
	}
	img, err := desc.Image()
	if err != nil {
		if strings.Contains(err.Error(), "no child with platform") {
			return Entry{}, &instance.Error{Errno: syscall.ENOENT, Msg: fmt.Sprintf("image %s has no variant for %s/%s, the platform of this host's guests; pick an image built for it", key, s.platform().OS, s.platform().Architecture)}
		}
		return Entry{}, explain(key, reg, err)
	}
	dg, err := img.Digest()
	if err != nil {
		return Entry{}, explain(key, reg, err)
	}
	digest := dg.String()
	cfgFile, err := img.ConfigFile()
	if err != nil {
		return Entry{}, explain(key, reg, err)
	}
	if cfgFile.OS != "" && (cfgFile.OS != "linux" || (cfgFile.Architecture != "" && cfgFile.Architecture != s.opt.Arch)) {
		return Entry{}, &instance.Error{Errno: syscall.ENOEXEC, Msg: fmt.Sprintf("image %s is built for %s/%s, but this host's guests run linux/%s; pick an image built for it", key, cfgFile.OS, cfgFile.Architecture, s.opt.Arch)}
	}
	rawCfg, err := img.RawConfigFile()
	if err != nil {
		return Entry{}, explain(key, reg, err)
	}
	// Cached already (another reference, or an earlier pull)?
	if m, cfg, err := s.loadImage(digest); err == nil {
		return Entry{Digest: digest, Size: m.Size, Config: cfg, Status: Ready, Done: m.Compressed, Total: m.Compressed, Updated: time.Now()}, nil
	}
	layers, err := img.Layers()
	if err != nil {
		return Entry{}, explain(key, reg, err)
	}
	if len(cfgFile.RootFS.DiffIDs) != len(layers) {
		return Entry{}, &instance.Error{Errno: syscall.EIO, Msg: fmt.Sprintf("image %s is malformed: its config lists %d layers but its manifest %d", key, len(cfgFile.RootFS.DiffIDs), len(layers))}
	}
	var total int64
	for _, l := range layers {
		n, err := l.Size()
		if err != nil {
			return Entry{}, explain(key, reg, err)
		}
		total += n
	}
	s.update(key, func(e *Entry) {
		e.Status, e.Err, e.Digest, e.Config, e.Done, e.Total = Pulling, "", digest, rawCfg, 0, total
	})

	t0 := time.Now()
	work, err := os.MkdirTemp(s.tmpDir(), "pull-")
	if err != nil {
		return Entry{}, fmt.Errorf("image store: %w", err)
	}
	defer os.RemoveAll(work)
	// The flattened tree is scratch: in memory (tmpfs) when it fits,
	// since creating thousands of files costs far more on a disk; on the
	// data disk otherwise, or when memory ran out.
	var fl *flattener
	var scratchErr error
	for _, scratch := range s.scratchDirs(work, total) {
		// A private (0700) directory holds the tree: the layer's own
		// mode for "./" applies to the tree, never to what other users
		// of a shared tmpfs can reach.
		priv, err := os.MkdirTemp(scratch, scratchPrefix)
		if err != nil {
			scratchErr = err
			continue
		}
		defer os.RemoveAll(priv)
		tree := filepath.Join(priv, "root")
		if err := os.Mkdir(tree, 0o755); err != nil {
			scratchErr = err
			continue
		}
		fl = newFlattener(tree)
		var done int64
		for i, l := range layers {
			if err = s.applyLayer(ctx, key, reg, fl, l, cfgFile.RootFS.DiffIDs[i], &done); err != nil {
				break
			}
		}
		if errors.Is(err, syscall.ENOSPC) && scratch != work {
			os.RemoveAll(priv)
			fl = nil
			s.update(key, func(e *Entry) { e.Done = 0 })
			continue
		}
		if err != nil {
			return Entry{}, err
		}
		break
	}
	if fl == nil {
		return Entry{}, fmt.Errorf("image store: no room to unpack the image: %w", scratchErr)
	}
	fl.finish()
	tree := fl.root
	addMountPoints(tree)
	tLayers := time.Now()
	s.update(key, func(e *Entry) { e.Status, e.Done = Converting, total })

	dir := filepath.Join(work, "image")
	if err := os.Mkdir(dir, 0o755); err != nil {
		return Entry{}, err
	}
	if err := makeEROFS(ctx, filepath.Join(dir, RootfsFile), tree); err != nil {
		return Entry{}, fmt.Errorf("convert image %s: %w", key, err)
	}
	s.opt.Log.Debug("image converted", "ref", key, "layers", tLayers.Sub(t0), "mkfs", time.Since(tLayers))
	fi, err := os.Stat(filepath.Join(dir, RootfsFile))
	if err != nil {
		return Entry{}, err
	}
	m := meta{Digest: digest, Size: fl.size, Compressed: total, Platform: "linux/" + s.opt.Arch, RootfsBytes: fi.Size(), Pulled: time.Now().UTC()}
	// Contents durable before the directory is renamed into place: a
	// power cut must never leave a ready-looking image with an empty config.
	if err := atomicfile.WriteFile(filepath.Join(dir, ConfigFile), rawCfg, 0o644); err != nil {
		return Entry{}, err
	}
	if err := atomicfile.WriteJSON(filepath.Join(dir, MetaFile), m, 0o644); err != nil {
		return Entry{}, err
	}
	if err := atomicfile.SyncDir(dir); err != nil {
		return Entry{}, fmt.Errorf("convert image %s: %w", key, err)
	}
	final := s.ImageDir(digest)
	os.MkdirAll(filepath.Dir(final), 0o755)
	err = os.Rename(dir, final)
	if err == nil {
		atomicfile.SyncDir(filepath.Dir(final))
	}
	if err != nil {
		// Another pull of the same digest won the race: its copy serves.
		if _, _, lerr := s.loadImage(digest); lerr != nil {
			return Entry{}, fmt.Errorf("store image %s: %w", key, err)
		}
	}
	return Entry{Digest: digest, Size: fl.size, Config: rawCfg, Status: Ready, Done: total, Total: total, Updated: time.Now()}, nil
}

// applyLayer streams one layer from the registry into the tree, checking
// its digest (compressed) and diff ID (uncompressed) as it goes.
func (s *Store) applyLayer(ctx context.Context, key, reg string, fl *flattener, l v1.Layer, diffID v1.Hash, done *int64) error {
	ldg, err := l.Digest()
	if err != nil {
		return explain(key, reg, err)
	}
	size, _ := l.Size()
	rc, err := l.Compressed()
	if err != nil {
		return explain(key, reg, err)
	}
	defer rc.Close()
	ch := sha256.New()
	cr := &countingReader{r: rc, h: ch, report: func(n int64) {
		*done += n
		d := *done
		s.update(key, func(e *Entry) { e.Done = d })
	}}
	br := bufio.NewReaderSize(cr, 1<<20)
	magic, _ := br.Peek(4)
	var ur io.Reader
	switch {
	case len(magic) >= 2 && magic[0] == 0x1f && magic[1] == 0x8b:
		zr, err := gzip.NewReader(br)
		if err != nil {
			return corrupt(key, ldg, err)
		}
		defer zr.Close()
		ur = zr
	case len(magic) == 4 && magic[0] == 0x28 && magic[1] == 0xb5 && magic[2] == 0x2f && magic[3] == 0xfd:
		zr, err := zstd.NewReader(br)
		if err != nil {
			return corrupt(key, ldg, err)
		}
		defer zr.Close()
		ur = zr
	default:
		ur = br
	}
	// Decompress on a goroutine of its own, a few MB ahead, so that it
	// overlaps with writing the files (io.Pipe would hand over each
	// chunk synchronously, leaving one core idle).
	pr := newChunkPipe(16)
	gdone := make(chan struct{})
	go func() {
		defer close(gdone)
		err := pr.fill(ur)
		if err == nil {
			// The compressed stream's tail, so its digest covers every byte.
			_, err = io.Copy(io.Discard, br)
		}
		pr.closeWrite(err)
	}()
	uh := sha256.New()
	tee := io.TeeReader(pr, uh)
	err = fl.apply(tee)
	if err == nil {
		// The tar ends before its padding: hash the rest too.
		_, err = io.Copy(uh, pr)
	}
	pr.abandon()
	if err != nil {
		rc.Close() // unblocks a read in flight
	}
	<-gdone
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var ie *instance.Error
		if errors.As(err, &ie) {
			return err
		}
		if isNetErr(err) {
			return explain(key, reg, err)
		}
		if errors.Is(err, syscall.ENOSPC) { // before isDataErr: a path can name "zstd"
			return fmt.Errorf("unpack layer %s of image %s: no space left: %w", short(ldg), key, err)
		}
		if isDataErr(err) {
			return corrupt(key, ldg, err)
		}
		return fmt.Errorf("unpack layer %s of image %s: %w", short(ldg), key, err)
	}
	if cr.n != size {
		return &instance.Error{Errno: syscall.EIO, Msg: fmt.Sprintf("layer %s of image %s is truncated or corrupt: the registry sent %d bytes, the manifest says %d; pull again, and if it persists, push the image again", short(ldg), key, cr.n, size)}
	}
	if got := "sha256:" + hex.EncodeToString(ch.Sum(nil)); ldg.Algorithm == "sha256" && got != ldg.String() {
		return &instance.Error{Errno: syscall.EIO, Msg: fmt.Sprintf("layer %s of image %s is corrupt: its content does not match its digest (got %s); pull again, and if it persists, push the image again", short(ldg), key, short2(got))}
	}
	if got := "sha256:" + hex.EncodeToString(uh.Sum(nil)); diffID.Algorithm == "sha256" && got != diffID.String() {
		return &instance.Error{Errno: syscall.EIO, Msg: fmt.Sprintf("layer %s of image %s is corrupt: its uncompressed content does not match the config's diff ID %s", short(ldg), key, short(diffID))}
	}
	return nil
}

type countingReader struct {
	r      io.Reader
	h      hash.Hash
	n      int64
	last   time.Time
	unrep  int64
	report func(int64)
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if n > 0 {
		c.h.Write(p[:n])
		c.n += int64(n)
		c.unrep += int64(n)
		if err != nil || time.Since(c.last) > 50*time.Millisecond {
			c.report(c.unrep)
			c.unrep, c.last = 0, time.Now()
		}
	}
	if err != nil && c.unrep > 0 {
		c.report(c.unrep)
		c.unrep = 0
	}
	return n, err
}

func short(h v1.Hash) string { return short2(h.String()) }

func short2(s string) string {
	if len(s) > 19 {
		return s[:19]
	}
	return s
}

func corrupt(key string, l v1.Hash, err error) error {
	return &instance.Error{Errno: syscall.EIO, Msg: fmt.Sprintf("layer %s of image %s is corrupt or truncated (%v); pull again, and if it persists, push the image again", short(l), key, err)}
}

// isDataErr says whether err comes from decoding a layer's bytes.
func isDataErr(err error) bool {
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, gzip.ErrChecksum) || errors.Is(err, gzip.ErrHeader) {
		return true
	}
	s := err.Error()
	return strings.Contains(s, "archive/tar") || strings.Contains(s, "flate") || strings.Contains(s, "zstd") || strings.Contains(s, "read layer")
}

func isNetErr(err error) bool {
	var ne net.Error
	var ue *url.Error
	return errors.As(err, &ne) || errors.As(err, &ue) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET)
}

// explain turns a registry or network failure into a sentence naming the
// cause and what to do.
func explain(key, reg string, err error) error {
	var te *transport.Error
	if errors.As(err, &te) {
		codes := map[transport.ErrorCode]bool{}
		for _, d := range te.Errors {
			codes[d.Code] = true
		}
		switch {
		case te.StatusCode == http.StatusUnauthorized || te.StatusCode == http.StatusForbidden ||
			codes[transport.UnauthorizedErrorCode] || codes[transport.DeniedErrorCode]:
			return &instance.Error{Errno: syscall.EACCES, Msg: fmt.Sprintf("registry %s refused access to image %s (auth refused: %v); log in with \"docker login %s\" or check the name", reg, key, te, reg)}
		case te.StatusCode == http.StatusNotFound || codes[transport.ManifestUnknownErrorCode] || codes[transport.NameUnknownErrorCode]:
			return &instance.Error{Errno: syscall.ENOENT, Msg: fmt.Sprintf("image %s is unknown: registry %s has no such repository or tag; check the name and tag", key, reg)}
		case codes[transport.BlobUnknownErrorCode]:
			return &instance.Error{Errno: syscall.EIO, Msg: fmt.Sprintf("image %s is incomplete in registry %s: a layer it names is missing (%v); push the image again", key, reg, te)}
		}
		return &instance.Error{Errno: syscall.EIO, Msg: fmt.Sprintf("registry %s failed to serve image %s: %v", reg, key, te)}
	}
	var pe *plainHTTPError
	if errors.As(err, &pe) {
		return &instance.Error{Errno: syscall.EPERM, Msg: pe.Error()}
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return &instance.Error{Errno: syscall.ETIMEDOUT, Msg: fmt.Sprintf("pulling image %s from registry %s was cut short (%v); try again", key, reg, err)}
	}
	if isNetErr(err) {
		return &instance.Error{Errno: syscall.EHOSTUNREACH, Msg: fmt.Sprintf("registry %s is unreachable, so image %s cannot be pulled (%v); check the registry's address and that it is up", reg, key, rootCause(err))}
	}
	if strings.Contains(err.Error(), "does not match expected size") || strings.Contains(err.Error(), "unexpected EOF") {
		return &instance.Error{Errno: syscall.EIO, Msg: fmt.Sprintf("image %s from registry %s is truncated (%v); pull again, and if it persists, push the image again", key, reg, err)}
	}
	if strings.Contains(err.Error(), "digest") {
		return &instance.Error{Errno: syscall.EIO, Msg: fmt.Sprintf("image %s from registry %s is corrupt (%v); pull again, and if it persists, push the image again", key, reg, err)}
	}
	return &instance.Error{Errno: syscall.EIO, Msg: fmt.Sprintf("cannot pull image %s from registry %s: %v", key, reg, err)}
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
	return f.Sync()
}

// scratchPrefix names flattened trees; "-PID-" lets a later daemon tell
// the leftovers of a dead one from a live one's.
var scratchPrefix = "hypefs-tree-" + strconv.Itoa(os.Getpid()) + "-"

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
		rest, ok := strings.CutPrefix(e.Name(), "hypefs-tree-")
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

// chunkPipe hands decompressed data from one goroutine to another in
// chunks, up to depth chunks ahead.
type chunkPipe struct {
	ch   chan []byte
	stop chan struct{}
	cur  []byte
	err  error // set before ch is closed
	once sync.Once
}

func newChunkPipe(depth int) *chunkPipe {
	return &chunkPipe{ch: make(chan []byte, depth), stop: make(chan struct{})}
}

// fill reads r to its end (or an error, or abandon) into the pipe.
func (p *chunkPipe) fill(r io.Reader) error {
	for {
		b := make([]byte, 1<<20)
		n, err := io.ReadFull(r, b)
		if n > 0 {
			select {
			case p.ch <- b[:n]:
			case <-p.stop:
				return errors.New("layer abandoned")
			}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func (p *chunkPipe) closeWrite(err error) {
	p.err = err
	close(p.ch)
}

func (p *chunkPipe) abandon() { p.once.Do(func() { close(p.stop) }) }

func (p *chunkPipe) Read(b []byte) (int, error) {
	for len(p.cur) == 0 {
		c, ok := <-p.ch
		if !ok {
			if p.err != nil {
				return 0, p.err
			}
			return 0, io.EOF
		}
		p.cur = c
	}
	n := copy(b, p.cur)
	p.cur = p.cur[n:]
	return n, nil
}
