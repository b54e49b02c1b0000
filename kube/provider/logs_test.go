package provider

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/virtual-kubelet/virtual-kubelet/node/api"
)

// logFile writes a console-shaped log ("\r\n" line ends) of n lines and
// marks it as if line i had arrived at base+i seconds.
func logFile(t *testing.T, n int, base time.Time) (*os.File, *logMarks) {
	t.Helper()
	var b bytes.Buffer
	m := newLogMarks()
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "line-%s%05d\r\n", strings.Repeat("x", i%7), i)
		m.add(int64(b.Len()), base.Add(time.Duration(i)*time.Second))
	}
	p := filepath.Join(t.TempDir(), "log")
	if err := os.WriteFile(p, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f, m
}

// readLog is what GetContainerLogs would send for opts (without -f).
func readLog(t *testing.T, f *os.File, m *logMarks, opts api.ContainerLogOpts) string {
	t.Helper()
	p := &Provider{}
	start, err := p.logStart(f, m, opts)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	ps := &podState{logs: m}
	if err := p.copyLog(context.Background(), ps, f, start, opts, &out); err != nil {
		t.Fatal(err)
	}
	return out.String()
}

// --tail, --since(-time), --timestamps and --limit-bytes over a log of
// 5,000 lines (larger than one read), with the console's "\r\n" turned
// into "\n".
func TestLogOptions(t *testing.T) {
	base := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	f, m := logFile(t, 5000, base)
	all := readLog(t, f, m, api.ContainerLogOpts{})
	if strings.Count(all, "\n") != 5000 || strings.Contains(all, "\r") || !strings.HasSuffix(all, "05000\n") {
		t.Fatalf("all lines: %d lines, \\r kept: %v, ends %q", strings.Count(all, "\n"), strings.Contains(all, "\r"), all[len(all)-20:])
	}
	if got := readLog(t, f, m, api.ContainerLogOpts{Tail: 3}); strings.Count(got, "\n") != 3 || !strings.HasPrefix(got, "line-") || !strings.Contains(got, "04998\n") {
		t.Errorf("--tail=3: %q", got)
	}
	if got := readLog(t, f, m, api.ContainerLogOpts{Tail: 9999}); got != all {
		t.Errorf("--tail past the start is not the whole log")
	}
	since := readLog(t, f, m, api.ContainerLogOpts{SinceTime: base.Add(4990 * time.Second)})
	if strings.Count(since, "\n") != 11 || !strings.Contains(since, "04990\n") || strings.Contains(since, "04989\n") {
		t.Errorf("--since-time: %d lines: %q", strings.Count(since, "\n"), since)
	}
	both := readLog(t, f, m, api.ContainerLogOpts{SinceTime: base.Add(4990 * time.Second), Tail: 2})
	if strings.Count(both, "\n") != 2 {
		t.Errorf("--since-time with --tail=2: %q", both)
	}
	stamped := readLog(t, f, m, api.ContainerLogOpts{Timestamps: true, Tail: 1})
	if want := base.Add(5000*time.Second).Format(time.RFC3339Nano) + " line-"; !strings.HasPrefix(stamped, want) {
		t.Errorf("--timestamps: %q, want prefix %q", stamped, want)
	}
	if got := readLog(t, f, m, api.ContainerLogOpts{LimitBytes: 10}); got != all[:10] {
		t.Errorf("--limit-bytes=10: %q, want %q", got, all[:10])
	}
	if got := readLog(t, f, m, api.ContainerLogOpts{SinceTime: base.Add(time.Hour * 10)}); got != "" {
		t.Errorf("--since-time in the future: %q", got)
	}
}

// Lines written before the first mark take its time (never older than
// they are); a last line without its newline is passed on.
func TestLogMarksEdges(t *testing.T) {
	m := newLogMarks()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	m.add(100, t0)
	m.add(100, t0.Add(time.Second)) // no growth: no mark
	m.add(150, t0.Add(20*time.Millisecond))
	m.add(160, t0.Add(30*time.Millisecond)) // within markEvery: moves the last mark up
	m.add(200, t0.Add(2*time.Second))
	if got := m.timeOf(10); !got.Equal(t0) {
		t.Errorf("a line before the first mark: %v, want %v", got, t0)
	}
	if got := m.timeOf(140); !got.Equal(t0.Add(30 * time.Millisecond)) {
		t.Errorf("a line of the moved mark: %v", got)
	}
	if len(m.marks) != 3 {
		t.Errorf("%d marks, want 3: %+v", len(m.marks), m.marks)
	}
	if got := m.offsetSince(t0.Add(time.Second)); got != 160 {
		t.Errorf("offsetSince: %d, want 160", got)
	}

	p := filepath.Join(t.TempDir(), "log")
	os.WriteFile(p, []byte("one\r\ntwo\r\npartial"), 0o644)
	f, _ := os.Open(p)
	defer f.Close()
	if got := readLog(t, f, newLogMarks(), api.ContainerLogOpts{}); got != "one\ntwo\npartial" {
		t.Errorf("log with a last line cut: %q", got)
	}
	if got := readLog(t, f, newLogMarks(), api.ContainerLogOpts{Tail: 1}); got != "partial" {
		t.Errorf("--tail=1 of a cut last line: %q", got)
	}
	os.WriteFile(p, nil, 0o644)
	if got := readLog(t, f, newLogMarks(), api.ContainerLogOpts{Tail: 5}); got != "" {
		t.Errorf("empty log: %q", got)
	}
}

// A chatty log's marks stay bounded; lines only get younger.
func TestLogMarksBounded(t *testing.T) {
	m := newLogMarks()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := 1; i <= 3*maxMarks; i++ {
		m.add(int64(i*10), t0.Add(time.Duration(i)*time.Second))
	}
	if n := len(m.marks); n > maxMarks || n < maxMarks/2 {
		t.Fatalf("%d marks after %d arrivals", n, 3*maxMarks)
	}
	last := m.marks[len(m.marks)-1]
	if last.off != int64(3*maxMarks*10) {
		t.Errorf("the last mark went: %+v", last)
	}
	for _, off := range []int64{5, 10, 12345, int64(3 * maxMarks * 10)} {
		truth := t0.Add(time.Duration((off+9)/10) * time.Second)
		if got := m.timeOf(off); got.Before(truth) {
			t.Errorf("line ending at %d dated %v, before it was written (%v)", off, got, truth)
		}
	}
}
