//go:build linux

package main

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
)

func TestParseCmdline(t *testing.T) {
	def := config{run: "shell", modules: true, hostname: "hypefs"}
	for _, tt := range []struct {
		in   string
		want config
	}{
		{"console=ttyS0 panic=-1 quiet", def},
		{"hypefs.run=poweroff hypefs.poweroff=restart hypefs.debug=1", config{run: "poweroff", restart: true, modules: true, hostname: "hypefs", debug: true}},
		{"hypefs.modules=0 hypefs.hostname=vm1 hypefs.run=", config{run: "shell", hostname: "vm1"}},
		{"hypefs.poweroff=off hypefs.debug=0 hypefs.hostname=", def},
	} {
		if got := parseCmdline(tt.in); got != tt.want {
			t.Errorf("parseCmdline(%q) = %+v; want %+v", tt.in, got, tt.want)
		}
	}
}

func TestIsPowerPress(t *testing.T) {
	ev := func(typ, code uint16, value int32) []byte {
		b := make([]byte, inputEventSize)
		binary.NativeEndian.PutUint16(b[16:], typ)
		binary.NativeEndian.PutUint16(b[18:], code)
		binary.NativeEndian.PutUint32(b[20:], uint32(value))
		return b
	}
	for _, tt := range []struct {
		ev   []byte
		want bool
	}{
		{ev(evKey, keyPower, 1), true},
		{ev(evKey, keyPower, 0), false}, // release
		{ev(evKey, 30, 1), false},       // KEY_A
		{ev(0, 0, 0), false},            // EV_SYN
	} {
		if got := isPowerPress(tt.ev); got != tt.want {
			t.Errorf("isPowerPress(%x) = %v; want %v", tt.ev[16:], got, tt.want)
		}
	}
}

func TestUnescapeMount(t *testing.T) {
	for in, want := range map[string]string{
		"/mnt/a\\040b": "/mnt/a b",
		"/plain":       "/plain",
		"/tail\\04":    "/tail\\04",
		"/x\\134y":     "/x\\y",
	} {
		if got := unescapeMount(in); got != want {
			t.Errorf("unescapeMount(%q) = %q; want %q", in, got, want)
		}
	}
}

func TestExitCode(t *testing.T) {
	for how, want := range map[string]int{
		"status 0": 0, "status 7": 7, "killed by killed (signal 9)": 137,
		"killed by terminated (signal 15)": 143, "odd": 255,
	} {
		if got := exitCode(how); got != want {
			t.Errorf("exitCode(%q) = %d; want %d", how, got, want)
		}
	}
}

func TestLookupUser(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	os.WriteFile(filepath.Join(root, "etc/passwd"), []byte("root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n"), 0o644)
	os.WriteFile(filepath.Join(root, "etc/group"), []byte("root:x:0:\napp:x:1000:\nextra:x:2000:app\n"), 0o644)
	for spec, want := range map[string][3]int{
		"": {0, 0, 0}, "app": {1000, 1000, 1}, "1000": {1000, 1000, 1}, "app:extra": {1000, 2000, 1},
		"5:6": {5, 6, 0}, "1000:0": {1000, 0, 1},
	} {
		c, _, err := lookupUser(root, spec)
		if err != nil || int(c.Uid) != want[0] || int(c.Gid) != want[1] || len(c.Groups) != want[2] {
			t.Errorf("lookupUser(%q) = %+v, %v; want %v", spec, c, err, want)
		}
	}
	if _, _, err := lookupUser(root, "nobody"); err == nil {
		t.Error("unknown user accepted")
	}
	// An image without /etc/passwd (FROM scratch) runs as root, uid 0.
	scratch := t.TempDir()
	for _, spec := range []string{"", "root", "0"} {
		c, home, err := lookupUser(scratch, spec)
		if err != nil || c.Uid != 0 || c.Gid != 0 || home != "/root" {
			t.Errorf("lookupUser(scratch, %q) = %+v, %q, %v", spec, c, home, err)
		}
	}
}
