// Package bench measures hypefs against the raw tools it wraps. Each
// benchmark runs its own loops (use -benchtime 1x) and prints one line per
// figure:
//
//	BENCH <name> value=<v><unit> baseline=<b><unit> ratio=<v/b> target=<op><n>
package bench

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"syscall"
	"testing"
	"time"

	"hypefs/internal/testenv"
	"hypefs/shim"
	"hypefs/shim/api"
	"hypefs/shim/qemu"
	"hypefs/shim/qmp"
)

const runs = 5

// BenchmarkBootToReady: config write until "hypefs: guest ready" is in
// log, against the identical QEMU command line started by hand and read
// to the same marker. Runs alternate so that drift in the host's load
// hits both sides alike.
func BenchmarkBootToReady(b *testing.B) {
	d := testenv.NewDaemon(b)
	var mine, raw []time.Duration
	var spec *api.Config
	for k := 0; k < runs; k++ {
		name := fmt.Sprintf("boot%d", k)
		if err := os.Mkdir(d.Path("instances", name), 0o755); err != nil {
			b.Fatal(err)
		}
		log := d.Inst(name, "log")
		start := time.Now()
		if err := os.WriteFile(d.Inst(name, "config"), []byte("{}"), 0o644); err != nil {
			b.Fatal(err)
		}
		if !testenv.WaitFor(2*time.Minute, func() bool { return fileHas(log, shim.ReadyMarker) }) {
			b.Fatalf("%s never became ready", name)
		}
		mine = append(mine, time.Since(start))
		if spec == nil {
			spec = loadShimConfig(b, filepath.Join(d.RunDir(name), "shim-config.json"))
		}
		testenv.Shell("echo kill > " + d.Inst(name, "ctl") + " && rmdir " + d.Path("instances", name))

		raw = append(raw, rawBoot(b, spec))
	}
	report(b, "boot-to-ready", median(mine), median(raw), "s", "<=1.05", 0)
}

// BenchmarkPause: `echo pause > ctl` until status reads "paused", against
// a raw QMP stop round trip on a QEMU started by hand.
func BenchmarkPause(b *testing.B) {
	d := testenv.NewDaemon(b)
	d.Boot("p", "{}")
	spec := loadShimConfig(b, filepath.Join(d.RunDir("p"), "shim-config.json"))
	const n = 50
	var mine []time.Duration
	ctl, status := d.Inst("p", "ctl"), d.Inst("p", "status")
	for k := 0; k < n; k++ {
		start := time.Now()
		if err := os.WriteFile(ctl, []byte("pause\n"), 0o644); err != nil {
			b.Fatal(err)
		}
		for !fileHas(status, "paused") {
		}
		mine = append(mine, time.Since(start))
		if err := os.WriteFile(ctl, []byte("resume\n"), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	testenv.Shell("echo kill > " + ctl)

	vm := startRaw(b, spec)
	defer vm.kill()
	vm.waitReady(b)
	var raw []time.Duration
	ctx := context.Background()
	for k := 0; k < n; k++ {
		start := time.Now()
		if err := vm.qmp.Execute(ctx, "stop", nil, nil); err != nil {
			b.Fatal(err)
		}
		raw = append(raw, time.Since(start))
		if err := vm.qmp.Execute(ctx, "cont", nil, nil); err != nil {
			b.Fatal(err)
		}
	}
	base := median(raw)
	// "Within 2 ms of raw": the target is the baseline plus 2 ms.
	report(b, "pause", median(mine), base, "ms", "<=", base+2*time.Millisecond)
}

func fileHas(path, s string) bool {
	b, err := os.ReadFile(path)
	return err == nil && bytes.Contains(b, []byte(s))
}

func loadShimConfig(b *testing.B, path string) *api.Config {
	c, err := api.LoadConfig(path)
	if err != nil {
		b.Fatal(err)
	}
	return c
}

// rawVM is QEMU started by hand with hypefs' exact command line: we
// listen on its console and QMP sockets, as the shim does.
type rawVM struct {
	cmd     *exec.Cmd
	dir     string
	console net.Conn
	qmp     *qmp.Client
	out     chan []byte
	seen    bytes.Buffer
	started time.Time
}

func startRaw(b *testing.B, cfg *api.Config) *rawVM {
	dir, err := os.MkdirTemp("", "raw")
	if err != nil {
		b.Fatal(err)
	}
	spec := cfg.Engine
	spec.RunDir = dir
	spec.VMMLog = filepath.Join(dir, "vmm.log")
	conL, err := net.Listen("unix", filepath.Join(dir, "s.con"))
	if err != nil {
		b.Fatal(err)
	}
	qmpL, err := net.Listen("unix", filepath.Join(dir, "s.qmp"))
	if err != nil {
		b.Fatal(err)
	}
	vm := &rawVM{dir: dir, out: make(chan []byte, 1024)}
	vm.started = time.Now()
	vm.cmd = exec.Command("qemu-system-x86_64", qemu.Args(spec)...)
	vm.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := vm.cmd.Start(); err != nil {
		b.Fatal(err)
	}
	if vm.console, err = conL.Accept(); err != nil {
		b.Fatal(err)
	}
	go func() {
		buf := make([]byte, 32<<10)
		for {
			n, err := vm.console.Read(buf)
			if n > 0 {
				vm.out <- append([]byte(nil), buf[:n]...)
			}
			if err != nil {
				close(vm.out)
				return
			}
		}
	}()
	qc, err := qmpL.Accept()
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if vm.qmp, err = qmp.New(ctx, qc); err != nil {
		b.Fatal(err)
	}
	conL.Close()
	qmpL.Close()
	return vm
}

func (vm *rawVM) waitReady(b *testing.B) time.Duration {
	timeout := time.After(2 * time.Minute)
	for !bytes.Contains(vm.seen.Bytes(), []byte(shim.ReadyMarker)) {
		select {
		case chunk, ok := <-vm.out:
			if !ok {
				b.Fatal("raw QEMU ended before ready")
			}
			vm.seen.Write(chunk)
		case <-timeout:
			b.Fatal("raw QEMU not ready within 2 minutes")
		}
	}
	return time.Since(vm.started)
}

func (vm *rawVM) kill() {
	syscall.Kill(-vm.cmd.Process.Pid, syscall.SIGKILL)
	vm.cmd.Wait()
	os.RemoveAll(vm.dir)
}

func rawBoot(b *testing.B, cfg *api.Config) time.Duration {
	vm := startRaw(b, cfg)
	defer vm.kill()
	return vm.waitReady(b)
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

// report prints a BENCH line. A ratio target is given as op+"number"
// (e.g. "<=1.05"); an absolute one as op with abs set.
func report(b *testing.B, name string, value, baseline time.Duration, unit, target string, abs time.Duration) {
	conv := func(d time.Duration) float64 {
		if unit == "ms" {
			return float64(d) / float64(time.Millisecond)
		}
		return d.Seconds()
	}
	format := "%.3f"
	if abs != 0 {
		target = fmt.Sprintf("%s"+format+"%s", target, conv(abs), unit)
	}
	fmt.Printf("BENCH %s value="+format+"%s baseline="+format+"%s ratio=%.2f target=%s\n",
		name, conv(value), unit, conv(baseline), unit, conv(value)/conv(baseline), target)
	b.ReportMetric(conv(value), unit+"/"+name)
}
