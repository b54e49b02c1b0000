package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"hypefs/internal/testenv"
	"hypefs/shim/api"
)

// BenchmarkStatusRead: open+read+close of status through FUSE, against an
// HTTP GET vm.info straight on the shim's socket; both from this process.
func BenchmarkStatusRead(b *testing.B) {
	d := testenv.NewDaemon(b)
	d.Boot("st", "{}")
	status := d.Inst("st", "status")
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", filepath.Join(d.RunDir("st"), "api.sock"))
	}}}
	const n = 500
	var mine, raw []time.Duration
	for k := 0; k < n; k++ {
		t0 := time.Now()
		if _, err := os.ReadFile(status); err != nil {
			b.Fatal(err)
		}
		mine = append(mine, time.Since(t0))
		t0 = time.Now()
		resp, err := hc.Get("http://shim" + api.PathInfo)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		raw = append(raw, time.Since(t0))
	}
	testenv.Shell("echo kill > " + d.Inst("st", "ctl"))
	report(b, "status-read", median(mine), median(raw), "ms", "<=2", 0)
}

// BenchmarkListInstances: `ls -l instances/` with 1,000 (new) instances.
// The baseline is the same ls -l of a plain directory with 1,000
// subdirectories on the host's disk.
func BenchmarkListInstances(b *testing.B) {
	d := testenv.NewDaemon(b)
	plain := filepath.Join(d.Dir, "plain")
	os.Mkdir(plain, 0o755)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for k := 0; k < 1000; k++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			name := fmt.Sprintf("vm%04d", k)
			if err := os.Mkdir(d.Path("instances", name), 0o755); err != nil {
				b.Error(err)
			}
			os.Mkdir(filepath.Join(plain, name), 0o755)
		}()
	}
	wg.Wait()
	ls := func(dir string) time.Duration {
		t0 := time.Now()
		out, err := exec.Command("ls", "-l", dir).Output()
		if err != nil || len(out) < 1000*20 {
			b.Fatalf("ls -l %s: %v (%d bytes)", dir, err, len(out))
		}
		return time.Since(t0)
	}
	ls(d.Path("instances")) // a first listing fills the kernel's caches, as a user's first ls does
	var mine, raw []time.Duration
	for k := 0; k < 11; k++ {
		mine = append(mine, ls(d.Path("instances")))
		raw = append(raw, ls(plain))
	}
	v := median(mine)
	fmt.Printf("BENCH ls-1000-instances value=%.1fms baseline=%.1fms ratio=%.2f target=<=50ms\n",
		ms(v), ms(median(raw)), ms(v)/ms(median(raw)))
}

// BenchmarkLogRead: reading a 256 MiB log through FUSE, against reading
// its backing file; throughput.
func BenchmarkLogRead(b *testing.B) {
	d := testenv.NewDaemon(b)
	os.Mkdir(d.Path("instances", "big"), 0o755)
	backing := filepath.Join(d.Data, "instances", "big", "console.log")
	f, err := os.Create(backing)
	if err != nil {
		b.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	for i := range chunk {
		chunk[i] = "0123456789abcdef\n"[i%17]
	}
	for k := 0; k < 256; k++ {
		f.Write(chunk)
	}
	f.Close()
	read := func(p string) float64 {
		exec.Command("sh", "-c", "sync; echo 1 > /proc/sys/vm/drop_caches").Run()
		t0 := time.Now()
		g, err := os.Open(p)
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.CopyBuffer(io.Discard, g, make([]byte, 1<<20))
		g.Close()
		if err != nil || n != 256<<20 {
			b.Fatalf("read %s: %d bytes, %v", p, n, err)
		}
		return 256 / time.Since(t0).Seconds()
	}
	var mine, raw []float64
	for k := 0; k < 3; k++ {
		mine = append(mine, read(d.Inst("big", "log")))
		raw = append(raw, read(backing))
	}
	v, base := medianF(mine), medianF(raw)
	fmt.Printf("BENCH log-read-256MiB value=%.0fMB/s baseline=%.0fMB/s ratio=%.2f target=>=0.5\n", v, base, v/base)
}

// BenchmarkRestart20: kill -9 of the daemon with 20 live (paused) VMs,
// then hypefs mount again until every instance is reattached. The
// baseline is the same mount with no instance at all.
func BenchmarkRestart20(b *testing.B) {
	d := testenv.NewDaemon(b)
	const n = 20
	for k := 0; k < n; k++ {
		name := fmt.Sprintf("r%02d", k)
		os.Mkdir(d.Path("instances", name), 0o755)
		os.WriteFile(d.Inst(name, "config"), []byte(`{"memory":"128M"}`), 0o644)
	}
	for k := 0; k < n; k++ {
		name := fmt.Sprintf("r%02d", k)
		d.WaitStatus(name, "running", 5*time.Minute)
		// Paused VMs cost no CPU: the restart is measured, not TCG.
		if err := os.WriteFile(d.Inst(name, "ctl"), []byte("pause"), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	restart := func(dd *testenv.Daemon, want int) time.Duration {
		dd.Kill()
		t0 := time.Now()
		dd.Start()
		for k := 0; k < want; k++ {
			if st := dd.Status(fmt.Sprintf("r%02d", k)); st != "paused" {
				b.Fatalf("r%02d is %q after restart", k, st)
			}
		}
		return time.Since(t0)
	}
	var mine []time.Duration
	for k := 0; k < 3; k++ {
		mine = append(mine, restart(d, n))
	}
	empty := testenv.NewDaemon(b)
	var base []time.Duration
	for k := 0; k < 3; k++ {
		base = append(base, restart(empty, 0))
	}
	for k := 0; k < n; k++ {
		testenv.Shell(fmt.Sprintf("echo kill > %s", d.Inst(fmt.Sprintf("r%02d", k), "ctl")))
	}
	v := median(mine)
	fmt.Printf("BENCH restart-20-vms value=%.0fms baseline=%.0fms ratio=%.2f target=<1000ms\n", ms(v), ms(median(base)), ms(v)/ms(median(base)))
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func medianF(v []float64) float64 {
	s := append([]float64(nil), v...)
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
	return s[len(s)/2]
}
