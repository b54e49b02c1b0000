package vz

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRestoreConfig(t *testing.T) {
	saved := Config{CPUs: 2, MemoryBytes: 512 * mib, MachineID: []byte("id-1")}
	now := saved
	now.MachineID = nil
	got, err := restoreConfig(saved, now, nil)
	if err != nil || string(got.MachineID) != "id-1" {
		t.Fatalf("restore without a persisted id: %+v, %v", got, err)
	}
	if _, err := restoreConfig(saved, now, []byte("id-1")); err != nil {
		t.Fatalf("restore with the same id: %v", err)
	}
	if _, err := restoreConfig(saved, now, []byte("id-2")); err == nil || !strings.Contains(err.Error(), "machine identifier differs") {
		t.Fatalf("restore with another id: %v", err)
	}
	noID := saved
	noID.MachineID = nil
	if _, err := restoreConfig(noID, now, nil); err == nil || !strings.Contains(err.Error(), "no machine identifier") {
		t.Fatalf("snapshot without id: %v", err)
	}
	bigger := now
	bigger.MemoryBytes = 1024 * mib
	if _, err := restoreConfig(saved, bigger, nil); err == nil || !strings.Contains(err.Error(), "memory differs") {
		t.Fatalf("restore with other memory: %v", err)
	}
}

func TestLoadSnapshot(t *testing.T) {
	dir := t.TempDir()
	if _, err := loadSnapshot(dir); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("empty dir: %v", err)
	}
	cfg := Config{CPUs: 1, MachineID: []byte{0, 1, 2, 255}}
	if err := saveConfig(dir, cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := loadSnapshot(dir); err == nil || !strings.Contains(err.Error(), "saved machine state") {
		t.Fatalf("missing state file: %v", err)
	}
	writeFile(t, filepath.Join(dir, SnapshotStateFile), []byte("state"))
	got, err := loadSnapshot(dir)
	if err != nil || string(got.MachineID) != string(cfg.MachineID) {
		t.Fatalf("load: %+v, %v", got, err)
	}
	// The identifier is binary; JSON carries it as base64 under a stable key.
	var raw map[string]any
	b, _ := os.ReadFile(filepath.Join(dir, SnapshotConfigFile))
	json.Unmarshal(b, &raw)
	if raw["machine_id"] != "AAEC/w==" {
		t.Fatalf("machine_id in JSON = %v", raw["machine_id"])
	}
	writeFile(t, filepath.Join(dir, SnapshotConfigFile), []byte("{"))
	if _, err := loadSnapshot(dir); err == nil {
		t.Fatal("corrupt configuration accepted")
	}
}

func TestCheckStateTarget(t *testing.T) {
	dir := t.TempDir()
	p, err := checkStateTarget(dir)
	if err != nil || p != filepath.Join(dir, SnapshotStateFile) {
		t.Fatalf("%q, %v", p, err)
	}
	writeFile(t, p, nil)
	if _, err := checkStateTarget(dir); err == nil || !strings.Contains(err.Error(), "exists already") {
		t.Fatalf("existing state file: %v", err)
	}
	if _, err := checkStateTarget(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("missing dir accepted")
	}
	if _, err := checkStateTarget(p); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Fatalf("file as dir: %v", err)
	}
}
