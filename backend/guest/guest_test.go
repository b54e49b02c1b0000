package guest

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"hypefs/backend/layout"
)

func TestFindXZ(t *testing.T) {
	b := make([]byte, 21196)
	b[100] = 0xFD // a lone first byte is not a match
	b = append(b, xzMagic...)
	b = append(b, 0, 1)
	if got := findXZ(b); got != 21196 {
		t.Errorf("findXZ = %d; want 21196", got)
	}
	if got := findXZ([]byte("no stream here")); got != -1 {
		t.Errorf("findXZ(no magic) = %d; want -1", got)
	}
}

func TestUnpackKernelGzip(t *testing.T) {
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	zw.Write([]byte("arm64 Image"))
	zw.Close()
	var out bytes.Buffer
	if err := unpackKernel(z.Bytes(), &out); err != nil || out.String() != "arm64 Image" {
		t.Errorf("unpackKernel(gzip) = %q, %v; want %q", out.String(), err, "arm64 Image")
	}
	if err := unpackKernel([]byte("MZ not compressed"), &out); err == nil {
		t.Error("unpackKernel(no stream) succeeded; want error")
	}
}

func TestParseModinfo(t *testing.T) {
	sec := []byte("license=GPL\x00softdep=pre: crc32c\x00depends=mbcache,jbd2,crc16\x00retpoline=Y\x00intree=Y\x00name=ext4\x00vermagic=6.1.0\x00")
	got := parseModinfo(sec, "kernel/fs/ext4/ext4.ko")
	want := modInfo{Name: "ext4", Depends: []string{"mbcache", "jbd2", "crc16"}, Softdep: "pre: crc32c"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("parseModinfo = %+v; want %+v", got, want)
	}
	// No name= and an empty depends=: the file name, dashes normalised.
	got = parseModinfo([]byte("depends=\x00"), "arch/x86/crypto/crc32c-intel.ko")
	if got.Name != "crc32c_intel" || len(got.Depends) != 0 {
		t.Errorf("parseModinfo(no name) = %+v; want crc32c_intel, no depends", got)
	}
}

func TestLoadOrder(t *testing.T) {
	info := map[string]modInfo{
		"virtio_ring": {Name: "virtio_ring"},
		"virtio":      {Name: "virtio"},
		"virtio_blk":  {Name: "virtio_blk", Depends: []string{"virtio", "virtio_ring"}},
		"ext4":        {Name: "ext4", Depends: []string{"mbcache", "jbd2", "crc16"}},
		"mbcache":     {Name: "mbcache"},
		"jbd2":        {Name: "jbd2"},
		"a":           {Name: "a", Depends: []string{"b"}},
		"b":           {Name: "b", Depends: []string{"a"}},
		"lonely":      {Name: "lonely", Depends: []string{"gone"}},
	}
	builtin := map[string]bool{"crc16": true, "virtio_mmio": true}
	tests := []struct {
		roots       []string
		order, miss []string
		err         string
	}{
		{roots: []string{"virtio_blk", "virtio"}, order: []string{"virtio", "virtio_ring", "virtio_blk"}},
		{roots: []string{"ext4", "virtio_mmio", "crc32c-intel"}, order: []string{"mbcache", "jbd2", "ext4"}, miss: []string{"crc32c_intel"}},
		{roots: []string{"a"}, err: "cycle: a -> b -> a"},
		{roots: []string{"lonely"}, err: "module gone (needed by lonely) not in package"},
	}
	for _, tt := range tests {
		order, miss, err := loadOrder(tt.roots, info, builtin)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("loadOrder(%v) error = %v; want %q", tt.roots, err, tt.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(order, tt.order) || !reflect.DeepEqual(miss, tt.miss) {
			t.Errorf("loadOrder(%v) = %v, %v, %v; want %v, %v", tt.roots, order, miss, err, tt.order, tt.miss)
		}
	}
}

func TestVersionLess(t *testing.T) {
	for _, tt := range []struct {
		a, b string
		want bool
	}{
		{"6.1.0-56-amd64", "6.1.0-100-amd64", true},
		{"6.1.0-100-amd64", "6.1.0-56-amd64", false},
		{"6.1.0-56-amd64", "6.12.0-1-amd64", true},
		{"6.1.0-56-amd64", "6.1.0-56-amd64", false},
		{"6.1", "6.1.0", true},
	} {
		if got := versionLess(tt.a, tt.b); got != tt.want {
			t.Errorf("versionLess(%q, %q) = %v; want %v", tt.a, tt.b, got, tt.want)
		}
	}
}

func TestParseAptDepends(t *testing.T) {
	out := []byte("linux-image-amd64\n  Depends: linux-image-6.1.0-56-amd64\n  Recommends: firmware\n")
	if got := parseAptDepends(out); got != "linux-image-6.1.0-56-amd64" {
		t.Errorf("parseAptDepends = %q", got)
	}
	if got := parseAptDepends([]byte("linux-image-arm64\n  Depends: linux-image-6.1.0-56-arm64:arm64\n")); got != "linux-image-6.1.0-56-arm64" {
		t.Errorf("parseAptDepends(:arch) = %q", got)
	}
}

func TestNoKernel(t *testing.T) {
	dir := t.TempDir()
	_, err := Prepare(context.Background(), Options{KernelsDir: dir, Init: "/bin/busybox"})
	if !errors.Is(err, ErrNoKernel) || !strings.Contains(err.Error(), `no guest kernel in `+dir+` (hint: run "make deps")`) {
		t.Errorf("Prepare(empty cache) error = %v; want ErrNoKernel with a make deps hint", err)
	}
}

// fakeKernel makes a cached kernel with no modules, enough for Prepare.
func fakeKernel(t *testing.T, dir, version, arch string) {
	t.Helper()
	k := filepath.Join(dir, version)
	if err := os.MkdirAll(filepath.Join(k, layout.KernelModules), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string]string{layout.KernelArch: arch + "\n", layout.KernelModOrder: "", layout.KernelImage(arch): "kernel"} {
		if err := os.WriteFile(filepath.Join(k, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// copyFile copies src to dst, giving dst a fresh inode.
func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Skipf("no %s: %v", src, err)
	}
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		t.Fatal(err)
	}
}

// TestInitramfsCache checks the cache key: unchanged inputs reuse the
// image, a touched but identical init reuses it too, changed contents
// build a new one. The static busybox stands in for the init.
func TestInitramfsCache(t *testing.T) {
	dir := t.TempDir()
	fakeKernel(t, dir, "6.1.0-9-amd64", "amd64")
	fakeKernel(t, dir, "6.1.0-10-amd64", "amd64")
	fakeKernel(t, dir, "6.1.0-11-arm64", "arm64")
	os.MkdirAll(filepath.Join(dir, ".tmp-6.1.0-99-amd64-x"), 0o755) // never picked
	initPath := filepath.Join(dir, "init")
	copyFile(t, "/bin/busybox", initPath)
	opts := Options{KernelsDir: dir, Init: initPath}
	ctx := context.Background()

	b1, err := Prepare(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if b1.KernelVersion != "6.1.0-10-amd64" {
		t.Errorf("KernelVersion = %s; want the newest amd64, 6.1.0-10-amd64", b1.KernelVersion)
	}
	start := time.Now()
	b2, err := Prepare(ctx, opts)
	if err != nil || b2.Initramfs != b1.Initramfs {
		t.Fatalf("second Prepare = %v, %v; want the same image %s", b2, err, b1.Initramfs)
	}
	t.Logf("warm Prepare: %v", time.Since(start))

	later := time.Now().Add(time.Minute)
	os.Chtimes(initPath, later, later)
	if b3, err := Prepare(ctx, opts); err != nil || b3.Initramfs != b1.Initramfs {
		t.Errorf("Prepare after touch = %v, %v; want the same image %s", b3, err, b1.Initramfs)
	}

	f, _ := os.OpenFile(initPath, os.O_APPEND|os.O_WRONLY, 0)
	f.Write([]byte("changed"))
	f.Close()
	b4, err := Prepare(ctx, opts)
	if err != nil || b4.Initramfs == b1.Initramfs {
		t.Errorf("Prepare after change = %v, %v; want a new image", b4, err)
	}

	opts.Init = filepath.Join(dir, "missing-init")
	if _, err := Prepare(ctx, opts); err == nil || !strings.Contains(err.Error(), `make build`) {
		t.Errorf("Prepare(missing init) error = %v; want a make build hint", err)
	}
	opts.Init, opts.Busybox = initPath, filepath.Join(dir, "missing-busybox")
	if _, err := Prepare(ctx, opts); err == nil || !strings.Contains(err.Error(), `make deps`) {
		t.Errorf("Prepare(missing busybox) error = %v; want a make deps hint", err)
	}
}

func TestCheckStatic(t *testing.T) {
	if err := checkStatic("/bin/busybox", "amd64"); err != nil {
		t.Errorf("checkStatic(busybox) = %v", err)
	}
	if err := checkStatic("/bin/ls", "amd64"); err == nil || !strings.Contains(err.Error(), "dynamically linked") {
		t.Errorf("checkStatic(/bin/ls) = %v; want dynamically linked", err)
	}
	if err := checkStatic("/bin/busybox", "arm64"); err == nil {
		t.Error("checkStatic(amd64 busybox, arm64) succeeded")
	}
}
