package instance

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"hypefs/backend/layout"
	"hypefs/internal/atomicfile"
	"hypefs/internal/errno"
	"hypefs/shim/api"
	"hypefs/shim/engine"
)

// States (DESIGN §2.4).
const (
	New      = "new"
	Created  = "created"
	Booting  = "booting"
	Running  = "running"
	Paused   = "paused"
	Stopping = "stopping"
	Stopped  = "stopped"
	Crashed  = "crashed"
	Failed   = "error"
)

// live reports whether a VM may exist in this state.
func live(state string) bool {
	switch state {
	case Booting, Running, Paused, Stopping:
		return true
	}
	return false
}

// Owner is the local user an instance belongs to: whoever made it (the
// caller of mkdir, or the 9P attach user). Only the owner and root may
// configure, control, type into, read the console of, or remove it
// (docs/security.md); the tree shows the instance's files as the owner's.
// An instance recorded before owners were kept belongs to root.
type Owner struct {
	UID uint32 `json:"uid"`
	GID uint32 `json:"gid"`
}

// record is what state.json holds.
type record struct {
	Name    string    `json:"name"`
	Owner   Owner     `json:"owner"`
	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
	State   string    `json:"state"`
	Changed time.Time `json:"changed"` // when State last changed
	Config  *Config   `json:"config,omitempty"`
	// When the config was last accepted (its file's mtime).
	ConfigTime time.Time `json:"config_time,omitzero"`
	// The last error: its sentence, what caused it (`ctl "pause"`,
	// `config`, `boot`...) and when.
	Error      string          `json:"error,omitempty"`
	ErrorCause string          `json:"error_cause,omitempty"`
	ErrorTime  time.Time       `json:"error_time,omitzero"`
	Exit       *api.ExitRecord `json:"exit,omitempty"`
	Started    *time.Time      `json:"started,omitempty"`
	// Facts the parts reported for the last boot (ip, mac, tap, image...).
	Facts map[string]string `json:"facts,omitempty"`
}

// Instance is one VM as the daemon knows it.
type Instance struct {
	m     *Manager
	name  string
	owner Owner // = rec.Owner, read without the lock

	saveMu  sync.Mutex // orders state file writes; taken before mu
	written uint64     // version on disk (under saveMu)

	mu      sync.Mutex
	rec     record
	version uint64   // bumped on every change of rec
	cur     *run     // the shim being followed, if any
	boot    *bootJob // a boot being set up, if any
	deleted bool
}

// Name is the instance's name.
func (i *Instance) Name() string { return i.name }

// Owner is who the instance belongs to; it never changes.
func (i *Instance) Owner() Owner { return i.owner }

// State is the instance's state word.
func (i *Instance) State() string {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.rec.State
}

// StateChanged is when the state last changed.
func (i *Instance) StateChanged() time.Time {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.rec.Changed.IsZero() {
		return i.rec.Created
	}
	return i.rec.Changed
}

// GuestExit is the exit status of the guest's program, once it reported one.
func (i *Instance) GuestExit() (int, bool) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.rec.Exit == nil || i.rec.Exit.GuestExit == nil {
		return 0, false
	}
	return *i.rec.Exit.GuestExit, true
}

// ErrorText is the last error as one line, or "": when it happened (RFC
// 3339, UTC), what caused it, and the sentence.
func (i *Instance) ErrorText() string {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.errorLineLocked()
}

func (i *Instance) errorLineLocked() string {
	if i.rec.Error == "" {
		return ""
	}
	cause := i.rec.ErrorCause
	if cause == "" {
		cause = "hypefs"
	}
	t := i.rec.ErrorTime
	if t.IsZero() {
		t = i.rec.Updated
	}
	return t.UTC().Format(time.RFC3339) + " " + cause + ": " + oneLine(i.rec.Error)
}

// oneLine keeps a sentence on one line, without control bytes.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, strings.TrimSpace(s))
}

// setErrorLocked records the last error (msg "" clears it).
func (i *Instance) setErrorLocked(cause, msg string) {
	if msg == "" && i.rec.Error == "" {
		return
	}
	i.rec.Error, i.rec.ErrorCause, i.rec.ErrorTime = msg, cause, time.Now().UTC()
}

// Created is when the instance was made.
func (i *Instance) Created() time.Time {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.rec.Created
}

// ConfigChanged is when a config was last accepted (else when the
// instance was made).
func (i *Instance) ConfigChanged() time.Time {
	i.mu.Lock()
	defer i.mu.Unlock()
	return firstSet(i.rec.ConfigTime, i.rec.Created)
}

// ErrorTime is when the error file last changed.
func (i *Instance) ErrorTime() time.Time {
	i.mu.Lock()
	defer i.mu.Unlock()
	return firstSet(i.rec.ErrorTime, i.rec.Created)
}

// ExitTime is when the VM last ended (else when the instance was made).
func (i *Instance) ExitTime() time.Time {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.rec.Exit != nil {
		return firstSet(i.rec.Exit.Time, i.rec.Created)
	}
	return i.rec.Created
}

// InfoChanged is the newest of what info shows: state, config, error and
// exit.
func (i *Instance) InfoChanged() time.Time {
	t := i.StateChanged()
	for _, u := range []time.Time{i.ConfigChanged(), i.ErrorTime(), i.ExitTime()} {
		if u.After(t) {
			t = u
		}
	}
	return t
}

func firstSet(ts ...time.Time) time.Time {
	for _, t := range ts {
		if !t.IsZero() {
			return t
		}
	}
	return time.Time{}
}

// Gone reports whether the instance was removed.
func (i *Instance) Gone() bool {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.deleted
}

// Running reports whether a VM runs or is being started.
func (i *Instance) Running() bool {
	i.mu.Lock()
	defer i.mu.Unlock()
	return live(i.rec.State) || i.boot != nil
}

// Console returns the VM's console socket once the VM has one: at once
// while a shim runs it; during a boot's set-up, when the shim is up. It
// returns false when no VM runs and none is starting, or when ctx ends.
func (i *Instance) Console(ctx context.Context) (string, bool) {
	for {
		i.mu.Lock()
		r, b, st, gone := i.cur, i.boot, i.rec.State, i.deleted
		i.mu.Unlock()
		up := false
		if b != nil {
			select {
			case <-b.attached:
				up = true
			default:
			}
		}
		switch {
		case gone:
			return "", false
		case r != nil && live(st), up:
			return i.ConsoleSocket(), true
		case b == nil:
			return "", false
		}
		select {
		case <-b.attached:
		case <-b.done:
		case <-ctx.Done():
			return "", false
		}
	}
}

// ConfigJSON is the normalized config, or nothing before one was written.
func (i *Instance) ConfigJSON() []byte {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.rec.Config == nil {
		return nil
	}
	b, _ := json.MarshalIndent(i.rec.Config, "", "  ")
	return append(b, '\n')
}

// LogPath is the console log's file.
func (i *Instance) LogPath() string { return i.m.lay.InstanceFile(i.name, layout.ConsoleLog) }

// VMMLogPath is the hypervisor's own output.
func (i *Instance) VMMLogPath() string { return i.m.lay.InstanceFile(i.name, layout.VMMLog) }

// ConsoleSocket is the shim's live console socket.
func (i *Instance) ConsoleSocket() string { return i.m.lay.RunFile(i.name, layout.ConsoleSock) }

// fail records a refusal in the error file, with its cause, and returns it.
func (i *Instance) fail(cause string, err *errno.Error) error {
	i.mu.Lock()
	i.setErrorLocked(cause, err.Msg)
	i.saveLocked()
	i.mu.Unlock()
	i.m.changed(i.name, "", "error: "+err.Msg)
	return err
}

// setState moves to state (no-op when already there), saving and announcing.
func (i *Instance) setState(state, detail string) {
	i.mu.Lock()
	if i.rec.State == state || i.deleted {
		i.mu.Unlock()
		return
	}
	i.rec.State = state
	i.rec.Changed = time.Now().UTC()
	i.saveLocked()
	i.mu.Unlock()
	i.m.changed(i.name, state, detail)
}

// saveLocked records that the state file must be written. The write
// happens off the caller's path (the manager's saver): a live VM's state
// is the shim's to tell after a restart, so a crash before the save loses
// nothing, and `echo pause > ctl` need not wait for two fsyncs. Callers
// that need the file on disk before they answer call saveNow after
// unlocking.
func (i *Instance) saveLocked() {
	i.rec.Updated = time.Now().UTC()
	i.version++
	i.m.saveSoon(i)
}

// saveNow writes the newest state if it is not on disk yet. Writes are
// ordered by the save lock and never replace a newer state with an older.
// A failure is logged and returned (the saver retries with the next
// change; callers that answer a write make the write fail).
func (i *Instance) saveNow() error {
	i.saveMu.Lock()
	defer i.saveMu.Unlock()
	i.mu.Lock()
	r, v, gone := i.rec, i.version, i.deleted
	r.Facts = maps.Clone(r.Facts) // written under mu (a guest's address), read below without it
	i.mu.Unlock()
	if gone || v <= i.written {
		return nil
	}
	if err := atomicfile.WriteJSON(i.m.lay.InstanceFile(i.name, layout.StateFile), r, layout.PrivateFile); err != nil {
		i.m.log.Error("save instance state", "instance", i.name, "err", err)
		return err
	}
	i.written = v
	return nil
}

// saveRefusal words a state file that could not be written, for the write
// that needed it: ENOSPC when the data directory's disk is full, EIO
// otherwise.
func (i *Instance) saveRefusal(err error) *errno.Error {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return errno.Errorf(syscall.ENOSPC, "the instance's state could not be saved because the disk of %s is full; nothing was changed (hint: free space there, then write again)", i.m.lay.Data)
	}
	return errno.Errorf(syscall.EIO, "the instance's state could not be saved (%v); nothing was changed", err)
}

// SetConfig validates and stores a config write. A valid config written
// to an instance that has not run (new, created, error) boots it; one
// written to a stopped or crashed instance replaces the config for the
// next start. A running instance refuses with EBUSY.
func (i *Instance) SetConfig(raw []byte) error {
	if len(raw) > MaxConfig {
		return i.fail("config", errno.Errorf(syscall.EFBIG, "config is %d bytes; at most %d are accepted", len(raw), MaxConfig))
	}
	c, err := ParseConfig(raw, i.m.network)
	if err != nil {
		var refusal *errno.Error
		if errors.As(err, &refusal) {
			return i.fail("config", refusal)
		}
		return err
	}
	if c.Image != "" { // only an image's instance has a writable disk
		if refusal := i.m.limits.checkDisk(c.Disk); refusal != nil {
			return i.fail("config", refusal)
		}
	}
	i.mu.Lock()
	st, booting, gone := i.rec.State, i.boot != nil, i.deleted
	if gone {
		i.mu.Unlock()
		return errno.Errorf(syscall.ENOENT, "instance %q was removed", i.name)
	}
	if live(st) || booting {
		i.mu.Unlock()
		return i.fail("config", errno.Errorf(syscall.EBUSY, "config cannot change while the instance is %s (hint: echo kill > ctl, or shutdown, first)", st))
	}
	before := i.rec
	i.rec.Config = &c
	i.rec.ConfigTime = time.Now().UTC()
	i.setErrorLocked("config", "")
	boot := st == New || st == Created || st == Failed
	if st == New {
		i.rec.State = Created
	}
	i.saveLocked()
	i.mu.Unlock()
	// The config is on disk before the write returns; if it cannot be,
	// the write fails and the instance stays as it was.
	if err := i.saveNow(); err != nil {
		i.mu.Lock()
		i.rec = before
		i.saveLocked()
		i.mu.Unlock()
		return i.fail("config", i.saveRefusal(err))
	}
	if st == New {
		i.m.changed(i.name, Created, "config accepted")
	}
	if boot {
		return i.start()
	}
	return nil
}

// Commands is the list of ctl words.
var Commands = []string{"start", "shutdown", "kill", "pause", "resume", "reboot"}

// ValidCommands lists the ctl words the current state allows.
func (i *Instance) ValidCommands() []string {
	switch i.State() {
	case New:
		return []string{"shutdown", "kill"}
	case Created, Stopped, Crashed, Failed:
		return []string{"start", "shutdown", "kill"}
	case Booting, Running:
		return []string{"shutdown", "kill", "pause", "reboot"}
	case Paused:
		return []string{"shutdown", "kill", "resume"}
	case Stopping:
		return []string{"shutdown", "kill"}
	}
	return nil
}

// Ctl runs one ctl command (DESIGN §2.2).
func (i *Instance) Ctl(line string) error {
	cmd, err := parseCtl(line)
	if err != nil {
		return i.fail(ctlCause(line), err)
	}
	i.mu.Lock()
	st, booting, r, gone := i.rec.State, i.boot != nil, i.cur, i.deleted
	hasConfig := i.rec.Config != nil
	i.mu.Unlock()
	if gone {
		return errno.Errorf(syscall.ENOENT, "instance %q was removed", i.name)
	}
	if booting && cmd != "kill" && cmd != "shutdown" {
		return i.fail(ctlCause(cmd), errno.Errorf(syscall.EBUSY, "%s: the instance is still being set up; try again in a moment", cmd))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	switch cmd {
	case "start":
		if !hasConfig {
			return i.fail(ctlCause(cmd), errno.Errorf(syscall.EBUSY, "start: the instance has no config yet (hint: echo '{}' > config)"))
		}
		if live(st) || booting {
			return i.wrongState(cmd, st)
		}
		return i.start()
	case "kill", "shutdown":
		return i.end(ctx, cmd, booting)
	}
	return i.act(ctx, cmd, st, r)
}

// ctlCause names a ctl write in the error file: `ctl "pause"`, quoted so
// that every byte reads, and cut short when long.
func ctlCause(line string) string {
	s := strings.TrimSpace(line)
	if len(s) > 40 {
		s = s[:40] + "..."
	}
	return fmt.Sprintf("ctl %q", s)
}

// parseCtl checks that a ctl write holds one known command. A write of
// several commands is refused whole: nothing of it runs.
func parseCtl(line string) (string, *errno.Error) {
	cmd := strings.TrimSpace(line)
	switch {
	case strings.ContainsAny(cmd, "\n"):
		var cmds []string
		for _, l := range strings.Split(cmd, "\n") {
			if l = strings.TrimSpace(l); l != "" {
				cmds = append(cmds, l)
			}
		}
		return "", errno.Errorf(syscall.EINVAL,
			"ctl takes one command per write, and this write holds %d lines; nothing was run (hint: one echo per command: echo %s > ctl)", len(cmds), cmds[0])
	case slices.Contains(Commands, cmd):
		return cmd, nil
	case cmd == "":
		return "", errno.Errorf(syscall.EINVAL, "empty ctl command (valid: %s)", strings.Join(Commands, ", "))
	}
	return "", errno.Errorf(syscall.EINVAL, "unknown ctl command %q (valid: %s)", cmd, strings.Join(Commands, ", "))
}

// wrongState refuses a command the state st does not allow.
func (i *Instance) wrongState(cmd, st string) error {
	valid := strings.Join(i.ValidCommands(), ", ")
	if valid == "" {
		valid = "none until a config is written"
	}
	return i.fail(ctlCause(cmd), errno.Errorf(syscall.EBUSY, "%s: not possible while the instance is %s (valid now: %s)", cmd, st, valid))
}

// end runs kill or shutdown. A boot still being set up is cancelled
// first: nothing runs yet that a power button could reach. If the boot
// finished meanwhile, the VM it started is ended.
func (i *Instance) end(ctx context.Context, cmd string, booting bool) error {
	if booting {
		i.cancelBoot(cmd)
	}
	i.mu.Lock()
	st, r := i.rec.State, i.cur
	i.mu.Unlock()
	if r == nil || !live(st) {
		return nil
	}
	if cmd == "kill" {
		return i.kill(ctx, r)
	}
	return i.shutdown(ctx, r, st)
}

// actions are the ctl commands the shim runs on a live VM, with the
// states that allow them.
var actions = map[string]struct {
	path string
	from []string
}{
	"pause":  {api.PathPause, []string{Running, Booting}},
	"resume": {api.PathResume, []string{Paused}},
	"reboot": {api.PathReboot, []string{Running, Booting}},
}

// act runs pause, resume or reboot and applies its effect at once.
func (i *Instance) act(ctx context.Context, cmd, st string, r *run) error {
	a := actions[cmd]
	if r == nil || !slices.Contains(a.from, st) {
		return i.wrongState(cmd, st)
	}
	eff, err := r.client.Act(ctx, a.path, nil)
	if err != nil {
		if errors.Is(err, engine.ErrWrongState) {
			return i.fail(ctlCause(cmd), errno.Errorf(syscall.EBUSY, "%s: %v", cmd, err))
		}
		return i.fail(ctlCause(cmd), errno.Errorf(syscall.EIO, "%s: %v", cmd, err))
	}
	i.applyEffect(r, eff, cmd)
	return nil
}

// killWait bounds how long kill waits for the VM to be gone.
const killWait = 20 * time.Second

// kill ends the VM now and returns once it is recorded as ended.
func (i *Instance) kill(ctx context.Context, r *run) error {
	if _, err := r.client.Act(ctx, api.PathShutdown, nil); err != nil && !isGone(err) {
		return i.fail(ctlCause("kill"), errno.Errorf(syscall.EIO, "kill: %v", err))
	}
	select {
	case <-r.settled:
		return nil
	case <-time.After(killWait):
		return i.fail(ctlCause("kill"), errno.Errorf(syscall.EIO, "kill: the VM was told to end but has not ended after %s; see vmm.log and shim.log", killWait))
	}
}

// shutdown presses the power button (resuming a paused VM first); the
// shim kills the VM if it has not ended after the shutdown timeout.
func (i *Instance) shutdown(ctx context.Context, r *run, st string) error {
	if st == Stopping {
		return nil
	}
	if st == Paused {
		eff, err := r.client.Act(ctx, api.PathResume, nil)
		if err != nil && !isGone(err) {
			return i.fail(ctlCause("shutdown"), errno.Errorf(syscall.EIO, "shutdown: resume before the power button: %v", err))
		}
		i.applyEffect(r, eff, "resume")
	}
	eff, err := r.client.Act(ctx, api.PathGracefulStop, api.GracefulStop{TimeoutSeconds: i.m.shutdownTimeout.Seconds()})
	if err != nil && !isGone(err) {
		return i.fail(ctlCause("shutdown"), errno.Errorf(syscall.EIO, "shutdown: %v", err))
	}
	i.applyEffect(r, eff, "power button pressed")
	return nil
}

func (i *Instance) String() string { return fmt.Sprintf("instance %s", i.name) }

// Refuse records a refusal made on the instance's behalf (by the file
// tree) in its error file, with what caused it, and returns it.
func (i *Instance) Refuse(cause string, err *errno.Error) error {
	return i.fail(cause, err)
}

// Info is what the info file shows.
type Info struct {
	Name          string          `json:"name"`
	State         string          `json:"state"`
	Accel         string          `json:"accel,omitempty"`
	Hypervisor    string          `json:"hypervisor,omitempty"`
	ShimPID       int             `json:"shim_pid,omitempty"`
	HypervisorPID int             `json:"hypervisor_pid,omitempty"`
	Created       time.Time       `json:"created"`
	Started       *time.Time      `json:"started,omitempty"`
	Exit          *api.ExitRecord `json:"exit,omitempty"`
	APISocket     string          `json:"api_socket,omitempty"`
	VsockSocket   string          `json:"vsock_socket,omitempty"`
	Error         string          `json:"error,omitempty"`
	// From the parts: networking and the image. IP is the address the
	// host gave the guest, or else the one the guest announced (DHCP).
	IP     string `json:"ip,omitempty"`
	MAC    string `json:"mac,omitempty"`
	Tap    string `json:"tap,omitempty"`
	Image  string `json:"image,omitempty"`
	Digest string `json:"digest,omitempty"`
}

// Info describes the instance.
func (i *Instance) Info() Info {
	i.mu.Lock()
	defer i.mu.Unlock()
	in := Info{Name: i.name, State: i.rec.State, Created: i.rec.Created, Started: i.rec.Started, Exit: i.rec.Exit, Error: i.errorLineLocked()}
	f := i.rec.Facts
	in.IP, in.MAC, in.Tap, in.Image, in.Digest = f["ip"], f["mac"], f["tap"], f["image"], f["digest"]
	if in.IP == "" {
		// No address from the host (vz's NAT hands them out by DHCP):
		// the one the guest announced.
		in.IP = f[factGuestIP]
	}
	if i.cur != nil {
		r := i.cur.rec
		in.Accel, in.Hypervisor, in.ShimPID, in.HypervisorPID = r.Accel, r.Hypervisor, r.ShimPID, r.HypervisorPID
		in.APISocket = i.m.lay.RunFile(i.name, layout.APISock)
		if _, err := os.Stat(i.m.lay.RunFile(i.name, layout.VsockSock)); err == nil {
			in.VsockSocket = i.m.lay.RunFile(i.name, layout.VsockSock)
		}
	}
	return in
}
