//go:build linux

package qemu

import (
	"bytes"
	"io"
	"os"
	"runtime"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// drainTimeout bounds how long the exit record waits for the console
// and QMP streams to deliver their last bytes after QEMU has ended.
const drainTimeout = 2 * time.Second

// run starts QEMU and is its only waiter. It runs on a goroutine locked
// to its OS thread for QEMU's whole life: Pdeathsig fires when the thread
// that forked QEMU exits, and Go may otherwise retire that thread at any
// time. The thread is never unlocked, so it ends with this goroutine,
// after QEMU has ended.
func (m *Machine) run(started chan<- error) {
	runtime.LockOSThread()
	if err := m.cmd.Start(); err != nil {
		started <- err
		close(m.exited)
		close(m.done)
		return
	}
	m.pid = m.cmd.Process.Pid
	started <- nil

	// Wait without reaping, kill the rest of the group while QEMU's
	// zombie still holds the group id (so it cannot be reused), reap.
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, m.pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if err != unix.EINTR {
			break
		}
	}
	unix.Kill(-m.pid, unix.SIGKILL)
	m.cmd.Wait()
	end := ending{time: time.Now()}
	if st, ok := m.cmd.ProcessState.Sys().(syscall.WaitStatus); ok {
		end.status = st
	}
	close(m.exited)

	// Let the console and QMP streams reach their end, so the exit
	// record sees the SHUTDOWN event and the console holds the last line.
	<-m.setup
	timeout := time.After(drainTimeout)
	if m.con != nil {
		select {
		case <-m.conDone:
		case <-timeout:
			m.con.Close()
		}
	}
	if m.qmp != nil {
		select {
		case <-m.evDone:
		case <-timeout:
			m.qmp.Close()
		}
	}
	select { // QEMU's last words reach its log
	case <-m.logDone:
	case <-timeout:
	}
	m.mu.Lock()
	end.requested = m.stopping
	end.shutdown = m.shutdown
	m.mu.Unlock()
	end.vmmTail = m.vmmTail()
	m.exit = classify(end)
	close(m.done)
}

// kill ends QEMU's whole process group at once.
func (m *Machine) kill() {
	if m.pid > 0 {
		unix.Kill(-m.pid, unix.SIGKILL)
	}
}

// vmmTail returns the last non-empty line this QEMU wrote to its log, to
// explain a failure in a sentence.
func (m *Machine) vmmTail() string {
	f, err := os.Open(m.logPath)
	if err != nil {
		return ""
	}
	defer f.Close()
	const max = 4096
	end, err := f.Seek(0, io.SeekEnd)
	if err != nil || end <= m.logStart {
		return ""
	}
	start := max64(m.logStart, end-max)
	buf := make([]byte, end-start)
	n, _ := f.ReadAt(buf, start)
	lines := bytes.Split(bytes.TrimSpace(buf[:n]), []byte("\n"))
	last := strings.TrimSpace(string(lines[len(lines)-1]))
	if len(last) > 200 {
		last = last[:200]
	}
	return last
}

func max64(a, b int64) int64 {
	if a > b {
		return a
	}
	return b
}
