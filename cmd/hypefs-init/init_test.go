//go:build linux

package main

import (
	"encoding/binary"
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
