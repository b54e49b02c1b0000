package vz

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Files in a snapshot directory written by Machine.Snapshot.
const (
	// SnapshotConfigFile holds the Config (machine identifier included) as JSON.
	SnapshotConfigFile = "vz-config.json"
	// SnapshotStateFile is the framework's machine state.
	SnapshotStateFile = "vz-state.vzvmsave"
)

// saveConfig writes cfg into dir next to the state file.
func saveConfig(dir string, cfg Config) error {
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return fmt.Errorf("encode vm configuration: %w", err)
	}
	p := filepath.Join(dir, SnapshotConfigFile)
	if err := os.WriteFile(p, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("vm configuration: %w", err)
	}
	return nil
}

// loadSnapshot reads the configuration saved in dir and checks that the
// state file is there.
func loadSnapshot(dir string) (Config, error) {
	var cfg Config
	b, err := os.ReadFile(filepath.Join(dir, SnapshotConfigFile))
	if err != nil {
		return cfg, fmt.Errorf("saved vm configuration: %w", err)
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		return cfg, fmt.Errorf("saved vm configuration %s: %w", filepath.Join(dir, SnapshotConfigFile), err)
	}
	if _, err := os.Stat(filepath.Join(dir, SnapshotStateFile)); err != nil {
		return cfg, fmt.Errorf("saved machine state: %w", err)
	}
	return cfg, nil
}

// restoreConfig decides the configuration of the fresh VM that restores a
// snapshot. The saved configuration wins, machine identifier included:
// Linux guests restore only into a VM with the identifier they were saved
// with (Tart issue 796). The spec must still describe the same hardware,
// and a persisted identifier that disagrees with the saved one is refused
// instead of failing later with the framework's opaque "invalid argument".
func restoreConfig(saved, fromSpec Config, specID []byte) (Config, error) {
	if len(saved.MachineID) == 0 {
		return Config{}, errors.New("snapshot has no machine identifier: it cannot be restored")
	}
	if len(specID) > 0 && !bytes.Equal(specID, saved.MachineID) {
		return Config{}, errors.New("the instance's machine identifier differs from the one the snapshot was saved with")
	}
	if err := sameHardware(saved, fromSpec); err != nil {
		return Config{}, fmt.Errorf("restore needs the configuration the snapshot was saved with: %w", err)
	}
	return saved, nil
}

// checkStateTarget refuses a state file that exists already: the framework
// will not overwrite it, and its error does not say so.
func checkStateTarget(dir string) (string, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return "", fmt.Errorf("snapshot directory: %w", err)
	}
	if !st.IsDir() {
		return "", fmt.Errorf("snapshot directory %s is not a directory", dir)
	}
	p := filepath.Join(dir, SnapshotStateFile)
	if _, err := os.Lstat(p); err == nil {
		return "", fmt.Errorf("machine state %s exists already", p)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("machine state: %w", err)
	}
	return p, nil
}
