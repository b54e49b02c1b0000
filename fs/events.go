package fs

import (
	"context"
	"fmt"
	"os"
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
}

// NewHub returns an empty hub.
func NewHub() *Hub { return &Hub{subs: map[*eventsHandle]struct{}{}} }

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
	if ev.Detail != "" {
		line += " " + oneLine(ev.Detail)
	}
	b := []byte(line + "\n")
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		if s.filter == "" || s.filter == ev.Instance {
			s.buf.append(b, false)
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
// one instance's. Reads block for new lines; size 0; direct I/O.
type EventsFile struct {
	base
	hub    *Hub
	filter string
}

// NewEventsFile makes an events file for the hub.
func NewEventsFile(hub *Hub, filter string) *EventsFile {
	return &EventsFile{base: newBase(0o444), hub: hub, filter: filter}
}

func (f *EventsFile) Stat(context.Context) (int64, time.Time) { return 0, time.Now() }

func (f *EventsFile) Open(ctx context.Context, flags int) (Handle, error) {
	if flags&(os.O_WRONLY|os.O_RDWR) != 0 {
		return nil, syscall.EACCES
	}
	h := &eventsHandle{hub: f.hub, filter: f.filter, buf: newFollowBuf()}
	f.hub.mu.Lock()
	f.hub.subs[h] = struct{}{}
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
