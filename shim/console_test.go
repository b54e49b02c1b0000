package shim

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// The ready marker and the exit line are found even when split across
// writes, and everything is appended to the log.
func TestConsoleMarkers(t *testing.T) {
	var ready, exits int
	code := -1
	log := filepath.Join(t.TempDir(), "console.log")
	c, err := newConsole(log, 0, func() { ready++ }, func(n int) { exits++; code = n })
	if err != nil {
		t.Fatal(err)
	}
	chunks := []string{"boot...\r\nhypefs: gue", "st ready\r\n$ prog\r\nout\r\nhypefs: exit sta", "tus 42\r\n", "hypefs: guest ready\n"}
	for _, s := range chunks {
		c.Write([]byte(s))
	}
	if ready != 1 {
		t.Errorf("ready fired %d times, want 1 (it is armed once until rearm)", ready)
	}
	if exits != 1 || code != 42 {
		t.Errorf("exit line: %d times, code %d", exits, code)
	}
	b, _ := os.ReadFile(log)
	if string(b) != strings.Join(chunks, "") {
		t.Errorf("log = %q", b)
	}
	c.rearm()
	c.Write([]byte("hypefs: guest ready\n"))
	if ready != 2 {
		t.Errorf("ready after rearm fired %d times", ready)
	}
	c.Write([]byte("hypefs: exit status nope\n" + strings.Repeat("x", 10000) + "\n"))
	if exits != 1 {
		t.Errorf("a malformed exit line counted")
	}
}

// Terminal queries (busybox's ESC[6n after every prompt) are dropped from
// what the console records, even when split across writes; every other
// byte passes.
func TestConsoleDropsTerminalQueries(t *testing.T) {
	log := filepath.Join(t.TempDir(), "console.log")
	c, err := newConsole(log, 0, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	chunks := []string{
		"hypefs:~# \x1b[6n", "ls\r\n\x1b[1;34mbin\x1b[0m\r\n", "hypefs:~# \x1b", "[6", "n", "x\x1b[?6n\x1b[c\x1b[>0c\x1b[5n",
		"\x1bM\x1b[2J\x1b[H", "end\x1b",
	}
	for _, s := range chunks {
		if n, err := c.Write([]byte(s)); n != len(s) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", s, n, err)
		}
	}
	c.Write([]byte("[31m!"))
	b, _ := os.ReadFile(log)
	want := "hypefs:~# ls\r\n\x1b[1;34mbin\x1b[0m\r\nhypefs:~# x\x1bM\x1b[2J\x1b[Hend\x1b[31m!"
	if string(b) != want {
		t.Fatalf("log = %q\nwant  %q", b, want)
	}
}

// A client that types a line and closes at once has its line typed even
// while the guest is printing (the output side's failed write must not
// close the connection before the input side has read the line).
func TestConsoleInputOfAClosingClient(t *testing.T) {
	dir := t.TempDir()
	c, err := newConsole(filepath.Join(dir, "console.log"), 0, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("unix", filepath.Join(dir, "con.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var mu sync.Mutex
	var typed bytes.Buffer
	go c.serve(l, func() io.Writer {
		return writerFunc(func(p []byte) (int, error) {
			mu.Lock()
			defer mu.Unlock()
			return typed.Write(p)
		})
	})
	stop := make(chan struct{})
	go func() { // the guest prints all the time
		for {
			select {
			case <-stop:
				return
			default:
				c.Write([]byte("booting, booting, booting\r\n"))
			}
		}
	}()
	defer close(stop)
	const tries = 50
	for k := 0; k < tries; k++ {
		conn, err := net.Dial("unix", filepath.Join(dir, "con.sock"))
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond) // the shim has it among its clients
		fmt.Fprintf(conn, "line %d\n", k)
		conn.Close()
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		got := typed.String()
		mu.Unlock()
		if strings.Count(got, "\n") == tries {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("typed %d of %d lines:\n%s", strings.Count(got, "\n"), tries, got)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
