package fusefs

import (
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"
)

// The platform's unmount commands are tried in order until one works; when
// none does, the error names each failure and the platform's tools.
func TestClearDead(t *testing.T) {
	var ran []string
	run := func(fail int) func(string, ...string) ([]byte, error) {
		return func(name string, args ...string) ([]byte, error) {
			ran = append(ran, name+" "+strings.Join(args, " "))
			if len(ran) <= fail {
				return []byte("Device or resource busy\n"), errors.New("exit status 1")
			}
			return nil, nil
		}
	}
	cmds := staleUnmounts("/m")
	if err := clearDead("/m", cmds, run(len(cmds)-1)); err != nil || len(ran) != len(cmds) {
		t.Fatalf("last command works: %v after %q", err, ran)
	}
	ran = nil
	err := clearDead("/m", cmds, run(len(cmds)))
	if err == nil || !strings.Contains(err.Error(), "Device or resource busy") || !strings.HasSuffix(err.Error(), "(hint: "+clearHint("/m")+")") {
		t.Fatalf("all fail: %v", err)
	}
	for _, c := range cmds {
		if !strings.Contains(err.Error(), strings.Join(c, " ")+": exit status 1") {
			t.Errorf("error lacks %q: %v", c, err)
		}
	}
}

// A stat that says the daemon is gone is a dead mount; a missing or
// forbidden mountpoint is not, and ClearStale leaves it alone.
func TestDeadMount(t *testing.T) {
	dead := &os.PathError{Op: "stat", Path: "/m", Err: syscall.ENOTCONN}
	if !deadMount(dead) {
		t.Errorf("%v: not a dead mount", dead)
	}
	for _, e := range []error{os.ErrNotExist, &os.PathError{Op: "stat", Path: "/m", Err: syscall.EACCES}} {
		if deadMount(e) {
			t.Errorf("%v taken for a dead mount", e)
		}
	}
	if err := ClearStale(t.TempDir() + "/absent"); err != nil {
		t.Fatalf("absent mountpoint: %v", err)
	}
}
