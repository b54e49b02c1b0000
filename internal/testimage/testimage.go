// Package testimage builds OCI images for tests from /bin/busybox
// (busybox-static) and generated files, and serves them from an
// in-process registry (go-containerregistry's pkg/registry) on loopback.
package testimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"log"
	"math/rand"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Serve starts a registry on 127.0.0.1 and returns its host:port. wrap,
// if not nil, sits in front of it (to refuse auth, corrupt blobs, ...).
func Serve(t testing.TB, wrap func(http.Handler) http.Handler) string {
	t.Helper()
	var h http.Handler = registry.New(registry.Logger(nopLogger()))
	if wrap != nil {
		h = wrap(h)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// Faulty wraps a registry so that it misbehaves by repository: private/
// refuses everyone (401), corrupt/ flips a byte in the middle of every
// layer blob, short/ drops the connection halfway through every layer
// blob. Other repositories are served as they are. Use with Serve.
func Faulty(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		switch {
		case strings.HasPrefix(p, "/v2/private/"):
			w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`)
			return
		case r.Method == http.MethodGet && strings.Contains(p, "/blobs/") &&
			(strings.HasPrefix(p, "/v2/corrupt/") || strings.HasPrefix(p, "/v2/short/")):
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			body := rec.Body.Bytes()
			full := len(body)
			if full > 4096 { // a layer, not the config
				body = append([]byte{}, body...)
				if strings.HasPrefix(p, "/v2/corrupt/") {
					body[full/2] ^= 0xff
				} else {
					body = body[:full/2] // the connection drops halfway
				}
			}
			for k, v := range rec.Header() {
				w.Header()[k] = v
			}
			w.Header().Set("Content-Length", strconv.Itoa(full))
			w.WriteHeader(rec.Code)
			w.Write(body)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// Push uploads img as ref ("HOST/repo:tag").
func Push(t testing.TB, ref string, img v1.Image) {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
}

// PushIndex uploads an index of images by platform as ref.
func PushIndex(t testing.TB, ref string, imgs map[string]v1.Image) {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	var idx v1.ImageIndex = empty.Index
	for plat, img := range imgs {
		os, arch, _ := strings.Cut(plat, "/")
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img,
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: os, Architecture: arch}}})
	}
	if err := remote.WriteIndex(r, idx); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
}

// File is one tar entry.
type File struct {
	Name     string
	Type     byte // tar.TypeReg if zero
	Mode     int64
	Uid, Gid int
	Data     []byte
	Link     string // symlink or hardlink target
	Major    int64
	Minor    int64
	Xattrs   map[string]string
}

// Layer makes an (uncompressed) tar of files.
func Layer(files []File) []byte {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	mt := time.Unix(1700000000, 0)
	for _, f := range files {
		h := &tar.Header{Name: f.Name, Typeflag: f.Type, Mode: f.Mode, Uid: f.Uid, Gid: f.Gid,
			Linkname: f.Link, Devmajor: f.Major, Devminor: f.Minor, ModTime: mt, Format: tar.FormatPAX}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Mode == 0 {
			h.Mode = 0o644
			if h.Typeflag == tar.TypeDir {
				h.Mode = 0o755
			}
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(f.Data))
		}
		for k, v := range f.Xattrs {
			if h.PAXRecords == nil {
				h.PAXRecords = map[string]string{}
			}
			h.PAXRecords["SCHILY.xattr."+k] = v
		}
		if err := tw.WriteHeader(h); err != nil {
			panic(err)
		}
		if h.Typeflag == tar.TypeReg {
			tw.Write(f.Data)
		}
	}
	tw.Close()
	return b.Bytes()
}

// Image assembles layers (uncompressed tars, lowest first) and a run
// config into a linux image for this host's arch.
func Image(cfg v1.Config, layers ...[]byte) (v1.Image, error) {
	img, err := mutate.ConfigFile(empty.Image, &v1.ConfigFile{
		OS: "linux", Architecture: runtime.GOARCH, Config: cfg,
		RootFS: v1.RootFS{Type: "layers"},
	})
	if err != nil {
		return nil, err
	}
	for _, l := range layers {
		data := l
		layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(data)), nil
		}, tarball.WithCompressionLevel(gzip.BestSpeed), tarball.WithCompressedCaching)
		if err != nil {
			return nil, err
		}
		if img, err = mutate.AppendLayers(img, layer); err != nil {
			return nil, err
		}
	}
	return img, nil
}

// Applets are the busybox links the base layer has.
var Applets = []string{"sh", "echo", "cat", "ls", "stat", "id", "pwd", "wc", "kill", "sleep",
	"test", "[", "env", "grep", "find", "head", "printf", "true", "false", "touch", "rm", "mkdir", "ln", "chmod"}

// Base is the lowest layer: busybox-static with applet links, /etc with
// users root and app (1000), and files the upper layers delete.
func Base() ([]byte, error) {
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		return nil, fmt.Errorf("needs /bin/busybox (busybox-static): %w", err)
	}
	files := []File{
		{Name: "bin/", Type: tar.TypeDir}, {Name: "etc/", Type: tar.TypeDir},
		{Name: "tmp/", Type: tar.TypeDir, Mode: 0o1777}, {Name: "root/", Type: tar.TypeDir, Mode: 0o700},
		{Name: "home/", Type: tar.TypeDir}, {Name: "home/app/", Type: tar.TypeDir, Uid: 1000, Gid: 1000},
		{Name: "bin/busybox", Mode: 0o755, Data: bb},
		{Name: "etc/passwd", Data: []byte("root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n")},
		{Name: "etc/group", Data: []byte("root:x:0:\napp:x:1000:\nextra:x:2000:app\n")},
		{Name: "etc/gone", Data: []byte("whited out\n")},
		{Name: "opq/", Type: tar.TypeDir},
		{Name: "opq/old1", Data: []byte("1")}, {Name: "opq/old2", Data: []byte("2")},
	}
	for _, a := range Applets {
		files = append(files, File{Name: "bin/" + a, Type: tar.TypeSymlink, Link: "busybox", Mode: 0o777})
	}
	return Layer(files), nil
}

// Middle holds n small files under /data, a hardlink, a setuid file,
// a device node, a fifo and an xattr.
func Middle(n int) []byte {
	files := []File{{Name: "data/", Type: tar.TypeDir}, {Name: "devs/", Type: tar.TypeDir}}
	for i := 0; i < n; i++ {
		f := File{Name: fmt.Sprintf("data/f%04d", i), Data: []byte(fmt.Sprintf("file %d\n", i))}
		if i == 0 {
			f.Xattrs = map[string]string{"user.hypefs": "yes"}
		}
		files = append(files, f)
	}
	files = append(files,
		File{Name: "data/link", Type: tar.TypeLink, Link: "data/f0001"},
		File{Name: "bin/suid", Mode: 0o4755, Data: []byte("#!/bin/sh\n")},
		File{Name: "devs/null", Type: tar.TypeChar, Mode: 0o666, Major: 1, Minor: 3},
		File{Name: "devs/fifo", Type: tar.TypeFifo, Mode: 0o600},
		File{Name: "data/owned", Uid: 1000, Gid: 2000, Mode: 0o640, Data: []byte("app's\n")},
	)
	return Layer(files)
}

// Top deletes /etc/gone (whiteout), empties /opq (opaque) and adds /opq/new.
func Top() []byte {
	return Layer([]File{
		{Name: "etc/.wh.gone"},
		{Name: "opq/", Type: tar.TypeDir},
		{Name: "opq/.wh..wh..opq"},
		{Name: "opq/new", Data: []byte("new\n")},
	})
}

// Filler is a layer of files totalling about bytes, half random (so it
// compresses about as well as binaries do).
func Filler(dir string, files int, bytes int64, seed int64) []byte {
	rng := rand.New(rand.NewSource(seed))
	per := bytes / int64(files)
	out := []File{{Name: dir + "/", Type: tar.TypeDir}}
	for i := 0; i < files; i++ {
		b := make([]byte, per)
		rng.Read(b[:per/2])
		for j := per / 2; j < per; j++ {
			b[j] = "abcdefgh \n"[rng.Intn(10)]
		}
		out = append(out, File{Name: fmt.Sprintf("%s/d%02d/f%05d", dir, i%50, i), Data: b})
	}
	return Layer(out)
}

// Standard is the image tests run: Base, Middle(2100), Top, with
// entrypoint ["/bin/sh","-c"] and the given cmd.
func Standard(cmd string) (v1.Image, error) {
	base, err := Base()
	if err != nil {
		return nil, err
	}
	return Image(v1.Config{
		Entrypoint: []string{"/bin/sh", "-c"}, Cmd: []string{cmd},
		Env: []string{"PATH=/bin", "FOO=from-image", "BAR=image-bar"}, WorkingDir: "/data",
	}, base, Middle(2100), Top())
}

func nopLogger() *log.Logger { return log.New(io.Discard, "", 0) }

// WithConfig returns img with its config file replaced.
func WithConfig(img v1.Image, cf *v1.ConfigFile) (v1.Image, error) { return mutate.ConfigFile(img, cf) }

// SparseLayer is a layer holding one sparse file that declares realSize
// bytes but carries 512 (a PAX 1.0 GNU sparse entry, as GNU tar writes
// them): what a "tar bomb" layer looks like to an unpacker that trusts
// its holes. archive/tar cannot write sparse entries, so the extended
// header is made as a plain entry and given its type afterwards.
func SparseLayer(name string, realSize int64) []byte {
	rec := func(k, v string) string {
		n := len(k) + len(v) + 3
		for {
			s := fmt.Sprintf("%d %s=%s\n", n, k, v)
			if len(s) == n {
				return s
			}
			n = len(s)
		}
	}
	records := rec("GNU.sparse.major", "1") + rec("GNU.sparse.minor", "0") +
		rec("GNU.sparse.name", name) + rec("GNU.sparse.realsize", fmt.Sprint(realSize))
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	tw.WriteHeader(&tar.Header{Name: "PaxHeaders/" + name, Size: int64(len(records)), Mode: 0o644, Typeflag: tar.TypeReg, Format: tar.FormatUSTAR})
	tw.Write([]byte(records))
	sparseMap := make([]byte, 512) // one region of 512 bytes at 0
	copy(sparseMap, "1\n0\n512\n")
	tw.WriteHeader(&tar.Header{Name: name, Size: 1024, Mode: 0o644, Typeflag: tar.TypeReg, Format: tar.FormatUSTAR})
	tw.Write(sparseMap)
	tw.Write(bytes.Repeat([]byte("x"), 512))
	tw.Close()
	out := b.Bytes()
	hdr := out[:512]
	hdr[156] = tar.TypeXHeader
	copy(hdr[148:156], "        ")
	sum := 0
	for _, c := range hdr {
		sum += int(c)
	}
	copy(hdr[148:156], fmt.Sprintf("%06o\x00 ", sum))
	return out
}
