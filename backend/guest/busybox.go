package guest

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"runtime"

	"hypefs/backend/layout"
)

// busyboxPackage is Debian's statically linked busybox.
const busyboxPackage = "busybox-static"

// BusyboxPath is where Fetch puts the static busybox for arch:
// KERNELS/busybox-<arch>, beside the kernels, so that a copied kernels
// directory is all a guest needs (see docs/macos.md).
func BusyboxPath(kernelsDir, arch string) string {
	return filepath.Join(kernelsDir, layout.Busybox(arch))
}

// defaultBusybox is the busybox Prepare uses when Options.Busybox is
// empty: the one Fetch put into the kernels directory, else, for the
// host's own architecture on Linux, /bin/busybox (Debian's
// busybox-static, which "make deps" installs).
func defaultBusybox(kernelsDir, arch string) string {
	p := BusyboxPath(kernelsDir, arch)
	if _, err := os.Stat(p); err == nil {
		return p
	}
	if runtime.GOOS == "linux" && arch == runtime.GOARCH {
		return "/bin/busybox"
	}
	return p // missing: Prepare's error names it and says how to get it
}

// fetchHint says how to get the kernel or busybox for arch.
func fetchHint(arch string) string {
	if runtime.GOOS == "linux" && arch == runtime.GOARCH {
		return "make deps"
	}
	return "hypefs kernel fetch --arch " + arch
}

// installBusybox copies /bin/busybox (or /usr/bin/busybox) out of a
// busybox-static .deb into file, after checking that it is a static ELF
// for arch. It appears by rename.
func installBusybox(ctx context.Context, deb, arch, file string) error {
	var bin []byte
	werr := streamDeb(ctx, deb, func(r io.Reader) error {
		var err error
		bin, err = findBusybox(r)
		return err
	})
	if werr != nil {
		return fmt.Errorf("busybox package %s: %w", filepath.Base(deb), werr)
	}
	if err := checkStaticELF(bin, arch); err != nil {
		return fmt.Errorf("busybox in %s: %w", filepath.Base(deb), err)
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return err
	}
	err := atomicWriteMode(file, 0o755, func(w io.Writer) error {
		_, err := w.Write(bin)
		return err
	})
	if err == nil {
		syncDir(filepath.Dir(file))
	}
	return err
}

// findBusybox returns the busybox binary in a package's data archive.
func findBusybox(r io.Reader) ([]byte, error) {
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil, errors.New("no bin/busybox in package")
		}
		if err != nil {
			return nil, fmt.Errorf("package data: %w", err)
		}
		switch path.Clean("/" + h.Name) {
		case "/bin/busybox", "/usr/bin/busybox":
			if h.Typeflag != tar.TypeReg {
				continue
			}
			return io.ReadAll(tr)
		}
	}
}

// checkStaticELF reports why b is not a statically linked ELF executable
// for arch, or nil.
func checkStaticELF(b []byte, arch string) error {
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return err
	}
	defer f.Close()
	if m, ok := elfMachines[arch]; !ok || f.Machine != m {
		return fmt.Errorf("built for %v, not %s", f.Machine, arch)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return errors.New("dynamically linked")
		}
	}
	return nil
}
