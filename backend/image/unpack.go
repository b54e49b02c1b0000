package image

import (
	"fmt"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Unpack flattens img's layers into dir, without converting them, and
// returns the bytes of file content. It is the first half of hypeman's
// method (unpack, then mkfs.ext4 -d), which the benchmark compares with.
func Unpack(img v1.Image, dir string) (int64, error) {
	layers, err := img.Layers()
	if err != nil {
		return 0, err
	}
	fl := newFlattener(dir)
	for i, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			return 0, fmt.Errorf("layer %d: %w", i, err)
		}
		err = fl.apply(rc)
		rc.Close()
		if err != nil {
			return 0, fmt.Errorf("layer %d: %w", i, err)
		}
	}
	fl.finish()
	return fl.size, nil
}
