// Package runcfg is what the host tells the guest init about the program
// to run from an image: argv, environment, working directory and user.
// It travels on a small read-only disk of its own (the kernel command
// line is limited to 2 KB): the magic line, then JSON, then zero padding
// to a whole number of 512-byte sectors.
package runcfg

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// Magic starts a run-config disk; the guest finds the disk by it.
const Magic = "HYPEFS-RUN-CONFIG-1\n"

// Config is the program an image's guest runs.
type Config struct {
	Args    []string `json:"args"`    // entrypoint + cmd, after overrides
	Env     []string `json:"env"`     // KEY=VALUE
	Workdir string   `json:"workdir"` // absolute; "/" when the image has none
	User    string   `json:"user"`    // "", "uid", "uid:gid", "name", "name:group"
	Image   string   `json:"image"`   // the reference, for messages
	Digest  string   `json:"digest"`
}

// Encode returns the disk's bytes.
func Encode(c Config) ([]byte, error) {
	j, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	b := append([]byte(Magic), j...)
	b = append(b, 0)
	if r := len(b) % 512; r != 0 {
		b = append(b, make([]byte, 512-r)...)
	}
	return b, nil
}

// IsConfig reports whether the start of a disk is a run config.
func IsConfig(head []byte) bool { return bytes.HasPrefix(head, []byte(Magic)) }

// Decode reads a disk's bytes.
func Decode(b []byte) (Config, error) {
	var c Config
	if !IsConfig(b) {
		return c, errors.New("not a run-config disk (bad magic)")
	}
	b = b[len(Magic):]
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("run config: %w", err)
	}
	if len(c.Args) == 0 {
		return c, errors.New("run config: no program to run (entrypoint and cmd are both empty)")
	}
	return c, nil
}
