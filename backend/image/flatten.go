package image

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"hypefs/internal/rootpath"
)

// OCI whiteouts (image-spec layer.md): ".wh.NAME" deletes NAME of the
// layers below; ".wh..wh..opq" in a directory hides everything the layers
// below put there.
const (
	whPrefix = ".wh."
	whOpaque = ".wh..wh..opq"
)

// flattener applies layers, lowest first, onto one directory tree, so the
// tree ends up as the image's root filesystem. It keeps owners, modes
// (setuid/setgid/sticky included), symlinks, hardlinks, xattrs, device
// nodes and fifos. Nothing a layer says can reach outside root: symlinks
// met on the way are followed inside it.
type flattener struct {
	root    string
	buf     []byte
	dirTime map[string]time.Time // directories' mtimes, set once all layers are in
	size    int64                // bytes of regular file content, last write wins
	files   map[string]int64     // regular file sizes by path, for size
	// What the layers declare, counted before anything is written: every
	// entry's size (a sparse file's full size) and its header. Past limit
	// (0: none) the next entry is refused with over().
	declared int64
	limit    int64
	over     func(declared int64, hdr *tar.Header) error
}

func newFlattener(root string) *flattener {
	return &flattener{root: root, buf: make([]byte, 1<<20), dirTime: map[string]time.Time{}, files: map[string]int64{}}
}

// tarBlock is what a tar header takes: counted for every entry, so that a
// layer of countless empty files is bounded too.
const tarBlock = 512

// tarError is a failure to read a layer's tar stream: its bytes are bad
// (or did not arrive), whatever the tree being written.
type tarError struct{ err error }

func (e *tarError) Error() string { return "read layer: " + e.err.Error() }
func (e *tarError) Unwrap() error { return e.err }

// apply unpacks one uncompressed layer.
func (f *flattener) apply(r io.Reader) error {
	tr := tar.NewReader(r)
	made := map[string]bool{} // paths this layer created: an opaque marker spares them
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return &tarError{err}
		}
		f.declared += hdr.Size + tarBlock
		if f.limit > 0 && f.declared > f.limit {
			return f.over(f.declared, hdr)
		}
		name := path.Clean("/" + hdr.Name)
		if name == "/" {
			if hdr.Typeflag == tar.TypeDir {
				f.attrs(f.root, hdr)
			}
			continue
		}
		dir, base := path.Split(name)
		pdir, err := rootpath.Resolve(f.root, dir, true)
		if err != nil {
			return fmt.Errorf("layer entry %s: %w", name, err)
		}
		switch {
		case base == whOpaque:
			if err := f.opaque(pdir, dir, made); err != nil {
				return err
			}
			continue
		case strings.HasPrefix(base, whPrefix):
			rest := base[len(whPrefix):]
			if rest == "" || rest == "." || rest == ".." || strings.ContainsRune(rest, '/') {
				return fmt.Errorf("layer entry %s: a malformed whiteout", name)
			}
			gone := filepath.Join(pdir, rest)
			if !inside(f.root, gone) {
				return fmt.Errorf("layer entry %s: a whiteout outside the image", name)
			}
			f.forget(gone)
			if err := os.RemoveAll(gone); err != nil {
				return fmt.Errorf("whiteout %s: %w", name, err)
			}
			continue
		}
		if err := os.MkdirAll(pdir, 0o755); err != nil {
			return fmt.Errorf("layer entry %s: %w", name, err)
		}
		p := filepath.Join(pdir, base)
		if !inside(f.root, p) {
			return fmt.Errorf("layer entry %s: outside the image", name)
		}
		made[p] = true
		if fi, err := os.Lstat(p); err == nil {
			if fi.IsDir() && hdr.Typeflag == tar.TypeDir {
				f.attrs(p, hdr)
				continue
			}
			f.forget(p)
			if err := os.RemoveAll(p); err != nil {
				return fmt.Errorf("replace %s: %w", name, err)
			}
		}
		if err := f.create(p, name, hdr, tr); err != nil {
			return err
		}
	}
}

func (f *flattener) create(p, name string, hdr *tar.Header, tr *tar.Reader) error {
	mode := uint32(hdr.Mode) & 0o7777
	switch hdr.Typeflag {
	case tar.TypeDir:
		if err := os.Mkdir(p, 0o700); err != nil {
			return fmt.Errorf("layer entry %s: %w", name, err)
		}
	case tar.TypeReg, tar.TypeRegA:
		out, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return fmt.Errorf("layer entry %s: %w", name, err)
		}
		n, err := io.CopyBuffer(out, tr, f.buf)
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("layer entry %s: %w", name, err)
		}
		f.files[p] = n
		f.size += n
	case tar.TypeSymlink:
		if err := os.Symlink(hdr.Linkname, p); err != nil {
			return fmt.Errorf("layer entry %s: %w", name, err)
		}
	case tar.TypeLink:
		target, err := rootpath.Resolve(f.root, hdr.Linkname, false)
		if err != nil {
			return fmt.Errorf("hardlink %s: %w", name, err)
		}
		if err := os.Link(target, p); err != nil {
			return fmt.Errorf("hardlink %s to %s: %w", name, hdr.Linkname, err)
		}
		return nil // a hardlink shares its target's attributes
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		typ := uint32(unix.S_IFCHR)
		switch hdr.Typeflag {
		case tar.TypeBlock:
			typ = unix.S_IFBLK
		case tar.TypeFifo:
			typ = unix.S_IFIFO
		}
		dev := unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))
		if err := unix.Mknod(p, typ|mode, int(dev)); err != nil {
			return fmt.Errorf("device node %s: %w", name, err)
		}
	default:
		return nil // pax globals and the like carry nothing for the tree
	}
	return f.attrs(p, hdr)
}

// attrs sets owner, mode, xattrs and times. chown clears setuid bits, so
// the mode comes after it.
func (f *flattener) attrs(p string, hdr *tar.Header) error {
	if err := os.Lchown(p, hdr.Uid, hdr.Gid); err != nil {
		return fmt.Errorf("chown %s: %w", hdr.Name, err)
	}
	if hdr.Typeflag != tar.TypeSymlink {
		if err := unix.Fchmodat(unix.AT_FDCWD, p, uint32(hdr.Mode)&0o7777, 0); err != nil {
			return fmt.Errorf("chmod %s: %w", hdr.Name, err)
		}
	}
	for k, v := range hdr.PAXRecords {
		if x, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
			if err := unix.Lsetxattr(p, x, []byte(v), 0); err != nil && !errors.Is(err, unix.ENOTSUP) {
				return fmt.Errorf("xattr %s of %s: %w", x, hdr.Name, err)
			}
		}
	}
	if hdr.Typeflag == tar.TypeDir {
		f.dirTime[p] = hdr.ModTime
		return nil
	}
	ts := []unix.Timespec{unix.NsecToTimespec(hdr.ModTime.UnixNano()), unix.NsecToTimespec(hdr.ModTime.UnixNano())}
	unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
	return nil
}

// opaque empties a directory of what lower layers put there.
func (f *flattener) opaque(pdir, name string, made map[string]bool) error {
	ents, err := os.ReadDir(pdir)
	if err != nil {
		if os.IsNotExist(err) {
			return nil
		}
		return fmt.Errorf("opaque directory %s: %w", name, err)
	}
	for _, e := range ents {
		p := filepath.Join(pdir, e.Name())
		if made[p] {
			continue
		}
		f.forget(p)
		if err := os.RemoveAll(p); err != nil {
			return fmt.Errorf("opaque directory %s: %w", name, err)
		}
	}
	return nil
}

// forget drops the sizes of p and everything under it.
func (f *flattener) forget(p string) {
	if n, ok := f.files[p]; ok {
		f.size -= n
		delete(f.files, p)
		return
	}
	pre := p + "/"
	for q, n := range f.files {
		if strings.HasPrefix(q, pre) {
			f.size -= n
			delete(f.files, q)
		}
	}
}

// finish sets directories' times, deepest first (creating children
// changed them).
func (f *flattener) finish() {
	dirs := make([]string, 0, len(f.dirTime))
	for d := range f.dirTime {
		dirs = append(dirs, d)
	}
	sort.Slice(dirs, func(a, b int) bool { return len(dirs[a]) > len(dirs[b]) })
	for _, d := range dirs {
		t := f.dirTime[d]
		ts := []unix.Timespec{unix.NsecToTimespec(t.UnixNano()), unix.NsecToTimespec(t.UnixNano())}
		unix.UtimesNanoAt(unix.AT_FDCWD, d, ts, unix.AT_SYMLINK_NOFOLLOW)
	}
}

// inside reports whether p is strictly below root: nothing a layer says
// may create or remove root itself or anything outside it.
func inside(root, p string) bool {
	rel, err := filepath.Rel(root, p)
	return err == nil && rel != "." && rel != ".." && !strings.HasPrefix(rel, "../")
}
