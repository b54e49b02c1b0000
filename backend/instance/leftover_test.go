package instance

import (
	"strings"
	"testing"
)

// A leftover hypervisor is recognized by its exact run directory, never
// by a prefix of another instance's.
func TestNamesRunDir(t *testing.T) {
	nul := func(s ...string) []byte { return []byte(strings.Join(s, "\x00") + "\x00") }
	dir := "/run/hypefs/i/web"
	cases := []struct {
		name         string
		cmdline, env []byte
		want         bool
	}{
		{"env exact", nul("qemu-system-x86_64"), nul("PATH=/bin", "HYPEFS_RUN_DIR=/run/hypefs/i/web/e"), true},
		{"env of web2", nul("qemu-system-x86_64"), nul("HYPEFS_RUN_DIR=/run/hypefs/i/web2/e"), false},
		{"env of the directory itself", nil, nul("HYPEFS_RUN_DIR=/run/hypefs/i/web"), true},
		{"option value under it", nul("qemu", "-chardev", "socket,id=c0,path=/run/hypefs/i/web/e/s.con,server=off"), nil, true},
		{"option value of web2", nul("qemu", "-chardev", "socket,id=c0,path=/run/hypefs/i/web2/e/s.con,server=off"), nil, false},
		{"argument under it", nul("hypefs-shim", "--config", "/run/hypefs/i/web/shim-config.json"), nil, true},
		{"argument of web2", nul("hypefs-shim", "--config", "/run/hypefs/i/web2/shim-config.json"), nil, false},
		{"unrelated", nul("sleep", "100"), nul("HOME=/root"), false},
		{"substring elsewhere", nul("echo", "x/run/hypefs/i/web/y"), nil, false},
	}
	for _, c := range cases {
		if got := namesRunDir(c.cmdline, c.env, dir); got != c.want {
			t.Errorf("%s: namesRunDir = %v, want %v", c.name, got, c.want)
		}
	}
}
