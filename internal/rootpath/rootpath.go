// Package rootpath resolves paths inside a directory tree as if that
// directory were "/": symlinks, absolute or relative, never lead out of
// it. The image store uses it to unpack layers, the guest init to find a
// program and /etc/passwd inside an image's root.
package rootpath

import (
	"errors"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// maxLinks bounds the symlinks one resolution follows (as the kernel's
// MAXSYMLINKS).
const maxLinks = 40

// ErrLoop is returned when a path holds too many levels of symlinks.
var ErrLoop = errors.New("too many levels of symbolic links")

// Resolve returns the host path of p (a path inside root) with every
// symlink in it followed within root. With followLast false, the last
// component is not followed (for creating or replacing it). Components
// that do not exist are kept as they are.
func Resolve(root, p string, followLast bool) (string, error) {
	rest := strings.Split(path.Clean("/"+p), "/")
	cur := "/" // resolved so far, inside root
	links := 0
	for len(rest) > 0 {
		c := rest[0]
		rest = rest[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			cur = path.Dir(cur)
			continue
		}
		next := path.Join(cur, c)
		if len(rest) == 0 && !followLast {
			cur = next
			break
		}
		fi, err := os.Lstat(filepath.Join(root, next))
		if err != nil || fi.Mode()&os.ModeSymlink == 0 {
			cur = next
			continue
		}
		if links++; links > maxLinks {
			return "", ErrLoop
		}
		target, err := os.Readlink(filepath.Join(root, next))
		if err != nil {
			return "", err
		}
		if strings.HasPrefix(target, "/") {
			cur = "/"
		}
		rest = append(strings.Split(target, "/"), rest...)
	}
	return filepath.Join(root, cur), nil
}
