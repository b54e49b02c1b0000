package guest

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"

	"github.com/xi2/xz"
)

// xzMagic opens every XZ stream (xz file format 1.0.4, §2.1.1.1).
var xzMagic = []byte{0xFD, '7', 'z', 'X', 'Z', 0x00}

// gzipMagic opens a gzip member; arm64 Debian kernels are gzipped Images.
var gzipMagic = []byte{0x1F, 0x8B, 0x08}

// findXZ returns the offset of the first XZ stream in b, or -1. A bzImage
// holds its payload after the real-mode setup code and the decompressor
// stub (about 21 KB in), so the first magic is the payload's.
func findXZ(b []byte) int {
	return bytes.Index(b, xzMagic)
}

// unpackKernel returns the uncompressed kernel held in a Debian vmlinuz.
// On amd64 that is the XZ stream embedded in the bzImage; its payload is
// the ELF vmlinux, which QEMU boots through its PVH entry note (about 2x
// faster to boot than the bzImage under TCG, which must decompress
// itself). On arm64 vmlinuz is the Image itself (Debian 12), a gzipped
// Image, or an EFI zboot program holding a gzipped Image; see arm64.go.
//
// The x86 kernel compresses with XZ's x86 BCJ filter in front of LZMA2;
// github.com/ulikunitz/xz only decodes plain LZMA2, so we use
// github.com/xi2/xz (a port of XZ Embedded, which has the BCJ filters).
func unpackKernel(vmlinuz []byte, w io.Writer) error {
	if bytes.HasPrefix(vmlinuz, gzipMagic) {
		return gunzipTo(vmlinuz, w)
	}
	if ok, err := unpackArm64(vmlinuz, w); ok {
		return err
	}
	off := findXZ(vmlinuz)
	if off < 0 {
		return errors.New("no xz stream in kernel image")
	}
	zr, err := xz.NewReader(bytes.NewReader(vmlinuz[off:]), 0)
	if err != nil {
		return fmt.Errorf("xz stream at offset %d: %w", off, err)
	}
	// The payload is followed by non-XZ data (the decompressed size, in
	// the kernel's own format), so stop after the first stream.
	zr.Multistream(false)
	if _, err := io.Copy(w, zr); err != nil {
		return fmt.Errorf("xz stream at offset %d: %w", off, err)
	}
	return nil
}

// hasPVHNote reports whether the ELF kernel at r carries the Xen PVH entry
// note (XEN_ELFNOTE_PHYS32_ENTRY), which QEMU needs to boot it directly.
func hasPVHNote(r io.ReaderAt) (bool, error) {
	f, err := elf.NewFile(r)
	if err != nil {
		return false, fmt.Errorf("kernel elf: %w", err)
	}
	defer f.Close()
	const xenElfnotePhys32Entry = 18
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE {
			continue
		}
		b := make([]byte, p.Filesz)
		if _, err := p.ReadAt(b, 0); err != nil {
			return false, fmt.Errorf("kernel elf note: %w", err)
		}
		for len(b) >= 12 {
			bo := f.ByteOrder
			namesz, descsz, typ := bo.Uint32(b), bo.Uint32(b[4:]), bo.Uint32(b[8:])
			name := b[12:]
			n := 12 + align4(namesz) + align4(descsz)
			if uint32(len(b)) < n {
				break
			}
			if typ == xenElfnotePhys32Entry && bytes.HasPrefix(name, []byte("Xen\x00")) {
				return true, nil
			}
			b = b[n:]
		}
	}
	return false, nil
}

func align4(n uint32) uint32 { return (n + 3) &^ 3 }
