package shim

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"hypefs/shim/api"
	"hypefs/shim/client"
	"hypefs/shim/engine"
)

// An engine's refusal reaches a client as the status Cloud Hypervisor
// uses, and the client hands the daemon the matching sentinel: a wrong
// state is 405 and engine.ErrWrongState (EBUSY in the tree), never a 500.
func TestAnswerStatus(t *testing.T) {
	dir, err := os.MkdirTemp("", "sh")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "api.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var s Shim
	var answer error
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.answer(w, answer)
	})}
	go srv.Serve(l)
	defer srv.Close()
	c := client.New(sock)
	defer c.Close()
	for _, tc := range []struct {
		err  error
		want error // what the client's error wraps; nil: neither sentinel
	}{
		{fmt.Errorf("pause vm in state starting: %w", engine.ErrWrongState), engine.ErrWrongState},
		{fmt.Errorf("snapshot: %w", engine.ErrUnsupported), client.ErrUnsupported},
		{engine.ErrNotRunning, client.ErrNoVM},
		{fmt.Errorf("%w: destination_url must be file:///directory", errBadRequest), nil},
		{errors.New("qmp: broken pipe"), nil},
	} {
		answer = tc.err
		_, err := c.Act(context.Background(), api.PathPause, nil)
		if err == nil {
			t.Fatalf("%v: no error", tc.err)
		}
		for _, sentinel := range []error{engine.ErrWrongState, client.ErrNoVM, client.ErrUnsupported} {
			if got := errors.Is(err, sentinel); got != (sentinel == tc.want) {
				t.Errorf("%v: client error %q wraps %v: %v", tc.err, err, sentinel, got)
			}
		}
	}
}

// A follower more than a queue behind is cut off (its stream ends) rather
// than shown a gap; following again starts from the state now.
func TestSlowSubscriberIsCutOff(t *testing.T) {
	s := &Shim{state: api.Booting, subs: map[chan api.Event]struct{}{}}
	ch, first := s.subscribe()
	if first.State != api.Booting {
		t.Fatalf("first event %+v", first)
	}
	for k := 0; k < 100; k++ {
		s.setState(api.Running, "")
	}
	n := 0
	for range ch {
		n++
	}
	if n != cap(ch) {
		t.Fatalf("got %d events before the cut, want %d", n, cap(ch))
	}
	_, again := s.subscribe()
	if again.State != api.Running || again.Seq != 100 {
		t.Fatalf("following again starts at %+v", again)
	}
}
