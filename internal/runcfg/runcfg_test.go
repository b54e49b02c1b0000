package runcfg

import (
	"reflect"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	c := Config{Args: []string{"/bin/sh", "-c", "echo hi"}, Env: []string{"A=1"}, Workdir: "/w", User: "app:extra", Image: "x", Digest: "sha256:00"}
	b, err := Encode(c)
	if err != nil || len(b)%512 != 0 || !IsConfig(b) {
		t.Fatalf("Encode: %d bytes, %v", len(b), err)
	}
	got, err := Decode(b)
	if err != nil || !reflect.DeepEqual(got, c) {
		t.Fatalf("Decode = %+v, %v", got, err)
	}
	if _, err := Decode(make([]byte, 512)); err == nil {
		t.Error("a zeroed disk decoded")
	}
	b, _ = Encode(Config{})
	if _, err := Decode(b); err == nil {
		t.Error("a config without a program decoded")
	}
}
