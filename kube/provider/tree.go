// Package provider runs Kubernetes Pods as hypefs instances, one VM per
// Pod, for virtual-kubelet. It is one more client of the mounted tree:
// everything it does is a file operation under the mount (mkdir and rmdir
// of instances/NAME, writes to config and ctl, reads of status, exit, info,
// error, log, console, /host and /events), so a shell script could do the
// same. It imports nothing of hypefs' daemon or shim; a test says so.
package provider

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Tree is a hypefs tree mounted at Root.
type Tree struct{ Root string }

// TreeError is a refused write: the errno the kernel passed on and the
// sentence the daemon left in the instance's error file.
type TreeError struct {
	Op       string // "mkdir", "config", "ctl start", ...
	Instance string
	Err      error  // the errno, wrapped
	Sentence string // from instances/NAME/error; may be empty
}

func (e *TreeError) Error() string {
	if e.Sentence != "" {
		return fmt.Sprintf("%s of instance %s: %s", e.Op, e.Instance, e.Sentence)
	}
	return fmt.Sprintf("%s of instance %s: %v", e.Op, e.Instance, e.Err)
}

func (e *TreeError) Unwrap() error { return e.Err }

// Path joins names under the mount.
func (t Tree) Path(names ...string) string {
	return filepath.Join(append([]string{t.Root}, names...)...)
}

// Inst is the path of an instance's file (or of its directory, file "").
func (t Tree) Inst(name, file string) string { return t.Path("instances", name, file) }

// Alive says whether a hypefs tree answers at Root (its version file
// reads), and if not, why.
func (t Tree) Alive() error {
	b, err := os.ReadFile(t.Path("version"))
	if err != nil {
		return fmt.Errorf("no hypefs tree at %s: %w (hint: run \"hypefs mount %s\")", t.Root, err, t.Root)
	}
	if len(b) == 0 {
		return fmt.Errorf("no hypefs tree at %s: its version file is empty", t.Root)
	}
	return nil
}

// Host is what /host says about the machine.
type Host struct {
	OS, Arch    string
	CPUs        int
	MemoryBytes int64
	Accel       string
	Hypervisor  string
}

// Host reads /host.
func (t Tree) Host() (Host, error) {
	b, err := os.ReadFile(t.Path("host"))
	if err != nil {
		return Host{}, fmt.Errorf("read host facts: %w", err)
	}
	return parseHost(string(b))
}

func parseHost(s string) (Host, error) {
	var h Host
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), " ")
		switch k {
		case "os":
			h.OS = v
		case "arch":
			h.Arch = v
		case "cpus":
			h.CPUs, _ = strconv.Atoi(v)
		case "memory":
			h.MemoryBytes, _ = strconv.ParseInt(v, 10, 64)
		case "accel":
			h.Accel = v
		case "hypervisor":
			h.Hypervisor = v
		}
	}
	if h.CPUs <= 0 || h.MemoryBytes <= 0 {
		return h, fmt.Errorf("host facts lack cpus or memory: %q", s)
	}
	return h, nil
}

// Instances lists the instance names.
func (t Tree) Instances() ([]string, error) {
	ents, err := os.ReadDir(t.Path("instances"))
	if err != nil {
		return nil, fmt.Errorf("list instances: %w", err)
	}
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		if e.IsDir() {
			names = append(names, e.Name())
		}
	}
	return names, nil
}

// Exists says whether the instance's directory is there.
func (t Tree) Exists(name string) (bool, error) {
	_, err := os.Stat(t.Inst(name, ""))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

// Create makes the instance (mkdir instances/NAME).
func (t Tree) Create(name string) error {
	if err := os.Mkdir(t.Inst(name, ""), 0o755); err != nil {
		return &TreeError{Op: "mkdir", Instance: name, Err: unwrapPath(err)}
	}
	return nil
}

// Remove deletes the instance (rmdir instances/NAME). A missing instance
// is not an error.
func (t Tree) Remove(name string) error {
	err := syscall.Rmdir(t.Inst(name, ""))
	if err == nil || err == syscall.ENOENT {
		return nil
	}
	return &TreeError{Op: "rmdir", Instance: name, Err: err, Sentence: t.errorText(name)}
}

// Configure writes a config document in one write.
func (t Tree) Configure(name string, doc []byte) error {
	return t.write(name, "config", "config", doc)
}

// Ctl writes one command to the instance's ctl.
func (t Tree) Ctl(name, cmd string) error {
	return t.write(name, "ctl", "ctl "+cmd, []byte(cmd+"\n"))
}

// write writes b to an instance's file in one write, as `echo > file`
// does; a refusal carries the daemon's sentence.
func (t Tree) write(name, file, op string, b []byte) error {
	f, err := os.OpenFile(t.Inst(name, file), os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return &TreeError{Op: op, Instance: name, Err: unwrapPath(err)}
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return &TreeError{Op: op, Instance: name, Err: unwrapPath(err), Sentence: t.errorText(name)}
	}
	return nil
}

func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func (t Tree) errorText(name string) string {
	b, _ := os.ReadFile(t.Inst(name, "error"))
	return strings.TrimSpace(string(b))
}

// Pull asks the daemon to pull an image again (images/ctl), as the
// kubelet does for imagePullPolicy Always. It returns once the pull ended.
func (t Tree) Pull(ref string) error {
	f, err := os.OpenFile(t.Path("images", "ctl"), os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return fmt.Errorf("pull %s: %w", ref, err)
	}
	_, err = f.Write([]byte("pull " + ref + "\n"))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		b, _ := os.ReadFile(t.Path("images", "error"))
		if s := strings.TrimSpace(string(b)); s != "" {
			return fmt.Errorf("pull %s: %s", ref, s)
		}
		return fmt.Errorf("pull %s: %w", ref, unwrapPath(err))
	}
	return nil
}

// Config reads the instance's normalized config.
func (t Tree) Config(name string) (Config, bool, error) {
	b, err := os.ReadFile(t.Inst(name, "config"))
	if err != nil {
		return Config{}, false, fmt.Errorf("read config of instance %s: %w", name, err)
	}
	if len(strings.TrimSpace(string(b))) == 0 {
		return Config{}, false, nil
	}
	var c Config
	if err := json.Unmarshal(b, &c); err != nil {
		return Config{}, false, fmt.Errorf("parse config of instance %s: %w", name, err)
	}
	return c, true, nil
}

// Snapshot is what the tree says about an instance at one moment.
type Snapshot struct {
	State   string    // the status word
	Changed time.Time // when the state last changed (status's mtime)
	Exit    *int      // the guest program's exit code, once it exited
	Error   string    // the last error sentence
	Info    Info
}

// Info is instances/NAME/info (docs/filesystem.md).
type Info struct {
	State   string      `json:"state"`
	ShimPID int         `json:"shim_pid"`
	Created time.Time   `json:"created"`
	Started *time.Time  `json:"started"`
	Exit    *ExitRecord `json:"exit"`
	IP      string      `json:"ip"`
	Image   string      `json:"image"`
	Digest  string      `json:"digest"`
}

// ExitRecord is how the VM last ended.
type ExitRecord struct {
	Time      time.Time `json:"time"`
	Signal    string    `json:"signal"`
	Reason    string    `json:"reason"`
	Crashed   bool      `json:"crashed"`
	State     string    `json:"state"`
	Detail    string    `json:"detail"`
	Started   time.Time `json:"started"`
	GuestExit *int      `json:"guest_exit"`
}

// ErrGone is returned for an instance that is not in the tree.
var ErrGone = errors.New("instance is gone")

// Snapshot reads status, exit, error and info. An instance that is not
// there gives ErrGone.
func (t Tree) Snapshot(name string) (Snapshot, error) {
	var s Snapshot
	b, err := os.ReadFile(t.Inst(name, "status"))
	if errors.Is(err, fs.ErrNotExist) {
		return s, ErrGone
	}
	if err != nil {
		return s, fmt.Errorf("read status of instance %s: %w", name, err)
	}
	s.State = strings.TrimSpace(string(b))
	if fi, err := os.Stat(t.Inst(name, "status")); err == nil {
		s.Changed = fi.ModTime()
	}
	if b, err := os.ReadFile(t.Inst(name, "exit")); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			s.Exit = &n
		}
	}
	s.Error = t.errorText(name)
	if b, err := os.ReadFile(t.Inst(name, "info")); err == nil {
		json.Unmarshal(b, &s.Info)
	}
	return s, nil
}
