package qmp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

func dialFake(t *testing.T, handle func(p *peer, r request)) (*Client, *peer) {
	t.Helper()
	conn, p := newPair(t)
	p.serve(func(r request) { handle(p, r) })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := New(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, p
}

func TestHandshakeAndResult(t *testing.T) {
	c, _ := dialFake(t, func(p *peer, r request) {
		switch r.Execute {
		case "query-status":
			p.reply(r, `{"status": "running", "running": true}`)
		case "echo":
			p.reply(r, string(r.Arguments))
		}
	})
	if v := c.Version(); v.Major != 7 || v.Minor != 2 || v.Micro != 19 {
		t.Errorf("version = %+v", v)
	}
	var st struct {
		Status  string `json:"status"`
		Running bool   `json:"running"`
	}
	if err := c.Execute(context.Background(), "query-status", nil, &st); err != nil {
		t.Fatal(err)
	}
	if st.Status != "running" || !st.Running {
		t.Errorf("status = %+v", st)
	}
	var back map[string]string
	if err := c.Execute(context.Background(), "echo", map[string]string{"uri": "exec:cat"}, &back); err != nil {
		t.Fatal(err)
	}
	if back["uri"] != "exec:cat" {
		t.Errorf("arguments reached the peer as %v", back)
	}
}

func TestErrorReply(t *testing.T) {
	c, _ := dialFake(t, func(p *peer, r request) {
		p.send(fmt.Sprintf(`{"error": {"class": "CommandNotFound", "desc": "The command %s has not been found"}, "id": %s}`, r.Execute, r.ID))
	})
	err := c.Execute(context.Background(), "nope", nil, nil)
	var qe *Error
	if !errors.As(err, &qe) {
		t.Fatalf("err = %v (%T), want *Error", err, err)
	}
	if qe.Class != "CommandNotFound" || qe.Desc != "The command nope has not been found" {
		t.Errorf("error = %+v", qe)
	}
}

// Replies come back in the reverse order of the requests: each caller must
// still get its own.
func TestConcurrentOutOfOrder(t *testing.T) {
	const n = 20
	var mu sync.Mutex
	var held []request
	c, _ := dialFake(t, func(p *peer, r request) {
		mu.Lock()
		held = append(held, r)
		if len(held) == n {
			for i := n - 1; i >= 0; i-- {
				p.reply(held[i], string(held[i].Arguments))
			}
		}
		mu.Unlock()
	})
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var got struct{ N int }
			if err := c.Execute(context.Background(), "echo", struct{ N int }{i}, &got); err != nil {
				t.Error(err)
				return
			}
			if got.N != i {
				t.Errorf("caller %d got reply %d", i, got.N)
			}
		}()
	}
	wg.Wait()
}

func TestEventsInOrder(t *testing.T) {
	c, _ := dialFake(t, func(p *peer, r request) {
		p.send(`{"timestamp": {"seconds": 1700000000, "microseconds": 5}, "event": "STOP"}`)
		p.reply(r, `{}`)
		p.send(`{"timestamp": {"seconds": 1700000001, "microseconds": 0}, "event": "RESUME"}`)
		p.send(`{"timestamp": {"seconds": 1700000002, "microseconds": 0}, "event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-shutdown"}}`)
	})
	if err := c.Execute(context.Background(), "stop", nil, nil); err != nil {
		t.Fatal(err)
	}
	want := []string{"STOP", "RESUME", "SHUTDOWN"}
	for i, name := range want {
		select {
		case ev := <-c.Events():
			if ev.Name != name {
				t.Fatalf("event %d = %s, want %s", i, ev.Name, name)
			}
			if i == 0 && !ev.Time.Equal(time.Unix(1700000000, 5000)) {
				t.Errorf("STOP time = %v", ev.Time)
			}
			if name == "SHUTDOWN" {
				var d struct{ Reason string }
				json.Unmarshal(ev.Data, &d)
				if d.Reason != "guest-shutdown" {
					t.Errorf("SHUTDOWN data = %s", ev.Data)
				}
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no event %s", name)
		}
	}
}

// An event sent before the capabilities reply is kept, not lost.
func TestEventDuringHandshake(t *testing.T) {
	conn, p := newPair(t)
	go func() {
		p.send(greeting)
		buf := make([]byte, 512)
		p.conn.Read(buf)
		p.send(`{"event": "RESET", "timestamp": {"seconds": 1, "microseconds": 0}}`)
		p.send(`{"return": {}}`)
	}()
	c, err := New(context.Background(), conn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case ev := <-c.Events():
		if ev.Name != "RESET" {
			t.Errorf("event = %s", ev.Name)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("event lost")
	}
}

// Losing the connection fails every waiter and every later command, and
// closes Done and Events.
func TestConnectionLoss(t *testing.T) {
	started := make(chan struct{}, 3)
	c, p := dialFake(t, func(p *peer, r request) { started <- struct{}{} })
	errs := make(chan error, 3)
	for range 3 {
		go func() { errs <- c.Execute(context.Background(), "query-status", nil, nil) }()
	}
	for range 3 {
		<-started
	}
	p.conn.Close()
	for range 3 {
		select {
		case err := <-errs:
			if !errors.Is(err, ErrClosed) {
				t.Errorf("waiter got %v, want ErrClosed", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("waiter not released")
		}
	}
	<-c.Done()
	if err := c.Execute(context.Background(), "cont", nil, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("after loss: %v", err)
	}
	if _, ok := <-c.Events(); ok {
		t.Error("events channel still open")
	}
}

// A cancelled wait returns the context's error; the late reply is dropped
// and the client keeps working.
func TestExecuteCancel(t *testing.T) {
	first := true
	c, _ := dialFake(t, func(p *peer, r request) {
		if first {
			first = false
			go func() { time.Sleep(100 * time.Millisecond); p.reply(r, `{"late": true}`) }()
			return
		}
		p.reply(r, `{"late": false}`)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := c.Execute(ctx, "slow", nil, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
	time.Sleep(150 * time.Millisecond)
	var got struct{ Late bool }
	if err := c.Execute(context.Background(), "fast", nil, &got); err != nil || got.Late {
		t.Fatalf("after cancel: %v %+v", err, got)
	}
}

func TestHandshakeTimeout(t *testing.T) {
	conn, _ := newPair(t) // the peer never greets
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := New(ctx, conn)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("took %v", d)
	}
}

func TestNotAGreeting(t *testing.T) {
	conn, p := newPair(t)
	go p.send(`{"hello": 1}`)
	if _, err := New(context.Background(), conn); err == nil {
		t.Fatal("accepted a non-QMP greeting")
	}
}

func TestCapabilitiesRefused(t *testing.T) {
	conn, p := newPair(t)
	go func() {
		p.send(greeting)
		buf := make([]byte, 512)
		p.conn.Read(buf)
		p.send(`{"error": {"class": "GenericError", "desc": "no"}}`)
	}()
	_, err := New(context.Background(), conn)
	var qe *Error
	if !errors.As(err, &qe) || qe.Desc != "no" {
		t.Fatalf("err = %v", err)
	}
}
