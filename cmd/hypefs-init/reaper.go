//go:build linux

package main

import (
	"fmt"
	"os"
	"os/signal"
	"sync"

	"golang.org/x/sys/unix"
)

// reaper reaps every child of PID 1, including orphans reparented to
// it, and reports the exit of the one process someone waits for (the
// guest's main program). All waiting goes through here: a second waiter
// could steal the main program's status.
type reaper struct {
	mu     sync.Mutex
	watch  map[int]chan string // pid -> receives a description of its end
	exited map[int]string      // reaped before anyone watched it
}

func startReaper() *reaper {
	r := &reaper{watch: map[int]chan string{}, exited: map[int]string{}}
	ch := make(chan os.Signal, 16)
	signal.Notify(ch, unix.SIGCHLD)
	go func() {
		for range ch {
			r.reapAll()
		}
	}()
	return r
}

// reapAll collects every child that has exited; it returns false once
// no children are left.
func (r *reaper) reapAll() bool {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err != unix.ECHILD
		}
		if pid <= 0 {
			return true
		}
		r.done(pid, describe(ws))
	}
}

func (r *reaper) done(pid int, how string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if ch, ok := r.watch[pid]; ok {
		ch <- how
		delete(r.watch, pid)
		return
	}
	if len(r.exited) < 1024 {
		r.exited[pid] = how
	}
}

// wait returns a channel that receives how pid ended. Call it right after
// starting pid; a status reaped in between is kept for it.
func (r *reaper) wait(pid int) <-chan string {
	ch := make(chan string, 1)
	r.mu.Lock()
	defer r.mu.Unlock()
	if how, ok := r.exited[pid]; ok {
		ch <- how
		delete(r.exited, pid)
		return ch
	}
	clear(r.exited) // older orphans' statuses nobody will ask for
	r.watch[pid] = ch
	return ch
}

func describe(ws unix.WaitStatus) string {
	if ws.Signaled() {
		return fmt.Sprintf("killed by %v (signal %d)", ws.Signal(), int(ws.Signal()))
	}
	return fmt.Sprintf("status %d", ws.ExitStatus())
}
