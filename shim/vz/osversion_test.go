package vz

import (
	"errors"
	"testing"

	"hypefs/shim/engine"
)

func TestNeedMacOS(t *testing.T) {
	for _, ok := range []string{"14.0", "14.2.1", "15", "26.1\n"} {
		if err := needMacOS(ok, 14, "x"); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	err := needMacOS("13.6.1", 14, "saving and restoring vms")
	if !errors.Is(err, engine.ErrUnsupported) || err.Error() != "saving and restoring vms needs macOS 14 or later (this is 13.6.1): not supported by this engine" {
		t.Errorf("13.6.1: %v", err)
	}
	if err := needMacOS("", 14, "x"); err == nil || errors.Is(err, engine.ErrUnsupported) {
		t.Errorf("empty version: %v", err)
	}
}
