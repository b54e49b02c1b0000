package bench

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/hugelgupf/p9/p9"

	"hypefs/internal/testenv"
)

// nineClient connects p9's client to the daemon's 9P socket and attaches.
func nineClient(b *testing.B, sock string) p9.File {
	conn, err := net.Dial("unix", sock)
	if err != nil {
		b.Fatal(err)
	}
	c, err := p9.NewClient(conn)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	root, err := c.Attach("")
	if err != nil {
		b.Fatal(err)
	}
	return root
}

// nineRead reads a whole file over 9P (walk, open, reads, clunk) with
// buffers of size buf.
func nineRead(root p9.File, path []string, buf []byte) (int64, error) {
	_, f, err := root.Walk(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	if _, _, err := f.Open(p9.ReadOnly); err != nil {
		return 0, err
	}
	var off int64
	for {
		n, err := f.ReadAt(buf, off)
		off += int64(n)
		if err == io.EOF || err == nil && n < len(buf) {
			return off, nil
		}
		if err != nil {
			return off, err
		}
	}
}

// BenchmarkNinePStatusRead: open+read+close of status over 9P (p9's
// client on the daemon's Unix socket: walk, lopen, read, clunk), against
// the same through FUSE (os.ReadFile); both from this process.
func BenchmarkNinePStatusRead(b *testing.B) {
	sock := filepath.Join(b.TempDir(), "9p.sock")
	d := testenv.NewDaemonWith(b, "--9p", "unix:"+sock)
	if err := os.Mkdir(d.Path("instances", "st"), 0o755); err != nil {
		b.Fatal(err)
	}
	root := nineClient(b, sock)
	status := d.Inst("st", "status")
	path := []string{"instances", "st", "status"}
	buf := make([]byte, 4096)
	const n = 2000
	var mine, fuse []time.Duration
	for k := 0; k < n; k++ {
		t0 := time.Now()
		if got, err := nineRead(root, path, buf); err != nil || got == 0 {
			b.Fatalf("9p read of status: %d bytes, %v", got, err)
		}
		mine = append(mine, time.Since(t0))
		t0 = time.Now()
		if _, err := os.ReadFile(status); err != nil {
			b.Fatal(err)
		}
		fuse = append(fuse, time.Since(t0))
	}
	report(b, "9p-status-read", median(mine), median(fuse), "ms", "<=2", 0)
}

// BenchmarkNinePLogRead: reading a 64 MiB log over 9P (1 MiB reads, p9's
// default message size) against reading it through FUSE; throughput,
// page cache dropped before each read.
func BenchmarkNinePLogRead(b *testing.B) {
	sock := filepath.Join(b.TempDir(), "9p.sock")
	d := testenv.NewDaemonWith(b, "--9p", "unix:"+sock)
	const size = 64 << 20
	os.Mkdir(d.Path("instances", "big"), 0o755)
	backing := filepath.Join(d.Data, "instances", "big", "console.log")
	f, err := os.OpenFile(backing, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		b.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	for i := range chunk {
		chunk[i] = "0123456789abcdef\n"[i%17]
	}
	for k := 0; k < size>>20; k++ {
		f.Write(chunk)
	}
	f.Close()
	root := nineClient(b, sock)
	buf := make([]byte, 1<<20)
	dropCaches := func() { exec.Command("sh", "-c", "sync; echo 1 > /proc/sys/vm/drop_caches").Run() }
	var mine, fuse []float64
	for k := 0; k < 5; k++ {
		dropCaches()
		t0 := time.Now()
		if n, err := nineRead(root, []string{"instances", "big", "log"}, buf); err != nil || n != size {
			b.Fatalf("9p read of log: %d bytes, %v", n, err)
		}
		mine = append(mine, 64/time.Since(t0).Seconds())

		dropCaches()
		t0 = time.Now()
		g, err := os.Open(d.Inst("big", "log"))
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.CopyBuffer(io.Discard, g, buf)
		g.Close()
		if err != nil || n != size {
			b.Fatalf("FUSE read of log: %d bytes, %v", n, err)
		}
		fuse = append(fuse, 64/time.Since(t0).Seconds())
	}
	v, base := medianF(mine), medianF(fuse)
	fmt.Printf("BENCH 9p-log-read-64MiB value=%.0fMB/s baseline=%.0fMB/s ratio=%.2f target=>=0.25\n", v, base, v/base)
	b.ReportMetric(v, "MB/s/9p-log-read-64MiB")
}
