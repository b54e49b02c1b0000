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

	hfs "hypefs/fs"
)

// The kernel sends no inotify event for a change that starts inside a
// FUSE daemon, even with Notify* calls. What does fire is a real system
// call on the mount: so the daemon makes them itself, on its own mount,
// from a goroutine of its own (never inside a FUSE request, which would
// deadlock), for every change the tree reports (hfs.Change):
//
//   - a file touched (an instance's status on a state change): utimes on
//     it (watchers get ATTRIB);
//   - a directory made or removed other than by a mkdir/rmdir on this
//     mount (an instance made over 9P, say): mkdir/rmdir of it, which the
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

// announce is what the waker is about to tell the kernel about a path:
// the kernel calls MKDIR only after a lookup of the name failed, and
// RMDIR only after one succeeded, so during the waker's own call the
// lookup answers as if the change had not happened yet.
type announce int

const (
	announceNone announce = iota
	announceCreate
	announceDelete
)

// wakeState is what one mount's nodes and its waker share, by path
// relative to the root: the directories users made or removed through
// this mount (whose watchers the kernel has told already), and what the
// waker is announcing right now.
type wakeState struct {
	mu         sync.Mutex
	locals     map[string]time.Time
	announcing map[string]announce
}

func newWakeState() *wakeState {
	return &wakeState{locals: map[string]time.Time{}, announcing: map[string]announce{}}
}

// markLocal remembers that a user made or removed path through the mount.
func (w *wakeState) markLocal(path string) {
	w.mu.Lock()
	w.locals[path] = time.Now()
	w.mu.Unlock()
}

// takeLocal reports (and forgets) whether path was marked recently.
func (w *wakeState) takeLocal(path string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	t, ok := w.locals[path]
	delete(w.locals, path)
	return ok && time.Since(t) < time.Minute
}

func (w *wakeState) setAnnounce(path string, a announce) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if a == announceNone {
		delete(w.announcing, path)
	} else {
		w.announcing[path] = a
	}
}

func (w *wakeState) announced(path string) announce {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.announcing[path]
}

// Waker turns the tree's changes into system calls on the mount.
type Waker struct {
	mnt  string
	st   *wakeState
	ch   chan hfs.Change
	quit chan struct{} // closed by Stop; ch is never closed (late changes)
	done chan struct{}
	once sync.Once
}

// StartWaker starts waking inotify watchers of this mount.
func (s *Server) StartWaker() *Waker {
	w := &Waker{mnt: s.mnt, st: s.st, ch: make(chan hfs.Change, 4096), quit: make(chan struct{}), done: make(chan struct{})}
	s.tree.Watch(func(c hfs.Change) {
		select {
		case <-w.quit:
		case w.ch <- c:
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
		var c hfs.Change
		select {
		case <-w.quit:
			return
		case c = <-w.ch:
		}
		p := filepath.Join(w.mnt, filepath.FromSlash(c.Path))
		switch c.Kind {
		case hfs.Removed:
			if !w.st.takeLocal(c.Path) {
				w.st.setAnnounce(c.Path, announceDelete)
				syscall.Rmdir(p)
				w.st.setAnnounce(c.Path, announceNone)
			}
		case hfs.Made:
			if !w.st.takeLocal(c.Path) {
				w.st.setAnnounce(c.Path, announceCreate)
				syscall.Mkdir(p, 0o755)
				w.st.setAnnounce(c.Path, announceNone)
			}
		case hfs.Touched:
			now := time.Now()
			os.Chtimes(p, now, now)
		}
	}
}
