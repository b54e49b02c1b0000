package bench

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"hypefs/backend/image"
	"hypefs/internal/testenv"
	"hypefs/internal/testimage"
)

// benchImage is the benchmarks' image: busybox plus 3,000 files of
// generated content (half random, so it compresses like binaries) in
// three layers, 50 MB in all.
func benchImage(b *testing.B, cmd []string) v1.Image {
	base, err := testimage.Base()
	if err != nil {
		b.Skip(err)
	}
	layers := [][]byte{base}
	for k := 0; k < 3; k++ {
		layers = append(layers, testimage.Filler(fmt.Sprintf("fill%d", k), 1000, 16<<20, int64(k)))
	}
	img, err := testimage.Image(v1.Config{Entrypoint: cmd, Env: []string{"PATH=/bin"}}, layers...)
	if err != nil {
		b.Fatal(err)
	}
	return img
}

// BenchmarkImageConvert: pull + convert of a 50 MB, 3,000-file image from
// a loopback registry into a bootable root disk, against hypeman's method
// on the same image: pull, unpack to a directory, mkfs.ext4 -d (with its
// options: 4 KiB blocks, no journal, sized 1.5x the content).
func BenchmarkImageConvert(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root (chown, mknod while unpacking)")
	}
	for _, tool := range []string{"mkfs.erofs", "mkfs.ext4"} {
		if _, err := exec.LookPath(tool); err != nil {
			b.Skipf("needs %s (make deps)", tool)
		}
	}
	host := testimage.Serve(b, nil)
	ref := host + "/bench/big:v1"
	testimage.Push(b, ref, benchImage(b, []string{"/bin/true"}))
	const runs = 3
	var mine, base, shm []time.Duration
	for k := 0; k < runs; k++ {
		dir := b.TempDir()
		s, err := image.Open(image.Options{Dir: filepath.Join(dir, "images"), InstanceDir: func(n string) string { return filepath.Join(dir, n) }})
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		if _, err := s.Pull(context.Background(), ref, 0); err != nil {
			b.Fatal(err)
		}
		mine = append(mine, time.Since(start))

		start = time.Now()
		hypemanConvert(b, ref, filepath.Join(dir, "hm"), "")
		base = append(base, time.Since(start))

		// For the record: hypeman's method with its tree in tmpfs too.
		start = time.Now()
		hypemanConvert(b, ref, filepath.Join(dir, "hm2"), "/dev/shm")
		shm = append(shm, time.Since(start))
		os.RemoveAll(dir)
	}
	b.Logf("pull+convert %v; hypeman's method %v; hypeman's method unpacking into tmpfs %v", mine, base, shm)
	fmt.Printf("image-convert: hypeman's method with its tree in tmpfs took %.3fs (ratio %.2f)\n", median(shm).Seconds(), median(mine).Seconds()/median(shm).Seconds())
	report(b, "image-convert", median(mine), median(base), "s", "<=0.3", 0)
}

func hypemanConvert(b *testing.B, ref, dir, treeIn string) {
	r, _ := name.ParseReference(ref)
	img, err := remote.Image(r)
	if err != nil {
		b.Fatal(err)
	}
	tree := filepath.Join(dir, "tree")
	if treeIn != "" {
		t, err := os.MkdirTemp(treeIn, "hm-tree-")
		if err != nil {
			b.Fatal(err)
		}
		defer os.RemoveAll(t)
		tree = t
	}
	os.MkdirAll(tree, 0o755)
	os.MkdirAll(dir, 0o755)
	size, err := image.Unpack(img, tree)
	if err != nil {
		b.Fatal(err)
	}
	out := filepath.Join(dir, "rootfs.ext4")
	blocks := (size*3/2)/4096 + 4096
	if o, err := exec.Command("mkfs.ext4", "-q", "-b", "4096", "-O", "^has_journal", "-d", tree, out, strconv.FormatInt(blocks, 10)).CombinedOutput(); err != nil {
		b.Fatalf("mkfs.ext4 -d: %v %s", err, o)
	}
	if f, err := os.Open(out); err == nil {
		f.Sync() // as the store syncs its image
		f.Close()
	}
}

// BenchmarkImageFirstLine: config write until the image's program has
// printed its first line in log, against QEMU started by hand with the
// same kernel, initramfs, command line and disks. The image is pulled
// beforehand: this measures booting an image, not pulling it.
func BenchmarkImageFirstLine(b *testing.B) {
	host := testimage.Serve(b, nil)
	ref := host + "/bench/first:v1"
	testimage.Push(b, ref, benchImage(b, []string{"/bin/echo", "first-line-from-image"}))
	d := testenv.NewDaemon(b)
	if out, err := testenv.Shell("echo pull " + ref + " > " + d.Path("images", "ctl")); err != nil {
		b.Fatalf("pull: %v %s %s", err, out, d.Read(d.Path("images", "error")))
	}
	const marker = "first-line-from-image"
	var mine, raw []time.Duration
	for k := 0; k < runs; k++ {
		n := fmt.Sprintf("first%d", k)
		if err := os.Mkdir(d.Path("instances", n), 0o755); err != nil {
			b.Fatal(err)
		}
		log := d.Inst(n, "log")
		start := time.Now()
		if err := os.WriteFile(d.Inst(n, "config"), []byte(`{"image":"`+ref+`"}`), 0o644); err != nil {
			b.Fatal(err)
		}
		if !testenv.WaitFor(2*time.Minute, func() bool { return fileHas(log, marker) }) {
			b.Fatalf("%s never printed its first line; error %q", n, d.Read(d.Inst(n, "error")))
		}
		mine = append(mine, time.Since(start))
		spec := loadShimConfig(b, filepath.Join(d.RunDir(n), "shim-config.json"))
		if !testenv.WaitFor(time.Minute, func() bool { return d.Status(n) == "stopped" }) {
			b.Fatalf("%s did not stop", n)
		}
		vm := startRaw(b, spec)
		raw = append(raw, vm.waitFor(b, marker))
		vm.kill()
		testenv.Shell("rmdir " + d.Path("instances", n))
	}
	report(b, "image-first-line", median(mine), median(raw), "s", "<=1.05", 0)
}

func (vm *rawVM) waitFor(b *testing.B, s string) time.Duration {
	timeout := time.After(2 * time.Minute)
	for !bytes.Contains(vm.seen.Bytes(), []byte(s)) {
		select {
		case chunk, ok := <-vm.out:
			if !ok {
				b.Fatalf("raw QEMU ended before printing %q", s)
			}
			vm.seen.Write(chunk)
		case <-timeout:
			b.Fatalf("raw QEMU did not print %q within 2 minutes", s)
		}
	}
	return time.Since(vm.started)
}
