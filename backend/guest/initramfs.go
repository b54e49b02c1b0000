package guest

import (
	"bufio"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/u-root/u-root/pkg/cpio"

	"hypefs/backend/layout"
)

// initramfsFormat changes whenever the image layout below changes, so
// images built by an older hypefs are not reused.
const initramfsFormat = "hypefs-initramfs-1"

// Paths inside the initramfs that hypefs-init relies on (it names them
// again: the guest's init links no backend package).
const (
	GuestModulesDir = "/lib/modules"       // <name>.ko
	GuestModOrder   = "/lib/modules/order" // names in load order
)

// ensureInitramfs returns the path of an initramfs for opts in kdir,
// building it if needed.
//
// Images are named by a hash of their contents' inputs (the init and
// busybox bytes, the module list). Hashing 5 MB on every boot is avoidable:
// a small ref file, named by a hash of the inputs' paths, sizes, mtimes
// and inodes, remembers which image those files produced. Both kinds of
// files appear by rename, so concurrent Prepares in several processes at
// worst build the same image twice.
func ensureInitramfs(ctx context.Context, kdir string, opts Options) (string, error) {
	initFI, err := inputStat(opts.Init, "guest init", "make build")
	if err != nil {
		return "", err
	}
	bbFI, err := inputStat(opts.Busybox, "busybox", fetchHint(opts.Arch))
	if err != nil {
		return "", err
	}
	order, err := os.ReadFile(filepath.Join(kdir, layout.KernelModOrder))
	if err != nil {
		return "", fmt.Errorf("kernel module list: %w (hint: run \"make deps\")", err)
	}
	dir := filepath.Join(kdir, layout.KernelInitramfs)
	quick := quickKey(kdir, opts, initFI, bbFI)
	ref := filepath.Join(dir, quick+".ref")
	if key, err := os.ReadFile(ref); err == nil {
		img := filepath.Join(dir, strings.TrimSpace(string(key))+".cpio.gz")
		if _, err := os.Stat(img); err == nil {
			return img, nil
		}
	}

	key, err := contentKey(kdir, opts, order)
	if err != nil {
		return "", err
	}
	img := filepath.Join(dir, key+".cpio.gz")
	if _, err := os.Stat(img); err != nil {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return "", err
		}
		if err := checkStatic(opts.Init, opts.Arch); err != nil {
			return "", err
		}
		if err := atomicWrite(img, func(w io.Writer) error {
			return writeInitramfs(ctx, w, kdir, opts, strings.Fields(string(order)))
		}); err != nil {
			return "", fmt.Errorf("initramfs %s: %w", img, err)
		}
		prune(dir, 24*time.Hour)
	}
	if err := atomicWrite(ref, func(w io.Writer) error {
		_, err := io.WriteString(w, key+"\n")
		return err
	}); err != nil {
		return "", fmt.Errorf("initramfs ref: %w", err)
	}
	return img, nil
}

// inputStat stats one of the files the image is built from, and says how
// to get it when it is missing.
func inputStat(path, what, hint string) (os.FileInfo, error) {
	if path == "" {
		return nil, fmt.Errorf("%s: no path given (hint: run %q)", what, hint)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w (hint: run %q)", what, path, err, hint)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s %s: not a regular file", what, path)
	}
	return fi, nil
}

// quickKey names the ref file: it changes when an input file is replaced
// or rewritten (size, mtime, inode), without reading it.
func quickKey(kdir string, opts Options, fis ...os.FileInfo) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n%s\n", initramfsFormat, kdir, opts.Arch)
	for i, p := range []string{opts.Init, opts.Busybox} {
		abs, _ := filepath.Abs(p)
		fi := fis[i]
		var ino, dev uint64
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			ino, dev = st.Ino, uint64(st.Dev)
		}
		fmt.Fprintf(h, "%s %d %d %d %d\n", abs, fi.Size(), fi.ModTime().UnixNano(), ino, dev)
	}
	return "q-" + hex.EncodeToString(h.Sum(nil))[:32]
}

// contentKey names an image by what goes into it. The modules need no
// hashing: a version's directory never changes once renamed into place.
func contentKey(kdir string, opts Options, order []byte) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n%s\n", initramfsFormat, filepath.Base(kdir), opts.Arch)
	h.Write(order)
	for _, p := range []string{opts.Init, opts.Busybox} {
		sum, err := fileSHA256(p)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%x\n", sum)
	}
	return hex.EncodeToString(h.Sum(nil))[:32], nil
}

func fileSHA256(p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return nil, fmt.Errorf("hash %s: %w", p, err)
	}
	return h.Sum(nil), nil
}

// elfMachines maps our arch names to ELF machines.
var elfMachines = map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}

// checkStatic rejects an init that would not run as PID 1 of an
// initramfs with no libc: dynamically linked, or built for another arch.
func checkStatic(path, arch string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("guest init %s: %w", path, err)
	}
	defer f.Close()
	if m := elfMachines[arch]; f.Machine != m {
		return fmt.Errorf("guest init %s: built for %v, not %s (hint: run \"make build\")", path, f.Machine, arch)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("guest init %s: dynamically linked (hint: build it with CGO_ENABLED=0)", path)
		}
	}
	return nil
}

// writeInitramfs writes the gzipped newc archive:
//
//	/init                    hypefs-init
//	/bin/busybox + applets   symlinks from "busybox --list-full"
//	/lib/modules/*.ko, order the guest modules, in load order
//	/dev/console, /dev/null  so PID 1 has stdio before devtmpfs is mounted
//	/etc/passwd, /etc/group  root only
//	/proc /sys /tmp /root /run /mnt ...
func writeInitramfs(ctx context.Context, w io.Writer, kdir string, opts Options, order []string) error {
	zw, err := gzip.NewWriterLevel(w, gzip.DefaultCompression)
	if err != nil {
		return err
	}
	cw := cpio.Newc.Writer(zw)
	var recs []cpio.Record
	for _, d := range []struct {
		name string
		perm uint64
	}{
		{"bin", 0o755}, {"sbin", 0o755}, {"usr", 0o755}, {"usr/bin", 0o755}, {"usr/sbin", 0o755},
		{"dev", 0o755}, {"proc", 0o555}, {"sys", 0o555}, {"tmp", 0o1777}, {"root", 0o700},
		{"etc", 0o755}, {"lib", 0o755}, {GuestModulesDir[1:], 0o755}, {"run", 0o755}, {"mnt", 0o755},
	} {
		recs = append(recs, cpio.Directory(d.name, d.perm))
	}
	recs = append(recs,
		cpio.CharDev("dev/console", 0o600, 5, 1),
		cpio.CharDev("dev/null", 0o666, 1, 3),
		cpio.StaticFile("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n", 0o644),
		cpio.StaticFile("etc/group", "root:x:0:\n", 0o644),
		cpio.StaticFile("etc/hostname", "hypefs\n", 0o644),
	)
	files := []struct{ src, dst string }{{opts.Init, "init"}, {opts.Busybox, "bin/busybox"}}
	for _, m := range order {
		files = append(files, struct{ src, dst string }{filepath.Join(kdir, layout.KernelModules, m+".ko"), GuestModulesDir[1:] + "/" + m + ".ko"})
	}
	for _, f := range files {
		b, err := os.ReadFile(f.src)
		if err != nil {
			return err
		}
		perm := uint64(0o644)
		if !strings.HasSuffix(f.dst, ".ko") {
			perm = 0o755
		}
		recs = append(recs, cpio.StaticRecord(b, cpio.Info{Name: f.dst, Mode: cpio.S_IFREG | perm, NLink: 1}))
	}
	recs = append(recs, cpio.StaticFile(GuestModOrder[1:], lines(order), 0o644))
	applets, err := busyboxApplets(ctx, opts.Busybox, opts.Arch)
	if err != nil {
		return err
	}
	for _, a := range applets {
		recs = append(recs, cpio.Symlink(a, "/bin/busybox"))
	}
	for i := range recs {
		recs[i].Ino = uint64(i + 1)
		if recs[i].NLink == 0 {
			recs[i].NLink = 1
		}
	}
	if err := cpio.WriteRecords(cw, recs); err != nil {
		return err
	}
	if err := cpio.WriteTrailer(cw); err != nil {
		return err
	}
	return zw.Close()
}

// busyboxApplets lists the applet paths (without the leading slash) that
// busybox provides, by asking it. A busybox for another arch cannot be
// asked; then the image has none, and hypefs-init runs
// "busybox --install -s" at boot instead.
func busyboxApplets(ctx context.Context, busybox, arch string) ([]string, error) {
	if arch != runtime.GOARCH {
		return nil, nil
	}
	out, err := exec.CommandContext(ctx, busybox, "--list-full").Output()
	if err != nil {
		return nil, fmt.Errorf("busybox --list-full: %w (hint: a static busybox is needed, run \"make deps\")", err)
	}
	var applets []string
	seen := map[string]bool{"bin/busybox": true}
	for _, l := range strings.Fields(string(out)) {
		l = strings.TrimPrefix(filepath.Clean(l), "/")
		if !seen[l] && !strings.Contains(l, "..") {
			seen[l] = true
			applets = append(applets, l)
		}
	}
	return applets, nil
}

// atomicWrite writes file through a temp file in its directory, then
// renames it into place, so readers never see a partial file.
func atomicWrite(file string, fill func(io.Writer) error) error {
	return atomicWriteMode(file, 0o644, fill)
}

// atomicWriteMode is atomicWrite giving the file mode perm.
func atomicWriteMode(file string, perm os.FileMode, fill func(io.Writer) error) error {
	f, err := os.CreateTemp(filepath.Dir(file), ".tmp-"+filepath.Base(file)+"-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // fails harmlessly after the rename
	bw := bufio.NewWriterSize(f, 1<<20)
	err = fill(bw)
	if err == nil {
		err = bw.Flush()
	}
	if err == nil {
		err = f.Chmod(perm)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), file)
	}
	return err
}

// prune removes, from dir, initramfs images, refs and temp files older
// than age. QEMU reads an image only when it starts, so an old image is
// not in use, and one still wanted is rebuilt; temp files that old are
// left by crashed writers.
func prune(dir string, age time.Duration) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil || time.Since(fi.ModTime()) < age {
			continue
		}
		n := e.Name()
		if strings.HasSuffix(n, ".cpio.gz") || strings.HasSuffix(n, ".ref") || strings.HasPrefix(n, ".tmp-") {
			os.RemoveAll(filepath.Join(dir, n)) // best effort
		}
	}
}
