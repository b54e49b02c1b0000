//go:build linux

package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// modulesDir holds the guest's modules and "order", their load order
// (dependencies first), written by backend/guest.
const modulesDir = "/lib/modules"

// loadModules loads every module listed in dir/order, in that order, and
// returns the failures; one module failing does not stop the others.
func loadModules(dir string) []error {
	b, err := os.ReadFile(filepath.Join(dir, "order"))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return []error{fmt.Errorf("module list: %w", err)}
	}
	var errs []error
	for _, name := range strings.Fields(string(b)) {
		if err := loadModule(filepath.Join(dir, name+".ko")); err != nil {
			errs = append(errs, fmt.Errorf("module %s: %w", name, err))
		}
	}
	return errs
}

// loadModule inserts one module, treating "already loaded" (EEXIST) as
// success. finit_module lets the kernel read the file itself; kernels
// without it get init_module with the bytes.
func loadModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	err = unix.FinitModule(int(f.Fd()), "", 0)
	if err == unix.ENOSYS {
		var b []byte
		if b, err = os.ReadFile(path); err == nil {
			err = unix.InitModule(b, "")
		}
	}
	if err == unix.EEXIST {
		return nil
	}
	return err
}
