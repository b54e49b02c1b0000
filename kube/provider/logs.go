package provider

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/virtual-kubelet/virtual-kubelet/errdefs"
	"github.com/virtual-kubelet/virtual-kubelet/node/api"
)

// logMarks dates the lines of an instance's log. The log (a growing
// regular file) has no times of its own, so while the VM runs the provider
// reads its console (a follow file: reads block until output arrives, so
// nothing is polled) and notes, at each arrival, the log's size and the
// time. A line is as old as the first mark at or past its end. Lines
// written while the provider was not reading take the time of the next
// mark: never older than they are, so --since never hides a line it
// should show. Each arrival also wakes `kubectl logs -f` readers.
type logMarks struct {
	mu        sync.Mutex
	marks     []logMark // by offset and time, both rising
	following bool
	grew      broadcast
}

type logMark struct {
	off int64
	t   time.Time
}

// markEvery coalesces marks: one per this much time is kept. maxMarks
// bounds a chatty Pod's marks (32 bytes each): past it every other mark
// goes, the later of each pair staying, so lines only ever get younger.
const (
	markEvery = 50 * time.Millisecond
	maxMarks  = 1 << 16
)

func newLogMarks() *logMarks { return &logMarks{} }

func (m *logMarks) add(off int64, t time.Time) {
	m.mu.Lock()
	n := len(m.marks)
	switch {
	case n > 0 && off <= m.marks[n-1].off:
	case n > 1 && t.Sub(m.marks[n-2].t) < markEvery:
		// The last mark moves up: its lines become at most markEvery
		// younger than they are, never older.
		m.marks[n-1] = logMark{off, t}
	default:
		m.marks = append(m.marks, logMark{off, t})
		if len(m.marks) > maxMarks {
			m.marks = thin(m.marks)
		}
	}
	m.mu.Unlock()
	m.grew.Signal()
}

// thin keeps every second mark, counting back from the last (kept).
func thin(marks []logMark) []logMark {
	out := marks[:0]
	for i := len(marks)%2 ^ 1; i < len(marks); i += 2 {
		out = append(out, marks[i])
	}
	return out
}

// timeOf is the time of the line that ends at off.
func (m *logMarks) timeOf(off int64) time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	i := sort.Search(len(m.marks), func(i int) bool { return m.marks[i].off >= off })
	if i == len(m.marks) {
		return time.Now()
	}
	return m.marks[i].t
}

// offsetSince is an offset at or before the first line that ends at or
// after since.
func (m *logMarks) offsetSince(since time.Time) int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	i := sort.Search(len(m.marks), func(i int) bool { return !m.marks[i].t.Before(since) })
	switch {
	case i == 0:
		return 0
	case i == len(m.marks):
		return m.marks[i-1].off
	}
	return m.marks[i-1].off
}

// followConsole starts reading the instance's console while the VM runs,
// unless a reader is on it already.
func (p *Provider) followConsole(ps *podState) {
	m := ps.logs
	m.mu.Lock()
	if m.following {
		m.mu.Unlock()
		return
	}
	m.following = true
	m.mu.Unlock()
	logPath, conPath := p.tree.Inst(ps.inst, "log"), p.tree.Inst(ps.inst, "console")
	go func() {
		defer func() {
			m.mu.Lock()
			m.following = false
			m.mu.Unlock()
			m.grew.Signal()
		}()
		f, err := os.Open(conPath)
		if err != nil {
			return
		}
		defer f.Close()
		mark := func() {
			if fi, err := os.Stat(logPath); err == nil {
				m.add(fi.Size(), time.Now())
			}
		}
		mark()
		buf := make([]byte, 32<<10)
		for {
			n, err := f.Read(buf)
			if n > 0 {
				mark()
			}
			if err != nil || p.ctx.Err() != nil {
				mark()
				return
			}
		}
	}()
}

// GetContainerLogs serves `kubectl logs`: the instance's log, which is the
// VM's serial console (the init's few `hypefs:` lines and the program's
// output), over all the Pod's runs. --tail, --since, --since-time,
// --timestamps, --limit-bytes and -f work; -f ends when the VM ends.
// --previous is refused: hypefs keeps one log per instance.
func (p *Provider) GetContainerLogs(ctx context.Context, namespace, podName, container string, opts api.ContainerLogOpts) (io.ReadCloser, error) {
	ps := p.lookup(namespace, podName)
	if ps == nil {
		return nil, errdefs.NotFoundf("pod %s/%s is not on this node", namespace, podName)
	}
	p.mu.Lock()
	inst, name := ps.inst, ""
	if len(ps.pod.Spec.Containers) > 0 {
		name = ps.pod.Spec.Containers[0].Name
	}
	p.mu.Unlock()
	if inst == "" {
		return nil, errdefs.NotFoundf("pod %s/%s has no VM: it was refused", namespace, podName)
	}
	if container != "" && container != name {
		return nil, errdefs.NotFoundf("pod %s/%s has no container %q (its container is %q)", namespace, podName, container, name)
	}
	if opts.Previous {
		return nil, errdefs.InvalidInput("hypefs keeps one log per Pod across restarts, so there is no separate previous log: leave out --previous")
	}
	f, err := os.Open(p.tree.Inst(inst, "log"))
	if err != nil {
		return nil, fmt.Errorf("open log of instance %s: %w", inst, err)
	}
	start, err := p.logStart(f, ps.logs, opts)
	if err != nil {
		f.Close()
		return nil, err
	}
	pr, pw := io.Pipe()
	go func() {
		defer f.Close()
		err := p.copyLog(ctx, ps, f, start, opts, pw)
		pw.CloseWithError(err)
	}()
	return pr, nil
}

// logStart is where a logs request starts: the later of --since and the
// start of the last --tail lines. (virtual-kubelet gives --tail=0 as 0,
// like no --tail: all lines.)
func (p *Provider) logStart(f *os.File, m *logMarks, opts api.ContainerLogOpts) (int64, error) {
	var start int64
	since := opts.SinceTime
	if opts.SinceSeconds > 0 {
		since = time.Now().Add(-time.Duration(opts.SinceSeconds) * time.Second)
	}
	if !since.IsZero() {
		off, err := lineStart(f, m.offsetSince(since))
		if err != nil {
			return 0, err
		}
		// Skip whole lines that are older than since.
		for {
			end, err := lineEnd(f, off)
			if err != nil || end == off || !m.timeOf(end).Before(since) {
				break
			}
			off = end
		}
		start = off
	}
	if opts.Tail > 0 {
		off, err := tailStart(f, opts.Tail)
		if err != nil {
			return 0, err
		}
		start = max(start, off)
	}
	return start, nil
}

// copyLog writes the log from start, line by line (with times when asked),
// and with -f keeps following until the VM has ended and the log has been
// read to its end.
func (p *Provider) copyLog(ctx context.Context, ps *podState, f *os.File, start int64, opts api.ContainerLogOpts, w io.Writer) error {
	if _, err := f.Seek(start, io.SeekStart); err != nil {
		return err
	}
	lw := &lineWriter{w: w, marks: ps.logs, off: start, stamp: opts.Timestamps, limit: int64(opts.LimitBytes)}
	buf := make([]byte, 32<<10)
	for {
		n, err := f.Read(buf)
		if n > 0 {
			if werr := lw.write(buf[:n]); werr != nil {
				return nil // the reader went away, or --limit-bytes was reached
			}
			continue
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		if !opts.Follow || !p.vmRuns(ps) && !p.consoleFollowed(ps) {
			return lw.flush()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ps.logs.grew.Wait():
		case <-time.After(time.Second): // no console reader (the provider started meanwhile)
		}
	}
}

func (p *Provider) vmRuns(ps *podState) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !ps.have || ps.deleted {
		return false
	}
	switch ps.snap.State {
	case stNew, stCreated, stBooting, stRunning, stPaused, stStopping:
		return true
	}
	// A restart that is about to run keeps -f open, as the program comes back.
	return ps.timer != nil || ps.creating
}

func (p *Provider) consoleFollowed(ps *podState) bool {
	ps.logs.mu.Lock()
	defer ps.logs.mu.Unlock()
	return ps.logs.following
}

// lineWriter passes whole lines on: a serial console ends lines with
// "\r\n", which it turns into "\n"; with stamp, each line starts with its
// time (RFC 3339, as the kubelet writes it).
type lineWriter struct {
	w       io.Writer
	marks   *logMarks
	off     int64 // log offset of the next byte taken
	pending []byte
	stamp   bool
	limit   int64 // bytes still to write; 0 is no limit
	written int64
}

func (l *lineWriter) write(b []byte) error {
	l.pending = append(l.pending, b...)
	l.off += int64(len(b))
	for {
		i := bytes.IndexByte(l.pending, '\n')
		if i < 0 {
			return nil
		}
		end := l.off - int64(len(l.pending)) + int64(i) + 1
		if err := l.emit(l.pending[:i], end, true); err != nil {
			return err
		}
		l.pending = l.pending[i+1:]
	}
}

// flush writes a last line that has no newline yet.
func (l *lineWriter) flush() error {
	if len(l.pending) == 0 {
		return nil
	}
	err := l.emit(l.pending, l.off, false)
	l.pending = nil
	if errors.Is(err, errLimit) {
		return nil
	}
	return err
}

var errLimit = errors.New("limit reached")

func (l *lineWriter) emit(line []byte, end int64, nl bool) error {
	line = bytes.TrimSuffix(line, []byte("\r"))
	var out []byte
	if l.stamp {
		out = append(out, l.marks.timeOf(end).UTC().Format(time.RFC3339Nano)...)
		out = append(out, ' ')
	}
	out = append(out, line...)
	if nl {
		out = append(out, '\n')
	}
	if l.limit > 0 && l.written+int64(len(out)) > l.limit {
		out = out[:l.limit-l.written]
		l.w.Write(out)
		l.written = l.limit
		return errLimit
	}
	l.written += int64(len(out))
	_, err := l.w.Write(out)
	return err
}

// lineStart is the start of the line that holds off.
func lineStart(f *os.File, off int64) (int64, error) {
	if off <= 0 {
		return 0, nil
	}
	buf := make([]byte, 4096)
	pos := off
	for pos > 0 {
		n := int64(len(buf))
		if pos < n {
			n = pos
		}
		k, err := f.ReadAt(buf[:n], pos-n)
		if err != nil && !errors.Is(err, io.EOF) {
			return 0, err
		}
		if i := bytes.LastIndexByte(buf[:k], '\n'); i >= 0 {
			return pos - n + int64(i) + 1, nil
		}
		pos -= n
	}
	return 0, nil
}

// lineEnd is the offset just past the line that starts at off, or off
// when no whole line follows.
func lineEnd(f *os.File, off int64) (int64, error) {
	r := bufio.NewReader(io.NewSectionReader(f, off, 1<<62))
	line, err := r.ReadSlice('\n')
	for errors.Is(err, bufio.ErrBufferFull) {
		more, e := r.ReadSlice('\n')
		line = append(append([]byte{}, line...), more...)
		err = e
	}
	if err != nil {
		return off, nil
	}
	return off + int64(len(line)), nil
}

// tailStart is the start of the last n lines of the file (a last line
// without its newline counts as one).
func tailStart(f *os.File, n int) (int64, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	size := fi.Size()
	buf := make([]byte, 32<<10)
	pos := size
	seen := 0
	last := true // the byte at size-1 is the end of the last line
	for pos > 0 {
		k := int64(len(buf))
		if pos < k {
			k = pos
		}
		if _, err := f.ReadAt(buf[:k], pos-k); err != nil && !errors.Is(err, io.EOF) {
			return 0, err
		}
		for i := k - 1; i >= 0; i-- {
			if buf[i] != '\n' {
				last = false
				continue
			}
			if last { // the newline that ends the file
				last = false
				continue
			}
			seen++
			if seen == n {
				return pos - k + i + 1, nil
			}
		}
		pos -= k
	}
	return 0, nil
}
