package host

import (
	"errors"
	"testing"
)

func TestKVMVerdict(t *testing.T) {
	ok := func() error { return nil }
	fail := func() error { return errors.New("EINVAL") }
	cases := []struct {
		name string
		k    kvmFacts
		want string
	}{
		{"no device", kvmFacts{arch: "amd64", virtExt: true, create: ok}, "tcg"},
		{"pvm", kvmFacts{devKVM: true, pvm: true, virtExt: true, arch: "amd64", create: ok}, "tcg"},
		{"no vmx", kvmFacts{devKVM: true, arch: "amd64", create: ok}, "tcg"},
		{"create fails", kvmFacts{devKVM: true, virtExt: true, arch: "amd64", create: fail}, "tcg"},
		{"works", kvmFacts{devKVM: true, virtExt: true, arch: "amd64", create: ok}, "kvm"},
		{"arm64 needs no flag", kvmFacts{devKVM: true, arch: "arm64", create: ok}, "kvm"},
	}
	for _, c := range cases {
		got, reason := kvmVerdict(c.k)
		if got != c.want || reason == "" {
			t.Errorf("%s: got %q (%q), want %q", c.name, got, reason, c.want)
		}
	}
}

func TestTSCAndFlags(t *testing.T) {
	ci := []byte("processor\t: 0\ncpu MHz\t\t: 2999.998\nflags\t\t: fpu vme sse2 svm\n")
	if got := tscKHz(ci); got != 2999998 {
		t.Errorf("tscKHz = %d", got)
	}
	if !hasVirtExtensions(ci) {
		t.Error("svm not found")
	}
	if hasVirtExtensions([]byte("flags\t: fpu vme\n")) {
		t.Error("found virt extensions where there are none")
	}
}

func TestResolveAccel(t *testing.T) {
	f := Probe()
	if got, err := ResolveAccel("auto"); err != nil || got != f.Accel {
		t.Fatalf("auto = %q, %v; want %q", got, err, f.Accel)
	}
	if _, err := ResolveAccel("bogus"); err == nil {
		t.Fatal("bogus accel accepted")
	}
	if f.Accel == "tcg" {
		if _, err := ResolveAccel("kvm"); err == nil {
			t.Fatal("kvm accepted on a host where it does not work")
		}
	}
}
