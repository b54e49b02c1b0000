package image

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"
	"syscall"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"hypefs/internal/errno"
)

// applyLayer streams one layer from the registry into the tree, checking
// its digest (compressed) and diff ID (uncompressed) as it goes. Its
// steps: open the stream, unpack it, say what went wrong, verify it.
func (p *pullJob) applyLayer(l v1.Layer, diffID v1.Hash, done *int64) error {
	ldg, err := l.Digest()
	if err != nil {
		return p.explain(err)
	}
	size, _ := l.Size()
	rc, err := l.Compressed()
	if err != nil {
		return p.explain(err)
	}
	defer rc.Close()
	ls, err := openLayer(rc, func(n int64) {
		*done += n
		d := *done
		p.s.update(p.key, func(e *Entry) { e.Done = d })
	})
	if err != nil {
		return corrupt(p.key, ldg, err)
	}
	defer ls.close()
	uh := sha256.New()
	srcErr, err := ls.unpack(p.fl, uh, rc)
	if err != nil {
		return p.layerError(ldg, err, srcErr)
	}
	return p.verifyLayer(ldg, diffID, size, ls.cr, uh)
}

// layerStream is one layer as the registry sends it: counted and hashed
// as it arrives (compressed), then decompressed (gzip, zstd or none).
type layerStream struct {
	cr    *countingReader
	br    *bufio.Reader // the compressed bytes, buffered
	ur    io.Reader     // the uncompressed tar
	close func()
}

// openLayer starts decompressing rc, whichever compression its first
// bytes show; an error means the layer's header is corrupt.
func openLayer(rc io.Reader, report func(int64)) (*layerStream, error) {
	ls := &layerStream{cr: &countingReader{r: rc, h: sha256.New(), report: report}, close: func() {}}
	ls.br = bufio.NewReaderSize(ls.cr, 1<<20)
	magic, _ := ls.br.Peek(4)
	switch {
	case len(magic) >= 2 && magic[0] == 0x1f && magic[1] == 0x8b:
		zr, err := gzip.NewReader(ls.br)
		if err != nil {
			return nil, err
		}
		ls.ur, ls.close = zr, func() { zr.Close() }
	case len(magic) == 4 && magic[0] == 0x28 && magic[1] == 0xb5 && magic[2] == 0x2f && magic[3] == 0xfd:
		zr, err := zstd.NewReader(ls.br)
		if err != nil {
			return nil, err
		}
		ls.ur, ls.close = zr, zr.Close
	default:
		ls.ur = ls.br
	}
	return ls, nil
}

// unpack applies the layer's tar to fl, hashing the uncompressed bytes
// into uh. Decompression runs on a goroutine of its own, a few MB ahead,
// so that it overlaps with writing the files (io.Pipe would hand over
// each chunk synchronously, leaving one core idle). srcErr is set when
// reading the layer (network, decompression, digest) failed before the
// tree did: then err comes from the layer's bytes, not from the disk.
func (ls *layerStream) unpack(fl *flattener, uh hash.Hash, rc io.Closer) (srcErr, err error) {
	pr := newChunkPipe(16)
	gdone := make(chan struct{})
	go func() {
		defer close(gdone)
		err := pr.fill(ls.ur)
		if err == nil {
			// The compressed stream's tail, so its digest covers every byte.
			_, err = io.Copy(io.Discard, ls.br)
		}
		pr.closeWrite(err)
	}()
	err = fl.apply(io.TeeReader(pr, uh))
	if err == nil {
		// The tar ends before its padding: hash the rest too.
		_, err = io.Copy(uh, pr)
	}
	srcErr = pr.failed()
	pr.abandon()
	if err != nil {
		rc.Close() // unblocks a read in flight
	}
	<-gdone
	return srcErr, err
}

// layerError says why unpacking a layer failed.
func (p *pullJob) layerError(ldg v1.Hash, err, srcErr error) error {
	var refusal *errno.Error
	var te *tarError
	switch {
	case p.ctx.Err() != nil:
		return p.ctx.Err()
	case errors.As(err, &refusal), errors.Is(err, errNoMemoryRoom):
		return err
	case errors.Is(err, syscall.ENOSPC):
		// Before the network's errors: an errno is a net.Error too.
		return fmt.Errorf("unpack layer %s of image %s: no space left: %w", short(ldg), p.key, err)
	case isNetErr(err):
		return p.explain(err)
	case srcErr != nil || errors.As(err, &te) || errors.Is(err, io.ErrUnexpectedEOF):
		return corrupt(p.key, ldg, err)
	}
	return fmt.Errorf("unpack layer %s of image %s: %w", short(ldg), p.key, err)
}

// verifyLayer checks what arrived against the manifest and the config.
func (p *pullJob) verifyLayer(ldg, diffID v1.Hash, size int64, cr *countingReader, uh hash.Hash) error {
	if cr.n != size {
		return errno.Errorf(syscall.EIO, "layer %s of image %s is truncated or corrupt: the registry sent %d bytes, the manifest says %d; %s", short(ldg), p.key, cr.n, size, pullAgain)
	}
	if got := "sha256:" + hex.EncodeToString(cr.h.Sum(nil)); ldg.Algorithm == "sha256" && got != ldg.String() {
		return errno.Errorf(syscall.EIO, "layer %s of image %s is corrupt: its content does not match its digest (got %s); %s", short(ldg), p.key, short2(got), pullAgain)
	}
	if got := "sha256:" + hex.EncodeToString(uh.Sum(nil)); diffID.Algorithm == "sha256" && got != diffID.String() {
		return errno.Errorf(syscall.EIO, "layer %s of image %s is corrupt: its uncompressed content does not match the config's diff ID %s", short(ldg), p.key, short(diffID))
	}
	return nil
}

// pullAgain ends the sentences about images that arrived damaged.
const pullAgain = "pull again, and if it persists, push the image again"

func corrupt(key string, l v1.Hash, err error) error {
	return errno.Errorf(syscall.EIO, "layer %s of image %s is corrupt or truncated (%v); %s", short(l), key, err, pullAgain)
}

func short(h v1.Hash) string { return short2(h.String()) }

func short2(s string) string {
	if len(s) > 19 {
		return s[:19]
	}
	return s
}

type countingReader struct {
	r      io.Reader
	h      hash.Hash
	n      int64
	last   time.Time
	unrep  int64
	report func(int64)
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if n > 0 {
		c.h.Write(p[:n])
		c.n += int64(n)
		c.unrep += int64(n)
		if err != nil || time.Since(c.last) > 50*time.Millisecond {
			c.report(c.unrep)
			c.unrep, c.last = 0, time.Now()
		}
	}
	if err != nil && c.unrep > 0 {
		c.report(c.unrep)
		c.unrep = 0
	}
	return n, err
}

// errAbandoned ends a fill whose reader has gone.
var errAbandoned = errors.New("layer abandoned")

// chunkPipe hands decompressed data from one goroutine to another in
// chunks, up to depth chunks ahead.
type chunkPipe struct {
	ch   chan []byte
	stop chan struct{}
	cur  []byte
	once sync.Once

	mu  sync.Mutex
	err error // why the writer stopped; set before ch is closed
}

func newChunkPipe(depth int) *chunkPipe {
	return &chunkPipe{ch: make(chan []byte, depth), stop: make(chan struct{})}
}

// fill reads r to its end (or an error, or abandon) into the pipe.
func (p *chunkPipe) fill(r io.Reader) error {
	for {
		b := make([]byte, 1<<20)
		n, err := io.ReadFull(r, b)
		if n > 0 {
			select {
			case p.ch <- b[:n]:
			case <-p.stop:
				return errAbandoned
			}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func (p *chunkPipe) closeWrite(err error) {
	p.mu.Lock()
	p.err = err
	p.mu.Unlock()
	close(p.ch)
}

// failed is the writer's error so far, if it failed (not abandoned).
func (p *chunkPipe) failed() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if errors.Is(p.err, errAbandoned) {
		return nil
	}
	return p.err
}

func (p *chunkPipe) abandon() { p.once.Do(func() { close(p.stop) }) }

func (p *chunkPipe) Read(b []byte) (int, error) {
	for len(p.cur) == 0 {
		c, ok := <-p.ch
		if !ok {
			if err := p.failed(); err != nil {
				return 0, err
			}
			return 0, io.EOF
		}
		p.cur = c
	}
	n := copy(b, p.cur)
	p.cur = p.cur[n:]
	return n, nil
}
