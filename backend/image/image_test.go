package image

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"

	"hypefs/backend/instance"
	"hypefs/backend/layout"
	"hypefs/internal/errno"
	"hypefs/internal/runcfg"
	"hypefs/internal/testimage"
)

func needRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (chown, mknod, trusted xattrs)")
	}
}

func flatten(t *testing.T, layers ...[]byte) string {
	root := t.TempDir()
	fl := newFlattener(root)
	for _, l := range layers {
		if err := fl.apply(bytes.NewReader(l)); err != nil {
			t.Fatal(err)
		}
	}
	fl.finish()
	return root
}

func TestImageFlatten(t *testing.T) {
	needRoot(t)
	base, err := testimage.Base()
	if err != nil {
		t.Skip(err)
	}
	root := flatten(t, base, testimage.Middle(50), testimage.Top())
	p := func(s string) string { return filepath.Join(root, s) }
	for _, gone := range []string{"etc/gone", "opq/old1", "opq/old2"} {
		if _, err := os.Lstat(p(gone)); !os.IsNotExist(err) {
			t.Errorf("%s survived its whiteout (err %v)", gone, err)
		}
	}
	if b, err := os.ReadFile(p("opq/new")); err != nil || string(b) != "new\n" {
		t.Errorf("opq/new = %q, %v", b, err)
	}
	var a, b unix.Stat_t
	unix.Lstat(p("data/link"), &a)
	unix.Lstat(p("data/f0001"), &b)
	if a.Ino != b.Ino || a.Nlink != 2 {
		t.Errorf("hardlink: inodes %d %d, nlink %d", a.Ino, b.Ino, a.Nlink)
	}
	unix.Lstat(p("bin/suid"), &a)
	if a.Mode&0o7777 != 0o4755 {
		t.Errorf("bin/suid mode %o, want 4755", a.Mode&0o7777)
	}
	unix.Lstat(p("devs/null"), &a)
	// Rdev is uint64 on Linux, int32 on macOS.
	if rdev := uint64(a.Rdev); a.Mode&unix.S_IFMT != unix.S_IFCHR || unix.Major(rdev) != 1 || unix.Minor(rdev) != 3 {
		t.Errorf("devs/null: mode %o rdev %d:%d", a.Mode, unix.Major(rdev), unix.Minor(rdev))
	}
	unix.Lstat(p("devs/fifo"), &a)
	if a.Mode&unix.S_IFMT != unix.S_IFIFO {
		t.Errorf("devs/fifo: mode %o", a.Mode)
	}
	unix.Lstat(p("data/owned"), &a)
	if a.Uid != 1000 || a.Gid != 2000 || a.Mode&0o777 != 0o640 {
		t.Errorf("data/owned: %d:%d %o", a.Uid, a.Gid, a.Mode&0o777)
	}
	unix.Lstat(p("tmp"), &a)
	if a.Mode&0o7777 != 0o1777 {
		t.Errorf("tmp mode %o", a.Mode&0o7777)
	}
	if l, err := os.Readlink(p("bin/sh")); err != nil || l != "busybox" {
		t.Errorf("bin/sh -> %q, %v", l, err)
	}
	buf := make([]byte, 16)
	if n, err := unix.Lgetxattr(p("data/f0000"), "user.hypefs", buf); err != nil {
		if errors.Is(err, unix.ENOTSUP) {
			t.Log("user xattrs unsupported on the test's temp dir; xattr not checked")
		} else {
			t.Errorf("xattr: %v", err)
		}
	} else if string(buf[:n]) != "yes" {
		t.Errorf("xattr = %q", buf[:n])
	}
}

// A layer cannot write outside the root through a symlink, and a later
// layer replaces a directory with a file.
func TestImageFlattenConfined(t *testing.T) {
	needRoot(t)
	outside := t.TempDir()
	root := flatten(t,
		testimage.Layer([]testimage.File{
			{Name: "esc", Type: tar.TypeSymlink, Link: outside},
			{Name: "up", Type: tar.TypeSymlink, Link: "../../../../../../" + outside},
			{Name: "d/", Type: tar.TypeDir}, {Name: "d/x", Data: []byte("x")},
		}),
		testimage.Layer([]testimage.File{
			{Name: "esc/pwned", Data: []byte("no")},
			{Name: "up/pwned2", Data: []byte("no")},
			{Name: "d", Data: []byte("now a file")},
		}))
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Fatalf("a layer wrote outside the root: %v", ents)
	}
	if _, err := os.Stat(filepath.Join(root, outside, "pwned")); err != nil {
		t.Errorf("esc/pwned not inside the root: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "d")); string(b) != "now a file" {
		t.Errorf("d = %q", b)
	}
}

func TestImageRunConfig(t *testing.T) {
	ic := v1.Config{Entrypoint: []string{"/ep"}, Cmd: []string{"a", "b"}, Env: []string{"PATH=/x", "A=1"}, WorkingDir: "/w", User: "app"}
	rc := runConfig(ic, instance.Config{})
	if strings.Join(rc.Args, " ") != "/ep a b" || rc.Workdir != "/w" || rc.User != "app" || strings.Join(rc.Env, " ") != "PATH=/x A=1" {
		t.Errorf("no overrides: %+v", rc)
	}
	rc = runConfig(ic, instance.Config{Cmd: []string{"c"}, Env: map[string]string{"A": "2", "B": "3"}, Workdir: "/o"})
	if strings.Join(rc.Args, " ") != "/ep c" || rc.Workdir != "/o" || strings.Join(rc.Env, " ") != "PATH=/x A=2 B=3" {
		t.Errorf("cmd override: %+v", rc)
	}
	rc = runConfig(ic, instance.Config{Entrypoint: []string{"/other"}})
	if strings.Join(rc.Args, " ") != "/other" {
		t.Errorf("entrypoint override keeps the image's cmd: %+v", rc)
	}
	rc = runConfig(v1.Config{Cmd: []string{"x"}}, instance.Config{})
	if rc.Workdir != "/" || !strings.HasPrefix(rc.Env[0], "PATH=/usr/local/sbin") {
		t.Errorf("defaults: %+v", rc)
	}
}

func newStore(t *testing.T) *Store {
	t.Helper()
	if _, err := os.Stat("/usr/bin/mkfs.erofs"); err != nil {
		t.Skip("needs mkfs.erofs (make deps)")
	}
	dir := t.TempDir()
	s, err := Open(Options{Dir: filepath.Join(dir, "images"), InstanceDir: func(n string) string { return filepath.Join(dir, "inst", n) }})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// nothingHalfMade checks the cache holds no work in progress and no
// image directory but the ready ones.
func nothingHalfMade(t *testing.T, s *Store) {
	t.Helper()
	if ents, _ := os.ReadDir(s.tmpDir()); len(ents) != 0 {
		t.Errorf("tmp holds %d entries after the pull", len(ents))
	}
	ready := map[string]bool{}
	for _, e := range s.Entries() {
		if e.Status == Ready {
			ready[filepath.Base(s.ImageDir(e.Digest))] = true
		}
	}
	ents, _ := os.ReadDir(filepath.Join(s.opt.Dir, "sha256"))
	for _, e := range ents {
		if !ready[e.Name()] {
			t.Errorf("cache holds %s, which no ready image names", e.Name())
		}
	}
}

func TestImagePullDedupAndReopen(t *testing.T) {
	needRoot(t)
	var blobGets atomic.Int32
	host := testimage.Serve(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") {
				blobGets.Add(1)
			}
			h.ServeHTTP(w, r)
		})
	})
	img, err := testimage.Standard("true")
	if err != nil {
		t.Skip(err)
	}
	ref := host + "/test/app:v1"
	testimage.Push(t, ref, img)
	before := blobGets.Load()
	s := newStore(t)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	ents := make([]Entry, 4)
	for k := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ents[k], errs[k] = s.Pull(context.Background(), ref, 0)
		}()
	}
	wg.Wait()
	want, _ := img.Digest()
	for k, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
		if ents[k].Digest != want.String() || ents[k].Status != Ready {
			t.Fatalf("pull %d: %+v", k, ents[k])
		}
	}
	// One config blob and three layers, once.
	if n := blobGets.Load() - before; n != 4 {
		t.Errorf("4 concurrent pulls fetched %d blobs; want 4 (config + 3 layers, once)", n)
	}
	nothingHalfMade(t, s)
	e, _ := s.Lookup(ents[0].Ref)
	if e.Size < 2100*8 || e.Done != e.Total || !bytes.Contains(e.Config, []byte("from-image")) {
		t.Errorf("entry %+v", e)
	}
	if fi, err := os.Stat(filepath.Join(s.ImageDir(e.Digest), layout.ImageRootfs)); err != nil || fi.Size() == 0 {
		t.Fatalf("rootfs: %v", err)
	}
	// A second store on the same directory finds it ready, without the network.
	s2, err := Open(s.opt)
	if err != nil {
		t.Fatal(err)
	}
	if e2, ok := s2.Lookup(e.Ref); !ok || e2.Status != Ready || e2.Digest != e.Digest {
		t.Fatalf("reopened: %+v %v", e2, ok)
	}
	before = blobGets.Load()
	if _, err := s2.Get(context.Background(), ref, 0); err != nil || blobGets.Load() != before {
		t.Fatalf("Get of a cached image: %v, %d blob fetches", err, blobGets.Load()-before)
	}
	// rm: refused while a VM uses it, done after.
	s2.use("web", e.Digest)
	if err := s2.Remove(ref); !errors.Is(err, syscall.EBUSY) {
		t.Fatalf("rm in use: %v", err)
	}
	s2.release("web")
	if err := s2.Remove(ref); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s2.ImageDir(e.Digest)); !os.IsNotExist(err) {
		t.Fatalf("image dir still there after rm: %v", err)
	}
	if err := s2.Remove(ref); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("rm of a removed image: %v", err)
	}
}

func TestImagePullIndexPicksPlatform(t *testing.T) {
	needRoot(t)
	host := testimage.Serve(t, nil)
	mine, err := testimage.Image(v1.Config{Cmd: []string{"/x"}}, testimage.Layer([]testimage.File{{Name: "mine", Data: []byte("1")}}))
	if err != nil {
		t.Fatal(err)
	}
	other, _ := testimage.Image(v1.Config{Cmd: []string{"/x"}}, testimage.Layer([]testimage.File{{Name: "other", Data: []byte("2")}}))
	arch := "arm64"
	s := newStore(t)
	if s.opt.Arch == "arm64" {
		arch = "amd64"
	}
	testimage.PushIndex(t, host+"/multi:1", map[string]v1.Image{"linux/" + s.opt.Arch: mine, "linux/" + arch: other, "windows/" + s.opt.Arch: other})
	e, err := s.Pull(context.Background(), host+"/multi:1", 0)
	if err != nil {
		t.Fatal(err)
	}
	if want, _ := mine.Digest(); e.Digest != want.String() {
		t.Fatalf("picked %s, want %s (linux/%s)", e.Digest, want, s.opt.Arch)
	}
	testimage.PushIndex(t, host+"/foreign:1", map[string]v1.Image{"linux/" + arch: other})
	_, err = s.Pull(context.Background(), host+"/foreign:1", 0)
	if err == nil || !strings.Contains(err.Error(), "no variant for linux/"+s.opt.Arch) {
		t.Fatalf("foreign-only index: %v", err)
	}
}

func TestImagePullErrors(t *testing.T) {
	needRoot(t)
	// The registry refuses anyone for private/, and mangles layer blobs
	// of corrupt/ and truncated/.
	host := testimage.Serve(t, testimage.Faulty)
	img, err := testimage.Standard("true")
	if err != nil {
		t.Skip(err)
	}
	for _, repo := range []string{"corrupt/app:v1", "short/app:v1"} {
		testimage.Push(t, host+"/"+repo, img)
	}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	down := l.Addr().String()
	l.Close()
	s := newStore(t)
	for _, tt := range []struct {
		ref   string
		errno syscall.Errno
		says  string
	}{
		{host + "/nosuch/app:v1", syscall.ENOENT, "unknown"},
		{down + "/app:v1", syscall.EHOSTUNREACH, "unreachable"},
		{host + "/private/app:v1", syscall.EACCES, "auth refused"},
		{host + "/corrupt/app:v1", syscall.EIO, "corrupt"},
		{host + "/short/app:v1", syscall.EIO, "truncated"},
		{"10.1.2.3:5000/app:v1", syscall.EPERM, "plain HTTP for loopback registries only"},
		{"Not A Ref", syscall.EINVAL, "not a valid image reference"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 20e9)
		_, err := s.Pull(ctx, tt.ref, 0)
		cancel()
		if err == nil || errno.Of(err) != tt.errno || !strings.Contains(err.Error(), tt.says) {
			t.Errorf("pull %s: errno %v, %v; want %v and %q", tt.ref, errno.Of(err), err, tt.errno, tt.says)
		}
		t.Logf("%s: %v", tt.ref, err)
		nothingHalfMade(t, s)
	}
	// Failed pulls show as failed with their error.
	if e, ok := s.Lookup(host + "/corrupt/app:v1"); !ok || e.Status != Failed || e.Err == "" {
		t.Errorf("corrupt entry: %+v", e)
	}
}

func TestImagePartPrepare(t *testing.T) {
	needRoot(t)
	host := testimage.Serve(t, nil)
	img, err := testimage.Standard("exit 3")
	if err != nil {
		t.Skip(err)
	}
	ref := host + "/test/app:v1"
	testimage.Push(t, ref, img)
	s := newStore(t)
	p := s.Part()
	// No image: nothing to add.
	plan := &instance.Plan{Facts: map[string]string{}}
	if err := p.Prepare(context.Background(), "plain", instance.DefaultConfig(), plan); err != nil || len(plan.Disks)+len(plan.Cmdline) != 0 {
		t.Fatalf("{}: %v %+v", err, plan)
	}
	cfg := instance.DefaultConfig()
	cfg.Image = ref
	cfg.Disk = "64M"
	os.MkdirAll(s.opt.InstanceDir("web"), 0o755)
	if err := p.Prepare(context.Background(), "web", cfg, plan); err != nil {
		t.Fatal(err)
	}
	if len(plan.Disks) != 3 || !plan.Disks[0].ReadOnly || plan.Disks[1].ReadOnly || !plan.Disks[2].ReadOnly ||
		strings.Join(plan.Cmdline, " ") != "hypefs.run=image" || !strings.HasPrefix(plan.Facts["digest"], "sha256:") {
		t.Fatalf("plan %+v", plan)
	}
	if fi, err := os.Stat(plan.Disks[1].Path); err != nil || fi.Size() != 64<<20 {
		t.Fatalf("writable disk: %v", err)
	}
	rc, err := runcfg.Decode(must(os.ReadFile(plan.Disks[2].Path)))
	if err != nil || strings.Join(rc.Args, " ") != "/bin/sh -c exit 3" || rc.Workdir != "/data" {
		t.Fatalf("run config %+v, %v", rc, err)
	}
	if err := s.Remove(ref); !errors.Is(err, syscall.EBUSY) {
		t.Fatalf("rm while the VM runs: %v", err)
	}
	p.Ended("web")
	p.Deleted("web")
	if _, err := os.Stat(plan.Disks[1].Path); !os.IsNotExist(err) {
		t.Fatalf("writable disk survives Deleted: %v", err)
	}
	// A big image on a small disk.
	base, _ := testimage.Base()
	big, _ := testimage.Image(v1.Config{Cmd: []string{"/bin/true"}}, base, testimage.Filler("f", 10, 20<<20, 1))
	testimage.Push(t, host+"/big:v1", big)
	cfg.Image, cfg.Disk = host+"/big:v1", "16M"
	err = p.Prepare(context.Background(), "small", cfg, &instance.Plan{Facts: map[string]string{}})
	if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), "too small") {
		t.Fatalf("small disk: %v", err)
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

// A whiteout cannot remove the tree itself or anything beside it.
func TestImageWhiteoutConfined(t *testing.T) {
	needRoot(t)
	parent := t.TempDir()
	root := filepath.Join(parent, "tree")
	os.Mkdir(root, 0o755)
	victim := filepath.Join(parent, "victim")
	os.WriteFile(victim, []byte("keep"), 0o644)
	for _, name := range []string{".wh...", ".wh..", ".wh.", "sub/.wh..."} {
		fl := newFlattener(root)
		err := fl.apply(bytes.NewReader(testimage.Layer([]testimage.File{{Name: "sub/", Type: tar.TypeDir}, {Name: name, Data: nil}})))
		fl.finish()
		if err == nil && name != "sub/.wh..." {
			t.Errorf("whiteout %q accepted", name)
		}
		if _, err := os.Stat(victim); err != nil {
			t.Fatalf("whiteout %q removed a file beside the tree: %v", name, err)
		}
		if _, err := os.Stat(root); err != nil {
			t.Fatalf("whiteout %q removed the tree itself: %v", name, err)
		}
	}
}

// A re-pull that fails after the registry named a new image keeps the
// image cached before: it stays ready, and boots still get it.
func TestImageRepullFailureKeepsCache(t *testing.T) {
	needRoot(t)
	var failLayers atomic.Value // []string: layer digests to fail (not the config)
	failLayers.Store([]string(nil))
	host := testimage.Serve(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") {
				for _, d := range failLayers.Load().([]string) {
					if strings.HasSuffix(r.URL.Path, d) {
						w.WriteHeader(http.StatusInternalServerError)
						return
					}
				}
			}
			h.ServeHTTP(w, r)
		})
	})
	ref := host + "/app:v1"
	one, err := testimage.Standard("echo one")
	if err != nil {
		t.Skip(err)
	}
	testimage.Push(t, ref, one)
	s := newStore(t)
	first, err := s.Pull(context.Background(), ref, 0)
	if err != nil {
		t.Fatal(err)
	}
	two, err := testimage.Standard("echo two")
	if err != nil {
		t.Fatal(err)
	}
	testimage.Push(t, ref, two) // the tag moves
	layers, err := two.Layers()
	if err != nil {
		t.Fatal(err)
	}
	var digests []string
	for _, l := range layers {
		d, _ := l.Digest()
		digests = append(digests, d.String())
	}
	failLayers.Store(digests) // the manifest and config come, the layers fail
	if _, err := s.Pull(context.Background(), ref, 0); err == nil {
		t.Fatal("a re-pull with failing blobs succeeded")
	}
	got, err := s.Get(context.Background(), ref, 0)
	if err != nil {
		t.Fatalf("the cached image no longer serves: %v", err)
	}
	if got.Status != Ready || got.Digest != first.Digest || got.Err == "" {
		t.Fatalf("after a failed re-pull: status %s digest %s (want %s) err %q", got.Status, got.Digest, first.Digest, got.Err)
	}
}

// A layer whose sparse file declares 1 TiB is refused (EFBIG) as soon as
// its header is read: nothing of it is written, in memory or on disk, and
// nothing half made stays.
func TestImageSparseBomb(t *testing.T) {
	needRoot(t)
	host := testimage.Serve(t, nil)
	base, err := testimage.Base()
	if err != nil {
		t.Skip(err)
	}
	img, err := testimage.Image(v1.Config{Cmd: []string{"true"}}, base, testimage.SparseLayer("big", 1<<40))
	if err != nil {
		t.Fatal(err)
	}
	ref := host + "/bomb/app:v1"
	testimage.Push(t, ref, img)
	s := newStore(t)
	s.opt.MaxBytes = 256 << 20
	_, err = s.Pull(context.Background(), ref, 0)
	if errno.Of(err) != syscall.EFBIG || !strings.Contains(err.Error(), "1024.0 GiB") || !strings.Contains(err.Error(), "--image-max-bytes") {
		t.Fatalf("pull of a sparse bomb: %v (errno %v), want EFBIG naming the size and the flag", err, errno.Of(err))
	}
	if e, _ := s.Lookup(ref); e.Status != Failed || !strings.Contains(e.Err, "sparse") {
		t.Errorf("entry: %+v", e)
	}
	nothingHalfMade(t, s)
	// The default limit is at most half of what the disk has free.
	s.opt.MaxBytes = 0
	var st unix.Statfs_t
	unix.Statfs(s.opt.Dir, &st)
	if got, free := s.maxBytes(), int64(st.Bavail)*int64(st.Bsize); got > free/2+1<<20 || got > DefaultMaxBytes {
		t.Errorf("default limit %d with %d free", got, free)
	}
}

// At most MaxPulls pulls fetch at once; the others wait their turn and
// then succeed.
func TestImageMaxPulls(t *testing.T) {
	needRoot(t)
	var inFlight, most atomic.Int32
	host := testimage.Serve(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.Contains(r.URL.Path, "/manifests/") && r.Method == http.MethodGet && r.Header.Get("X-Test-Push") == "" {
				n := inFlight.Add(1)
				for {
					m := most.Load()
					if n <= m || most.CompareAndSwap(m, n) {
						break
					}
				}
				defer inFlight.Add(-1)
				time.Sleep(200 * time.Millisecond)
			}
			h.ServeHTTP(w, r)
		})
	})
	base, err := testimage.Base()
	if err != nil {
		t.Skip(err)
	}
	img, err := testimage.Image(v1.Config{Cmd: []string{"true"}}, base)
	if err != nil {
		t.Fatal(err)
	}
	for k := 0; k < 6; k++ {
		testimage.Push(t, fmt.Sprintf("%s/many/app:%d", host, k), img)
	}
	most.Store(0)
	dir := t.TempDir()
	s, err := Open(Options{Dir: filepath.Join(dir, "images"), MaxPulls: 2, InstanceDir: func(n string) string { return filepath.Join(dir, "inst", n) }})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for k := 0; k < 6; k++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.Pull(context.Background(), fmt.Sprintf("%s/many/app:%d", host, k), 0); err != nil {
				t.Errorf("pull %d: %v", k, err)
			}
		}()
	}
	wg.Wait()
	if m := most.Load(); m > 2 || m == 0 {
		t.Errorf("%d pulls fetched their manifests at once; at most 2 may", m)
	}
}
