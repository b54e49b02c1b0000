package guest

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// The arm64 kernel Image header (Documentation/arch/arm64/booting.rst):
// the magic "ARM\x64" at offset 56, the little-endian flag in bit 0 of
// the flags at offset 24. Debian's arm64 vmlinuz is such an Image with
// an EFI stub ("MZ" at 0); older or other builds gzip it, and kernels
// built with CONFIG_EFI_ZBOOT wrap a compressed Image in a small EFI
// program.
const (
	arm64MagicOff = 56
	arm64FlagsOff = 24
	arm64HdrLen   = 64
)

var arm64Magic = []byte("ARM\x64")

// isArm64Image reports whether b starts with an arm64 Image header.
func isArm64Image(b []byte) bool {
	return len(b) >= arm64HdrLen && bytes.Equal(b[arm64MagicOff:arm64MagicOff+4], arm64Magic)
}

// checkArm64Image checks that r holds an uncompressed little-endian arm64
// Image, which QEMU's virt machine and Virtualization.framework boot.
func checkArm64Image(r io.ReaderAt) error {
	h := make([]byte, arm64HdrLen)
	if _, err := r.ReadAt(h, 0); err != nil {
		return fmt.Errorf("arm64 kernel header: %w", err)
	}
	if !isArm64Image(h) {
		return fmt.Errorf("kernel is not an arm64 Image: no %q magic at offset %d", arm64Magic, arm64MagicOff)
	}
	if binary.LittleEndian.Uint64(h[arm64FlagsOff:])&1 != 0 {
		return errors.New("arm64 kernel Image is big-endian")
	}
	return nil
}

// zbootPayload returns the compression type and the payload of an EFI
// zboot kernel ("MZ", then "zimg" at offset 4, the payload's offset and
// size at 8 and 12, the compression's name at 24), or ok false.
func zbootPayload(b []byte) (comp string, payload []byte, ok bool, err error) {
	if len(b) < 64 || !bytes.HasPrefix(b, []byte("MZ")) || string(b[4:8]) != "zimg" {
		return "", nil, false, nil
	}
	off := uint64(binary.LittleEndian.Uint32(b[8:]))
	size := uint64(binary.LittleEndian.Uint32(b[12:]))
	name, _, _ := bytes.Cut(b[24:56], []byte{0})
	if off+size > uint64(len(b)) {
		return string(name), nil, true, fmt.Errorf("EFI zboot payload [%d, +%d) beyond the file's %d bytes", off, size, len(b))
	}
	return string(name), b[off : off+size], true, nil
}

// unpackArm64 writes the Image held in an arm64 vmlinuz to w: a raw Image
// is copied, a gzipped one or a gzip EFI zboot one uncompressed. handled
// is false when vmlinuz is none of these.
func unpackArm64(vmlinuz []byte, w io.Writer) (handled bool, err error) {
	if isArm64Image(vmlinuz) {
		_, err := w.Write(vmlinuz)
		return true, err
	}
	comp, payload, ok, err := zbootPayload(vmlinuz)
	if !ok {
		return false, nil
	}
	if err != nil {
		return true, err
	}
	if comp != "gzip" {
		return true, fmt.Errorf("EFI zboot kernel compressed with %q; only gzip is supported", comp)
	}
	return true, gunzipTo(payload, w)
}

func gunzipTo(b []byte, w io.Writer) error {
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("gzip kernel: %w", err)
	}
	zr.Multistream(false)
	if _, err := io.Copy(w, zr); err != nil {
		return fmt.Errorf("gzip kernel: %w", err)
	}
	return nil
}
