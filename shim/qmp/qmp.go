// Package qmp is a small client for the QEMU Machine Protocol.
//
// QMP is JSON over a stream socket: QEMU greets, the client enables
// commands with qmp_capabilities, then commands and their replies share the
// stream with asynchronous events. This client lets many goroutines run
// commands at once (replies are matched by id) and delivers events in
// order on a channel that never blocks the reader.
package qmp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// ErrClosed is returned to callers once the connection has ended.
var ErrClosed = errors.New("qmp connection closed")

// Error is a QMP error reply: QEMU refused or failed a command.
type Error struct {
	Class string `json:"class"` // "GenericError", "CommandNotFound", ...
	Desc  string `json:"desc"`
}

func (e *Error) Error() string { return e.Class + ": " + e.Desc }

// Event is an asynchronous QMP event such as SHUTDOWN, STOP or RESUME.
type Event struct {
	Name string
	Data json.RawMessage // the event's "data" member; nil when absent
	Time time.Time       // QEMU's timestamp
}

// Version is what QEMU announces in its greeting.
type Version struct {
	Major, Minor, Micro int
	Package             string
}

// Client is one QMP connection. Its methods may be called from several
// goroutines.
type Client struct {
	conn    net.Conn
	version Version

	wmu sync.Mutex // serialises writes of whole commands

	mu      sync.Mutex
	nextID  uint64
	pending map[uint64]chan reply
	err     error // set once, when the reader stops
	queue   []Event
	kick    chan struct{} // wakes the event pump

	events  chan Event
	done    chan struct{}
	closing chan struct{} // closed by Close: nobody wants more events
	once    sync.Once
}

// reply is one command's outcome as the reader saw it.
type reply struct {
	ret json.RawMessage
	err error
}

// message is any line QEMU sends after the greeting.
type message struct {
	ID        *uint64         `json:"id"`
	Return    json.RawMessage `json:"return"`
	Error     *Error          `json:"error"`
	Event     string          `json:"event"`
	Data      json.RawMessage `json:"data"`
	Timestamp *struct {
		Seconds      int64 `json:"seconds"`
		Microseconds int64 `json:"microseconds"`
	} `json:"timestamp"`
}

// New runs the handshake on an established connection (reads the
// greeting, sends qmp_capabilities) and returns a ready client. ctx bounds
// the handshake only. On error the caller still owns conn.
func New(ctx context.Context, conn net.Conn) (*Client, error) {
	// A deadline in the past unblocks the handshake's reads and writes
	// when ctx ends.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	c, dec, err := handshake(ctx, conn)
	if !stop() && err == nil {
		err = fmt.Errorf("qmp handshake: %w", ctx.Err())
	}
	if err != nil {
		return nil, err
	}
	go c.read(dec)
	go c.pump()
	return c, nil
}

func handshake(ctx context.Context, conn net.Conn) (*Client, *json.Decoder, error) {
	dec := json.NewDecoder(conn)
	var greeting struct {
		QMP *struct {
			Version struct {
				QEMU struct {
					Major int `json:"major"`
					Minor int `json:"minor"`
					Micro int `json:"micro"`
				} `json:"qemu"`
				Package string `json:"package"`
			} `json:"version"`
		} `json:"QMP"`
	}
	if err := dec.Decode(&greeting); err != nil {
		return nil, nil, fmt.Errorf("qmp greeting: %w", ctxErr(ctx, err))
	}
	if greeting.QMP == nil {
		return nil, nil, errors.New("qmp greeting: not a QMP greeting")
	}
	v := greeting.QMP.Version
	c := &Client{
		conn:    conn,
		version: Version{v.QEMU.Major, v.QEMU.Minor, v.QEMU.Micro, v.Package},
		pending: make(map[uint64]chan reply),
		kick:    make(chan struct{}, 1),
		events:  make(chan Event),
		done:    make(chan struct{}),
		closing: make(chan struct{}),
	}

	// The capabilities reply is read here, before the reader starts, so
	// the handshake stays bounded by ctx and needs no id bookkeeping.
	if _, err := io.WriteString(conn, `{"execute":"qmp_capabilities"}`+"\n"); err != nil {
		return nil, nil, fmt.Errorf("qmp capabilities: %w", ctxErr(ctx, err))
	}
	for {
		var m message
		if err := dec.Decode(&m); err != nil {
			return nil, nil, fmt.Errorf("qmp capabilities: %w", ctxErr(ctx, err))
		}
		if m.Event != "" {
			c.queue = append(c.queue, toEvent(&m))
			continue
		}
		if m.Error != nil {
			return nil, nil, fmt.Errorf("qmp capabilities: %w", m.Error)
		}
		break
	}
	return c, dec, nil
}

// ctxErr prefers the context's error over the deadline error it caused.
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// Version returns the QEMU version from the greeting.
func (c *Client) Version() Version { return c.version }

// Events delivers events in arrival order. It is closed after the
// connection ends and every queued event was delivered (or Close was
// called). Events are queued without bound, so a slow reader never stalls
// command replies; a client that does not care may simply not read.
func (c *Client) Events() <-chan Event { return c.events }

// Done is closed when the connection has ended; Err then says why.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err returns why the connection ended, or nil while it is up.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close ends the connection; waiting commands fail with ErrClosed.
func (c *Client) Close() error {
	c.once.Do(func() { close(c.closing) })
	err := c.conn.Close()
	<-c.done
	return err
}

// Execute runs one command. args, when not nil, is marshalled as the
// command's "arguments"; result, when not nil, receives the "return"
// member. A QMP error reply is returned as *Error (use errors.As).
// Cancelling ctx abandons the wait; the command may still run in QEMU.
func (c *Client) Execute(ctx context.Context, command string, args, result any) error {
	return c.ExecuteFile(ctx, command, args, result, nil)
}

// ExecuteFile is Execute sending f along with the command (SCM_RIGHTS),
// as "getfd" and "add-fd" expect; f nil sends none. It needs a Unix
// socket connection.
func (c *Client) ExecuteFile(ctx context.Context, command string, args, result any, f *os.File) error {
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return err
	}
	c.nextID++
	id := c.nextID
	ch := make(chan reply, 1)
	c.pending[id] = ch
	c.mu.Unlock()

	if err := c.send(ctx, id, command, args, f); err != nil {
		c.forget(id)
		return err
	}
	select {
	case r := <-ch:
		if r.err != nil {
			return r.err
		}
		if result != nil && len(r.ret) > 0 {
			if err := json.Unmarshal(r.ret, result); err != nil {
				return fmt.Errorf("qmp %s reply: %w", command, err)
			}
		}
		return nil
	case <-ctx.Done():
		c.forget(id)
		return fmt.Errorf("qmp %s: %w", command, ctx.Err())
	}
}

func (c *Client) forget(id uint64) {
	c.mu.Lock()
	delete(c.pending, id)
	c.mu.Unlock()
}

// send writes one command line. Writes are whole lines under a mutex so
// concurrent commands never interleave on the stream.
func (c *Client) send(ctx context.Context, id uint64, command string, args any, f *os.File) error {
	req := struct {
		Execute   string `json:"execute"`
		Arguments any    `json:"arguments,omitempty"`
		ID        uint64 `json:"id"`
	}{command, args, id}
	b, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("qmp %s arguments: %w", command, err)
	}
	b = append(b, '\n')

	c.wmu.Lock()
	defer c.wmu.Unlock()
	dl, _ := ctx.Deadline()
	c.conn.SetWriteDeadline(dl)
	if f != nil {
		uc, ok := c.conn.(*net.UnixConn)
		if !ok {
			return fmt.Errorf("qmp %s: a file can be sent only over a Unix socket", command)
		}
		_, _, err := uc.WriteMsgUnix(b, syscall.UnixRights(int(f.Fd())), nil)
		if err != nil {
			return fmt.Errorf("qmp %s: %w", command, err)
		}
		return nil
	}
	if _, err := c.conn.Write(b); err != nil {
		if e := c.Err(); e != nil {
			return e
		}
		return fmt.Errorf("qmp %s: %w", command, err)
	}
	return nil
}

// read is the only reader of the connection: it routes replies to their
// waiters and queues events, and fails every waiter when the stream ends.
func (c *Client) read(dec *json.Decoder) {
	var err error
	for {
		var m message
		if err = dec.Decode(&m); err != nil {
			break
		}
		switch {
		case m.Event != "":
			c.mu.Lock()
			c.queue = append(c.queue, toEvent(&m))
			c.mu.Unlock()
			select {
			case c.kick <- struct{}{}:
			default:
			}
		case m.ID != nil:
			r := reply{ret: m.Return}
			if m.Error != nil {
				r.err = m.Error
			}
			c.mu.Lock()
			ch := c.pending[*m.ID]
			delete(c.pending, *m.ID)
			c.mu.Unlock()
			if ch != nil {
				ch <- r
			}
		}
		// Replies without an id are not ours (we always send one): ignore.
	}

	if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
		err = ErrClosed
	} else {
		err = fmt.Errorf("%w: %w", ErrClosed, err)
	}
	c.conn.Close()
	c.mu.Lock()
	c.err = err
	for id, ch := range c.pending {
		ch <- reply{err: err}
		delete(c.pending, id)
	}
	c.mu.Unlock()
	close(c.done)
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// pump hands queued events to the Events channel one at a time.
func (c *Client) pump() {
	defer close(c.events)
	for {
		c.mu.Lock()
		q := c.queue
		c.queue = nil
		ended := c.err != nil
		c.mu.Unlock()
		for _, ev := range q {
			select {
			case c.events <- ev:
			case <-c.closing:
				return
			}
		}
		if len(q) > 0 {
			continue
		}
		if ended {
			return
		}
		<-c.kick
	}
}

func toEvent(m *message) Event {
	ev := Event{Name: m.Event, Data: m.Data}
	if m.Timestamp != nil {
		ev.Time = time.Unix(m.Timestamp.Seconds, m.Timestamp.Microseconds*1000)
	}
	return ev
}
