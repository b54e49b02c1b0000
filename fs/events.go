package fs

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"hypefs/backend/instance"
)

// Hub fans event lines out to the open events files. A line reads
// `RFC3339-time instance-name state [detail]`.
type Hub struct {
	mu   sync.Mutex
	subs map[*eventsHandle]struct{}
	last time.Time // when the last line was published
}

// NewHub returns an empty hub.
func NewHub() *Hub { return &Hub{subs: map[*eventsHandle]struct{}{}} }

// Last is when the hub last published a line (zero: never).
func (h *Hub) Last() time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.last
}

// Publish sends an instance event to every reader that wants it.
// Non-state events (refusals) are not published.
func (h *Hub) Publish(ev instance.Event) {
	state := ev.State
	switch {
	case ev.Deleted:
		state = "deleted"
	case state == "":
		return
	}
	line := fmt.Sprintf("%s %s %s", ev.Time.UTC().Format(time.RFC3339Nano), ev.Instance, state)
	// The detail never repeats the state: "stopped" with "stopped by
	// request" reads "NAME stopped by request".
	detail := oneLine(ev.Detail)
	if rest, ok := strings.CutPrefix(detail, state); ok && (rest == "" || rest[0] == ' ') {
		detail = strings.TrimSpace(rest)
	}
	if detail != "" {
		line += " " + detail
	}
	b := []byte(line + "\n")
	h.mu.Lock()
	defer h.mu.Unlock()
	h.last = ev.Time
	for s := range h.subs {
		if s.filter == "" || s.filter == ev.Instance {
			// The events of a removed instance end with its last line.
			s.buf.append(b, ev.Deleted && s.filter != "")
		}
	}
}

func oneLine(s string) string {
	out := []rune{}
	for _, r := range s {
		if r == '\n' || r == '\r' {
			r = ' '
		}
		out = append(out, r)
	}
	return string(out)
}

// EventsFile follows events from open on: every instance's (filter "") or
// one instance's, until that instance is removed (then EOF). Reads block
// for new lines (or fail with EAGAIN when opened O_NONBLOCK); size 0;
// direct I/O; not listed.
type EventsFile struct {
	base
	hub    *Hub
	filter string
	gone   func() bool // the instance was removed
}

// NewEventsFile makes an events file for the hub; gone, if not nil, tells
// when the instance the file follows was removed.
func NewEventsFile(hub *Hub, filter string, gone func() bool) *EventsFile {
	return &EventsFile{base: newBase(0o444), hub: hub, filter: filter, gone: gone}
}

func (f *EventsFile) Stat(context.Context) (int64, time.Time) { return 0, f.changed() }

// Follows marks a follow file.
func (f *EventsFile) Follows() {}

func (f *EventsFile) Open(ctx context.Context, flags int) (Handle, error) {
	if flags&(os.O_WRONLY|os.O_RDWR) != 0 {
		return nil, syscall.EACCES
	}
	h := &eventsHandle{hub: f.hub, filter: f.filter, buf: newFollowBuf(flags)}
	f.hub.mu.Lock()
	if f.gone != nil && f.gone() {
		h.buf.append(nil, true)
	} else {
		f.hub.subs[h] = struct{}{}
	}
	f.hub.mu.Unlock()
	return h, nil
}

type eventsHandle struct {
	noWrite
	hub    *Hub
	filter string
	buf    *followBuf
}

func (h *eventsHandle) Read(ctx context.Context, p []byte, _ int64) (int, error) {
	return h.buf.read(ctx, p)
}
func (h *eventsHandle) Flush(context.Context) error { return nil }
func (h *eventsHandle) Release() {
	h.hub.mu.Lock()
	delete(h.hub.subs, h)
	h.hub.mu.Unlock()
	h.buf.append(nil, true)
	h.buf.release()
}
func (h *eventsHandle) DirectIO() bool { return true }
func (h *eventsHandle) Stream() bool   { return true }
