package layout

import (
	"path/filepath"
	"strings"
	"testing"
)

func TestValidName(t *testing.T) {
	good := []string{"a", "web", "web-1", "a.b_c", "0", strings.Repeat("a", 63)}
	bad := []string{"", "A", "-a", ".a", "_a", "a/b", "a b", "é", strings.Repeat("a", 64), "..", "web\n"}
	for _, n := range good {
		if !ValidName(n) {
			t.Errorf("%q refused", n)
		}
	}
	for _, n := range bad {
		if ValidName(n) {
			t.Errorf("%q accepted", n)
		}
	}
}

// The longest instance name under a long run root still yields socket
// paths that fit sun_path.
func TestSocketPathsFit(t *testing.T) {
	for _, run := range []string{"/run/hypefs", "/tmp/" + strings.Repeat("x", 60)} {
		l := Layout{Run: run}
		for _, name := range []string{"a", strings.Repeat("n", 63)} {
			for _, s := range []string{APISock, ConsoleSock, VsockSock, "e/s.qmp", "e/s.con"} {
				p := l.RunFile(name, s)
				if len(p) >= SunPathMax() {
					t.Errorf("run %q name %q: %s is %d bytes", run, name, p, len(p))
				}
			}
		}
	}
	if l := (Layout{Run: "/" + strings.Repeat("r", 100)}); l.SocketsFit() {
		t.Error("a 100-byte run root claims to fit")
	}
	short := Layout{Run: "/run/hypefs"}
	if got := short.RunDir("web"); got != "/run/hypefs/i/web" {
		t.Errorf("RunDir = %q", got)
	}
}

// No instance name reaches the run root's own names: a name like the
// daemon's 9P socket, or like either namespace, stays inside RUN/i/ (or
// RUN/h/), and two names never share a run directory.
func TestRunDirNamespaces(t *testing.T) {
	for _, run := range []string{"/run/hypefs", "/tmp/" + strings.Repeat("x", 40)} {
		l := Layout{Run: run}
		seen := map[string]string{}
		names := []string{"9p.sock", "h", "i", "lock", "e", "api.sock", strings.Repeat("h", 63), strings.Repeat("i", 63), "a", "b"}
		for _, n := range names {
			d := l.RunDir(n)
			rel, err := filepath.Rel(run, d)
			if err != nil {
				t.Fatal(err)
			}
			parts := strings.Split(rel, "/")
			if len(parts) != 2 || (parts[0] != RunByName && parts[0] != RunByHash) {
				t.Errorf("run %s: RunDir(%q) = %s, not one level inside i/ or h/", run, n, d)
			}
			if other, ok := seen[d]; ok {
				t.Errorf("run %s: %q and %q share %s", run, n, other, d)
			}
			seen[d] = n
		}
	}
}
