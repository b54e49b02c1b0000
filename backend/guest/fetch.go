package guest

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/xi2/xz"

	"hypefs/backend/layout"
)

// One cached kernel is KERNELS/<version>/, named by backend/layout
// (Kernel*). The directory appears by rename only once complete, so its
// existence means "ready".

// Fetch makes sure the kernel that Debian's linux-image-<arch> metapackage
// currently points to is in kernelsDir, and a static busybox for arch
// beside it (busybox-<arch>, see FetchBusybox), and returns the kernel's
// version, e.g. "6.1.0-56-amd64". The .debs are downloaded with apt-get,
// never installed. For the host's architecture the host's package lists
// are used; for another one (arm64 on an amd64 host) a private apt that
// leaves the host's apt and dpkg configuration alone (see apt.go).
// Nothing is downloaded when both are cached already.
func Fetch(ctx context.Context, kernelsDir, arch string) (version string, err error) {
	if arch == "" {
		arch = "amd64"
	}
	if _, ok := elfMachines[arch]; !ok {
		return "", fmt.Errorf("guest arch %q: want amd64 or arm64", arch)
	}
	a, err := newApt(ctx, arch)
	if err != nil {
		return "", err
	}
	defer a.close()
	pkg, err := resolveKernelPackage(ctx, a)
	if err != nil {
		return "", err
	}
	version = strings.TrimPrefix(pkg, "linux-image-")
	var want []string
	if _, err := os.Stat(filepath.Join(kernelsDir, version)); err != nil {
		want = append(want, pkg)
	}
	bb := BusyboxPath(kernelsDir, arch)
	if _, err := os.Stat(bb); err != nil {
		want = append(want, busyboxPackage)
	}
	if len(want) == 0 {
		return version, nil
	}
	tmp, err := os.MkdirTemp("", "hypefs-kernel-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	if err := os.Chmod(tmp, 0o755); err != nil { // apt downloads as _apt
		return "", err
	}
	if err := a.download(ctx, tmp, want...); err != nil {
		return "", err
	}
	for _, p := range want {
		debs, _ := filepath.Glob(filepath.Join(tmp, p+"_*.deb"))
		if len(debs) != 1 {
			return "", fmt.Errorf("apt-get download %s: got %d .deb files", p, len(debs))
		}
		if p == busyboxPackage {
			err = installBusybox(ctx, debs[0], arch, bb)
		} else {
			_, err = FetchDeb(ctx, kernelsDir, debs[0])
		}
		if err != nil {
			return "", err
		}
	}
	return version, nil
}

// resolveKernelPackage asks apt which real package the linux-image-<arch>
// metapackage depends on (e.g. linux-image-6.1.0-56-amd64).
func resolveKernelPackage(ctx context.Context, a *apt) (string, error) {
	meta := "linux-image-" + a.arch
	out, err := a.command(ctx, "apt-cache", "depends", meta).Output()
	if err != nil {
		return "", fmt.Errorf("apt-cache depends %s: %w (%s)", meta, err, a.hint())
	}
	if pkg := parseAptDepends(out); pkg != "" {
		return pkg, nil
	}
	return "", fmt.Errorf("apt-cache depends %s: no linux-image dependency (%s)", meta, a.hint())
}

// parseAptDepends picks the first "Depends: linux-image-..." line of
// apt-cache depends output.
func parseAptDepends(out []byte) string {
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), ":")
		v = strings.TrimSpace(v)
		if ok && strings.TrimPrefix(k, "|") == "Depends" && strings.HasPrefix(v, "linux-image-") {
			v, _, _ = strings.Cut(v, ":") // "pkg:arch"
			return v
		}
	}
	return ""
}

func hostArch(ctx context.Context) string {
	out, err := exec.CommandContext(ctx, "dpkg", "--print-architecture").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// FetchDeb installs the kernel and guest modules held in the linux-image
// .deb at debPath into kernelsDir/<version>, and returns the version. The
// result is built in a temporary directory and renamed into place, so a
// crash never leaves something that looks ready; a version already cached
// is left as it is.
func FetchDeb(ctx context.Context, kernelsDir, debPath string) (version string, err error) {
	arch, err := debField(ctx, debPath, "Architecture")
	if err != nil {
		return "", err
	}
	pkg, err := debField(ctx, debPath, "Package")
	if err != nil {
		return "", err
	}
	version = strings.TrimPrefix(pkg, "linux-image-")
	if version == pkg || version == "" {
		return "", fmt.Errorf("package %s in %s: not a linux-image package", pkg, debPath)
	}
	final := filepath.Join(kernelsDir, version)
	if _, err := os.Stat(final); err == nil {
		return version, nil
	}
	if err := os.MkdirAll(kernelsDir, 0o755); err != nil {
		return "", err
	}
	// Leftovers of fetches that crashed; a live fetch takes seconds.
	prune(kernelsDir, time.Hour)
	tmp, err := os.MkdirTemp(kernelsDir, ".tmp-"+version+"-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp) // a no-op after the rename

	if err := extractDeb(ctx, debPath, version, arch, tmp); err != nil {
		return "", fmt.Errorf("kernel package %s: %w", filepath.Base(debPath), err)
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, final); err != nil {
		if _, serr := os.Stat(final); serr == nil {
			return version, nil // another process won the race
		}
		return "", fmt.Errorf("install kernel %s: %w", version, err)
	}
	syncDir(kernelsDir)
	return version, nil
}

func debField(ctx context.Context, deb, field string) (string, error) {
	out, err := exec.CommandContext(ctx, "dpkg-deb", "--field", deb, field).Output()
	if err != nil {
		return "", fmt.Errorf("dpkg-deb --field %s %s: %w", deb, field, err)
	}
	return strings.TrimSpace(string(out)), nil
}

// debContents is what one pass over the package's data gathers.
type debContents struct {
	vmlinuz []byte
	// onVmlinuz is called once vmlinuz has been read, so that unpacking
	// the kernel overlaps with reading the modules.
	onVmlinuz func([]byte)
	info      map[string]modInfo // by module name
	ko        map[string][]byte  // contents of the modules we keep
	builtin   map[string]bool
}

// extractDeb writes the kernel, the guest modules and their order into dir.
func extractDeb(ctx context.Context, deb, version, arch, dir string) error {
	wanted := rootsFor(arch)
	roots := map[string]bool{}
	for _, m := range wanted {
		roots[m] = true
	}
	for _, m := range likelyDeps {
		roots[m] = true
	}
	c := &debContents{info: map[string]modInfo{}, ko: map[string][]byte{}, builtin: map[string]bool{}}
	kernelErr := make(chan error, 1)
	c.onVmlinuz = func(b []byte) {
		go func() { kernelErr <- writeKernel(b, arch, filepath.Join(dir, layout.KernelImage(arch))) }()
	}
	keep := func(name string) bool { return roots[name] }
	err := walkDeb(ctx, deb, version, c, keep)
	if c.vmlinuz != nil {
		if kerr := <-kernelErr; err == nil {
			err = kerr
		}
	}
	if err != nil {
		return err
	}
	if c.vmlinuz == nil {
		return fmt.Errorf("no /boot/vmlinuz-%s", version)
	}
	order, missing, err := loadOrder(wanted, c.info, c.builtin)
	if err != nil {
		return err
	}
	// Roots and likelyDeps normally are the whole closure; a second pass
	// picks up dependencies that a newer kernel may have added.
	need := map[string]bool{}
	for _, m := range order {
		if c.ko[m] == nil {
			need[m] = true
		}
	}
	if len(need) > 0 {
		if err := walkDeb(ctx, deb, version, c, func(n string) bool { return need[n] }); err != nil {
			return err
		}
	}

	if err := os.Mkdir(filepath.Join(dir, layout.KernelModules), 0o755); err != nil {
		return err
	}
	for _, m := range order {
		if err := writeFileSync(filepath.Join(dir, layout.KernelModules, m+".ko"), c.ko[m]); err != nil {
			return err
		}
	}
	if err := writeFileSync(filepath.Join(dir, layout.KernelModOrder), []byte(lines(order))); err != nil {
		return err
	}
	if err := writeFileSync(filepath.Join(dir, layout.KernelModMissing), []byte(lines(missing))); err != nil {
		return err
	}
	return writeFileSync(filepath.Join(dir, layout.KernelArch), []byte(arch+"\n"))
}

// writeFileSync writes a file of a kernel being assembled and syncs it:
// the directory's rename promises complete contents, even after a crash.
func writeFileSync(file string, b []byte) error {
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func lines(ss []string) string {
	if len(ss) == 0 {
		return ""
	}
	return strings.Join(ss, "\n") + "\n"
}

// walkDeb streams the package's data archive once, filling c: the
// vmlinuz, every module's modinfo, modules.builtin, and the contents of
// the modules keep selects.
func walkDeb(ctx context.Context, deb, version string, c *debContents, keep func(string) bool) error {
	return streamDeb(ctx, deb, func(r io.Reader) error { return walkTar(r, version, c, keep) })
}

// streamDeb hands the package's data archive (a tar stream, through
// dpkg-deb) to walk, then lets dpkg-deb finish and reports its failure.
func streamDeb(ctx context.Context, deb string, walk func(io.Reader) error) error {
	cmd := exec.CommandContext(ctx, "dpkg-deb", "--fsys-tarfile", deb)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("dpkg-deb --fsys-tarfile: %w", err)
	}
	werr := walk(out)
	io.Copy(io.Discard, out) // let dpkg-deb finish writing
	if err := cmd.Wait(); err != nil && werr == nil {
		werr = fmt.Errorf("dpkg-deb --fsys-tarfile: %w: %s", err, bytes.TrimSpace(stderr.Bytes()))
	}
	return werr
}

func walkTar(r io.Reader, version string, c *debContents, keep func(string) bool) error {
	modRoot := "lib/modules/" + version + "/"
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("package data: %w", err)
		}
		name := strings.TrimPrefix(path.Clean(h.Name), "./")
		if h.Typeflag != tar.TypeReg {
			continue
		}
		switch {
		case name == "boot/vmlinuz-"+version && c.vmlinuz == nil:
			if c.vmlinuz, err = io.ReadAll(tr); err != nil {
				c.vmlinuz = nil
				return fmt.Errorf("%s: %w", name, err)
			}
			c.onVmlinuz(c.vmlinuz)
		case name == modRoot+"modules.builtin":
			b, err := io.ReadAll(tr)
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			for _, l := range strings.Fields(string(b)) {
				c.builtin[modName(l)] = true
			}
		case strings.HasPrefix(name, modRoot) && (strings.HasSuffix(name, ".ko") || strings.HasSuffix(name, ".ko.xz")):
			b, err := readModule(tr, name)
			if err != nil {
				return err
			}
			mi, err := readModinfo(b, strings.TrimSuffix(name, ".xz"))
			if err != nil {
				return err
			}
			c.info[mi.Name] = mi
			if keep(mi.Name) {
				c.ko[mi.Name] = b
			}
		}
	}
}

// readModule returns a module's ELF bytes, decompressing .ko.xz (which
// later Debian releases may ship) so the guest can finit_module it as is.
func readModule(r io.Reader, name string) ([]byte, error) {
	if strings.HasSuffix(name, ".xz") {
		zr, err := xz.NewReader(r, 0)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		r = zr
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return b, nil
}

// writeKernel uncompresses vmlinuz into file and checks the result: on
// amd64 an ELF with the PVH note, which QEMU's microvm needs; on arm64 a
// raw Image, the only kind Virtualization.framework boots.
func writeKernel(vmlinuz []byte, arch, file string) error {
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	err = unpackKernel(vmlinuz, bw)
	if err == nil {
		err = bw.Flush()
	}
	switch {
	case err != nil:
	case arch == "amd64":
		var ok bool
		ok, err = hasPVHNote(f)
		if err == nil && !ok {
			err = errors.New("kernel has no PVH entry note")
		}
	case arch == "arm64":
		err = checkArm64Image(f)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// syncDir makes a rename in dir durable; failures only cost durability.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}
