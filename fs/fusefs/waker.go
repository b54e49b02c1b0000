package fusefs

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"hypefs/backend/instance"
	hfs "hypefs/fs"
)

// The kernel sends no inotify event for a change that starts inside a
// FUSE daemon, even with Notify* calls. What does fire is a real system
// call on the mount: so the daemon makes them itself, on its own mount,
// from a goroutine of its own (never inside a FUSE request, which would
// deadlock):
//
//   - a state change: utimes on instances/NAME/status (watchers get ATTRIB);
//   - an instance made or removed other than by a mkdir/rmdir on this
//     mount (over 9P, say): mkdir/rmdir of instances/NAME, which the
//     adapter answers as a no-op for the daemon itself (CREATE/DELETE).
//
// The adapter recognises the daemon's own requests by the caller's pid,
// which the kernel reports per thread: any thread of this process.

// self reports whether a FUSE request comes from this process.
func self(ctx context.Context) bool {
	c, ok := fuse.FromContext(ctx)
	if !ok {
		return false
	}
	if int(c.Pid) == os.Getpid() {
		return true
	}
	_, err := os.Stat(fmt.Sprintf("/proc/self/task/%d", c.Pid))
	return err == nil
}

// local remembers instances made or removed through this mount by users,
// whose watchers the kernel has told already.
type local struct {
	mu    sync.Mutex
	names map[string]time.Time
}

func (l *local) mark(name string) {
	l.mu.Lock()
	l.names[name] = time.Now()
	l.mu.Unlock()
}

// take reports (and forgets) whether name was marked recently.
func (l *local) take(name string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	t, ok := l.names[name]
	delete(l.names, name)
	return ok && time.Since(t) < time.Minute
}

var locals = &local{names: map[string]time.Time{}}

// announce is what the waker is about to tell the kernel about an
// instance name: the kernel calls MKDIR only after a lookup of the name
// failed, and RMDIR only after one succeeded, so during the waker's own
// call the lookup answers as if the change had not happened yet.
type announce int

const (
	announceNone announce = iota
	announceCreate
	announceDelete
)

var announcing struct {
	mu    sync.Mutex
	names map[string]announce
}

func setAnnounce(name string, a announce) {
	announcing.mu.Lock()
	defer announcing.mu.Unlock()
	if announcing.names == nil {
		announcing.names = map[string]announce{}
	}
	if a == announceNone {
		delete(announcing.names, name)
	} else {
		announcing.names[name] = a
	}
}

func announced(name string) announce {
	announcing.mu.Lock()
	defer announcing.mu.Unlock()
	return announcing.names[name]
}

// Waker turns instance events into system calls on the mount.
type Waker struct {
	mnt  string
	ch   chan instance.Event
	quit chan struct{} // closed by Stop; ch is never closed (late events)
	done chan struct{}
	once sync.Once
}

// StartWaker starts waking inotify watchers of the tree mounted at mnt.
func StartWaker(mnt string, tree *hfs.Tree) *Waker {
	w := &Waker{mnt: mnt, ch: make(chan instance.Event, 4096), quit: make(chan struct{}), done: make(chan struct{})}
	tree.Watch(func(ev instance.Event) {
		select {
		case <-w.quit:
		case w.ch <- ev:
		default: // a burst beyond the queue: watchers miss a wake, never the daemon
		}
	})
	go w.run()
	return w
}

// Stop ends the waker; call it before unmounting.
func (w *Waker) Stop() {
	w.once.Do(func() { close(w.quit) })
	<-w.done
}

func (w *Waker) run() {
	defer close(w.done)
	for {
		var ev instance.Event
		select {
		case <-w.quit:
			return
		case ev = <-w.ch:
		}
		dir := filepath.Join(w.mnt, "instances", ev.Instance)
		switch {
		case ev.Deleted:
			if !locals.take(ev.Instance) {
				setAnnounce(ev.Instance, announceDelete)
				syscall.Rmdir(dir)
				setAnnounce(ev.Instance, announceNone)
			}
		case ev.State == instance.New:
			if !locals.take(ev.Instance) {
				setAnnounce(ev.Instance, announceCreate)
				syscall.Mkdir(dir, 0o755)
				setAnnounce(ev.Instance, announceNone)
			}
		case ev.State != "":
			now := time.Now()
			os.Chtimes(filepath.Join(dir, "status"), now, now)
		}
	}
}
