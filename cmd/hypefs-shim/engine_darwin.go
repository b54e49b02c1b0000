package main

import (
	"hypefs/shim/engine"
	"hypefs/shim/vz"
)

// newEngine returns the macOS engine: the VM runs inside this process on
// Virtualization.framework.
func newEngine() engine.Engine { return vz.New() }
