package main

// prepareProcess has nothing to do on macOS: the VM runs in this process.
func prepareProcess() {}
