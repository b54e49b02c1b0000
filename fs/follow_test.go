package fs

import (
	"context"
	"strings"
	"testing"
)

// Follow handles share one memory budget: a reader that does not read
// keeps at most its share, loses its oldest unread bytes past it, and
// its next read starts with a line saying how many; a closed handle
// gives its share back.
func TestFollowMemory(t *testing.T) {
	SetFollowMemory(64 << 10)
	defer SetFollowMemory(DefaultFollowMemory)
	slow, other := newFollowBuf(0), newFollowBuf(0)
	chunk := []byte(strings.Repeat("x", 1023) + "\n")
	for k := 0; k < 100; k++ { // 100 KiB to each
		slow.append(chunk, false)
		other.append(chunk, false)
	}
	for _, f := range []*followBuf{slow, other} {
		if len(f.buf) > 32<<10 {
			t.Fatalf("a reader holds %d bytes; its share is 32 KiB", len(f.buf))
		}
	}
	p := make([]byte, 256)
	n, _ := slow.read(context.Background(), p)
	if !strings.Contains(string(p[:n]), "bytes dropped here: this reader fell behind") {
		t.Fatalf("first read after a drop: %q", p[:n])
	}
	n, _ = slow.read(context.Background(), p)
	if string(p[:n]) != strings.Repeat("x", n) {
		t.Fatalf("second read: %q", p[:n])
	}
	other.release()
	if got := followMem.share(); got != 64<<10 {
		t.Fatalf("share after one of two readers left: %d", got)
	}
	slow.release()
	slow.release() // twice is harmless
	if followMem.readers != 0 {
		t.Fatalf("readers = %d after both left", followMem.readers)
	}
}
