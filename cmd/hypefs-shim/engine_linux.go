package main

import (
	"hypefs/shim/engine"
	"hypefs/shim/qemu"
)

func newEngine() engine.Engine { return qemu.New() }
