package shim

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
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
