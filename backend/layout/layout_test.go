package layout

import (
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
	if got := short.RunDir("web"); got != "/run/hypefs/web" {
		t.Errorf("RunDir = %q", got)
	}
}
