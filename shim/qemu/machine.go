//go:build linux

package qemu

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os/exec"
	"sync"
	"time"

	"hypefs/shim/engine"
	"hypefs/shim/qmp"
)

// Machine is one QEMU process and its guest.
type Machine struct {
	spec     engine.Spec
	cmd      *exec.Cmd
	pid      int
	logPath  string
	logStart int64 // where this QEMU's output begins in the log

	console io.Writer // receives guest output
	con     net.Conn  // console socket
	qmp     *qmp.Client

	setup     chan struct{} // boot finished setting con and qmp (or gave up)
	setupOnce sync.Once
	exited    chan struct{} // QEMU reaped
	conDone   chan struct{} // console stream ended
	evDone    chan struct{} // QMP event stream ended
	logDone   chan struct{} // QEMU's output all copied to its log
	halts     chan engine.Halt
	done      chan struct{} // exit record written

	ctl sync.Mutex // one control sequence at a time (reboot, snapshot, stop)

	mu       sync.Mutex
	stopping bool   // Stop was called
	shutdown string // reason of the last SHUTDOWN event
	exit     engine.Exit
}

// pumpConsole copies guest output to the console writer until QEMU
// closes the socket.
func (m *Machine) pumpConsole() {
	defer close(m.conDone)
	io.Copy(m.console, m.con)
}

// watchEvents keeps what the exit record needs from QMP events, and
// reports a VM that QEMU stopped by itself on a disk error.
func (m *Machine) watchEvents() {
	defer close(m.evDone)
	for ev := range m.qmp.Events() {
		switch ev.Name {
		case "SHUTDOWN":
			var d struct {
				Reason string `json:"reason"`
			}
			json.Unmarshal(ev.Data, &d)
			m.mu.Lock()
			m.shutdown = d.Reason
			m.mu.Unlock()
		case "BLOCK_IO_ERROR":
			if h, ok := ioHalt(ev.Data); ok {
				select {
				case m.halts <- h:
				default: // one report of a burst is enough
				}
			}
		}
	}
}

// ioHalt reads a BLOCK_IO_ERROR event: a halt when QEMU stopped the VM
// over it (werror=enospc: the host's disk is full).
func ioHalt(data json.RawMessage) (engine.Halt, bool) {
	var d struct {
		Device    string `json:"device"`
		NodeName  string `json:"node-name"`
		Operation string `json:"operation"`
		Action    string `json:"action"`
		NoSpace   bool   `json:"nospace"`
		Reason    string `json:"reason"`
	}
	if json.Unmarshal(data, &d) != nil || d.Action != "stop" {
		return engine.Halt{}, false
	}
	disk := d.Device
	if disk == "" {
		disk = d.NodeName
	}
	return engine.Halt{Disk: disk, NoSpace: d.NoSpace, Reason: d.Reason}, true
}

// Halts implements engine.Halter: QEMU paused the guest by itself.
func (m *Machine) Halts() <-chan engine.Halt { return m.halts }

// Console implements engine.Machine: writes are typed into the guest.
func (m *Machine) Console() io.Writer { return consoleInput{m} }

type consoleInput struct{ m *Machine }

// consoleWriteTimeout bounds how long typed input waits for a guest that
// does not read its console: the writer gets an error instead of waiting
// for ever.
const consoleWriteTimeout = 5 * time.Second

func (c consoleInput) Write(p []byte) (int, error) {
	if c.m.ended() {
		return 0, engine.ErrNotRunning
	}
	c.m.con.SetWriteDeadline(time.Now().Add(consoleWriteTimeout))
	n, err := c.m.con.Write(p)
	if err != nil && c.m.ended() {
		err = engine.ErrNotRunning
	}
	return n, err
}

// ended reports whether QEMU has exited.
func (m *Machine) ended() bool {
	select {
	case <-m.exited:
		return true
	default:
		return false
	}
}

// exec runs one QMP command, mapping a finished VM to ErrNotRunning.
func (m *Machine) exec(ctx context.Context, command string, args, result any) error {
	if m.ended() {
		return engine.ErrNotRunning
	}
	err := m.qmp.Execute(ctx, command, args, result)
	if err != nil {
		if m.ended() || isClosed(err) {
			return engine.ErrNotRunning
		}
		return fmt.Errorf("qmp %s: %w", command, err)
	}
	return nil
}

// Pause implements engine.Machine (QMP stop).
func (m *Machine) Pause(ctx context.Context) error { return m.exec(ctx, "stop", nil, nil) }

// Resume implements engine.Machine (QMP cont). It also resumes a VM
// after Snapshot, which QEMU holds in its "postmigrate" state.
func (m *Machine) Resume(ctx context.Context) error { return m.exec(ctx, "cont", nil, nil) }

// PowerButton implements engine.Machine (QMP system_powerdown). QEMU
// answers at once; only a guest acting on the button ends the VM.
func (m *Machine) PowerButton(ctx context.Context) error {
	return m.exec(ctx, "system_powerdown", nil, nil)
}

// Status returns QEMU's run state ("running", "paused", "postmigrate",
// ...), as QMP query-status reports it.
func (m *Machine) Status(ctx context.Context) (string, error) {
	var st struct {
		Status string `json:"status"`
	}
	err := m.exec(ctx, "query-status", nil, &st)
	return st.Status, err
}

// PID implements engine.Machine. It stays the same across Reboot.
func (m *Machine) PID() int { return m.pid }

// MachineID implements engine.Machine; QEMU has no use for one, so the
// spec's is returned unchanged.
func (m *Machine) MachineID() []byte { return m.spec.MachineID }

// Done implements engine.Machine.
func (m *Machine) Done() <-chan struct{} { return m.done }

// Exit implements engine.Machine; it is meaningful once Done is closed.
func (m *Machine) Exit() engine.Exit {
	select {
	case <-m.done:
		return m.exit
	default:
		return engine.Exit{}
	}
}
