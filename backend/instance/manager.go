// Package instance keeps the daemon's view of every VM: its config, its
// state, its last error, and the shim that runs it. It starts shims,
// follows their state changes, and finds them again after a restart.
package instance

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"hypefs/backend/layout"
	"hypefs/internal/atomicfile"
	"hypefs/internal/errno"
	"hypefs/internal/logcap"
	"hypefs/shim/client"
	"hypefs/shim/engine"
)

// Event is a change the manager announces.
type Event struct {
	Time     time.Time
	Instance string
	State    string // the new state; "" for a non-state event (an error)
	Detail   string
	Deleted  bool
	Appeared bool // found other than by Create (a restart)
}

// Options configure a Manager.
type Options struct {
	Layout layout.Layout
	// BinDir holds hypefs-shim and hypefs-init.
	BinDir string
	// Busybox is the static busybox put into the guest; empty means the
	// guest package's default (the kernel cache's busybox-ARCH, or the
	// host's /bin/busybox for the host's own arch).
	Busybox string
	Log     *slog.Logger
	// ShutdownTimeout is how long shutdown waits for the guest before
	// killing it (default 30 s, as docker stop).
	ShutdownTimeout time.Duration
	// OnEvent is called, outside any lock, for every change.
	OnEvent func(Event)
	// Parts take part in every boot, in order (images, networking).
	Parts []Part
	// Network is what "network" means in configs.
	Network NetworkPolicy
	// Limits bound what configs may ask for.
	Limits Limits
	// HypervisorUser, when set, is who hypervisor processes run as
	// (an unprivileged user; --qemu-user).
	HypervisorUser *engine.User
	// LogMax caps each log of an instance (console.log, vmm.log,
	// shim.log) in bytes; 0 means logcap.Default.
	LogMax int64
}

// Manager owns every instance.
//
// Lock order, where locks nest: Manager.mu, then Instance.saveMu, then
// Instance.mu, then Manager.saveMu. No lock is held across a state file's
// fsync except Instance.saveMu, which orders the writes of one instance.
type Manager struct {
	lay             layout.Layout
	binDir          string
	busybox         string
	log             *slog.Logger
	shutdownTimeout time.Duration
	onEvent         func(Event)
	parts           []Part
	network         NetworkPolicy
	limits          limits
	hvUser          *engine.User
	logMax          int64

	ctx    context.Context // ends the followers on Close; VMs keep running
	cancel context.CancelFunc

	mu        sync.Mutex
	instances map[string]*Instance
	creating  map[string]bool // names being created (on disk, not yet listed)
	wg        sync.WaitGroup

	saveMu  sync.Mutex
	dirty   map[*Instance]bool
	saveReq chan struct{}
	saverWG sync.WaitGroup
}

// saveSoon asks the saver to write an instance's state file.
func (m *Manager) saveSoon(i *Instance) {
	m.saveMu.Lock()
	m.dirty[i] = true
	m.saveMu.Unlock()
	select {
	case m.saveReq <- struct{}{}:
	default:
	}
}

// saver writes dirty state files, coalescing bursts, until Close; then it
// writes what is left.
func (m *Manager) saver() {
	defer m.saverWG.Done()
	flush := func() {
		m.saveMu.Lock()
		batch := m.dirty
		m.dirty = map[*Instance]bool{}
		m.saveMu.Unlock()
		for i := range batch {
			i.saveNow()
		}
	}
	for {
		select {
		case <-m.saveReq:
			flush()
		case <-m.ctx.Done():
			flush()
			return
		}
	}
}

// Open loads every instance under the data directory and reattaches to
// the shims of those that run.
func Open(opts Options) (*Manager, error) {
	if opts.Log == nil {
		opts.Log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	if opts.ShutdownTimeout <= 0 {
		opts.ShutdownTimeout = 30 * time.Second
	}
	if opts.LogMax <= 0 {
		opts.LogMax = logcap.Default
	}
	if !opts.Layout.SocketsFit() {
		return nil, fmt.Errorf("run directory %s is too long for Unix socket paths (%d bytes at most); choose a shorter --run", opts.Layout.Run, layout.SunPathMax())
	}
	if err := opts.Layout.MakeRoots(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(opts.Layout.InstancesDir(), layout.PrivateDir); err != nil {
		return nil, fmt.Errorf("create %s: %w", opts.Layout.InstancesDir(), err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Manager{
		lay: opts.Layout, binDir: opts.BinDir, busybox: opts.Busybox, log: opts.Log,
		shutdownTimeout: opts.ShutdownTimeout, onEvent: opts.OnEvent, parts: opts.Parts, network: opts.Network,
		limits: limits{Limits: opts.Limits, data: opts.Layout.Data}, hvUser: opts.HypervisorUser, logMax: opts.LogMax,
		ctx: ctx, cancel: cancel, instances: map[string]*Instance{}, creating: map[string]bool{},
		dirty: map[*Instance]bool{}, saveReq: make(chan struct{}, 1),
	}
	m.saverWG.Add(1)
	go m.saver()
	m.moveLegacyI()
	if err := m.load(); err != nil {
		m.Close()
		return nil, err
	}
	alive := map[string]bool{}
	for _, n := range m.Names() {
		if i := m.Get(n); i != nil && live(i.State()) {
			alive[n] = true
		}
	}
	for _, p := range m.parts {
		if r, ok := p.(Reconciler); ok {
			r.Reconcile(alive)
		}
	}
	return m, nil
}

// Close stops following shims. The VMs keep running.
func (m *Manager) Close() {
	m.cancel()
	m.wg.Wait()
	m.mu.Lock()
	for _, i := range m.instances {
		i.mu.Lock()
		if i.cur != nil {
			i.cur.client.Close()
		}
		i.mu.Unlock()
	}
	m.mu.Unlock()
	m.saverWG.Wait()
}

// Layout is where the manager keeps things.
func (m *Manager) Layout() layout.Layout { return m.lay }

func (m *Manager) changed(name, state, detail string) {
	if m.onEvent != nil {
		m.onEvent(Event{Time: time.Now().UTC(), Instance: name, State: state, Detail: detail})
	}
}

// Get returns the named instance, or nil.
func (m *Manager) Get(name string) *Instance {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.instances[name]
}

// Names lists the instances, sorted.
func (m *Manager) Names() []string {
	m.mu.Lock()
	names := make([]string, 0, len(m.instances))
	for n := range m.instances {
		names = append(names, n)
	}
	m.mu.Unlock()
	sort.Strings(names)
	return names
}

// Create makes a new instance in state new (mkdir). Its directory and
// state file are on disk when it returns; the name is reserved meanwhile
// (a second Create of it fails with EEXIST), without holding up the
// manager's other callers during the fsyncs.
func (m *Manager) Create(name string, owner Owner) (*Instance, error) {
	if !layout.ValidName(name) {
		return nil, errno.Errorf(syscall.EINVAL, "instance name %q is not allowed: use 1-63 characters of a-z, 0-9, '_', '.', '-', starting with a letter or digit", name)
	}
	m.mu.Lock()
	if _, ok := m.instances[name]; ok || m.creating[name] {
		m.mu.Unlock()
		return nil, errno.Errorf(syscall.EEXIST, "instance %q exists", name)
	}
	m.creating[name] = true
	m.mu.Unlock()
	i, err := m.createOnDisk(name, owner)
	m.mu.Lock()
	delete(m.creating, name)
	if err == nil {
		m.instances[name] = i
	}
	m.mu.Unlock()
	if err != nil {
		return nil, err
	}
	m.changed(name, New, "created")
	return i, nil
}

// createOnDisk makes a new instance's directory and state file, durably;
// when they cannot be written (a full disk), nothing is left behind.
func (m *Manager) createOnDisk(name string, owner Owner) (*Instance, error) {
	dir := m.lay.InstanceDir(name)
	if err := os.Mkdir(dir, layout.PrivateDir); err != nil {
		if errors.Is(err, os.ErrExist) {
			// Left over by a crash between rename and removal? Refuse
			// rather than adopt files we did not record.
			return nil, errno.Errorf(syscall.EEXIST, "instance directory %s exists on disk but is not loaded", dir)
		}
		if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
			return nil, errno.Errorf(syscall.ENOSPC, "instance %q cannot be made: the disk of %s is full (hint: free space there)", name, m.lay.Data)
		}
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	now := time.Now().UTC()
	i := &Instance{m: m, name: name, owner: owner, rec: record{Name: name, Owner: owner, Created: now, State: New}}
	i.mu.Lock()
	i.saveLocked()
	i.mu.Unlock()
	if err := i.saveNow(); err != nil {
		os.RemoveAll(dir)
		r := i.saveRefusal(err)
		return nil, errno.Errorf(r.Errno, "instance %q cannot be made: %s", name, r.Msg)
	}
	atomicfile.SyncDir(m.lay.InstancesDir())
	return i, nil
}

// Delete removes an instance that does not run (rmdir), with its files,
// and returns it.
func (m *Manager) Delete(name string) (*Instance, error) {
	m.mu.Lock()
	i, ok := m.instances[name]
	m.mu.Unlock()
	if !ok {
		return nil, errno.Errorf(syscall.ENOENT, "no instance %q", name)
	}
	i.mu.Lock()
	st, booting := i.rec.State, i.boot != nil
	if live(st) || booting {
		i.mu.Unlock()
		return nil, i.fail("rmdir", errno.Errorf(syscall.EBUSY, "instance %q is %s; it cannot be removed while it runs (hint: echo kill > ctl, or shutdown, first)", name, st))
	}
	i.deleted = true
	if i.cur != nil {
		i.cur.cancel()
	}
	i.mu.Unlock()
	m.mu.Lock()
	delete(m.instances, name)
	m.mu.Unlock()
	// Wait for a state file write in flight; later ones see deleted.
	i.saveMu.Lock()
	i.saveMu.Unlock()
	os.RemoveAll(m.lay.RunDir(name))
	// Rename first, so that a crash mid-removal never leaves a directory
	// that loads as a half instance.
	dir := m.lay.InstanceDir(name)
	trash := m.lay.Trash(name, time.Now().UnixNano())
	if err := os.Rename(dir, trash); err != nil {
		m.log.Error("remove instance directory", "instance", name, "err", err)
	} else {
		atomicfile.SyncDir(m.lay.InstancesDir())
		os.RemoveAll(trash)
	}
	for _, p := range m.parts {
		p.Deleted(name)
	}
	if m.onEvent != nil {
		m.onEvent(Event{Time: time.Now().UTC(), Instance: name, Deleted: true})
	}
	return i, nil
}

// load reads every instance directory and reattaches live ones, each under
// its own deadline, in parallel.
func (m *Manager) load() error {
	ents, err := os.ReadDir(m.lay.InstancesDir())
	if err != nil {
		return fmt.Errorf("read %s: %w", m.lay.InstancesDir(), err)
	}
	var wg sync.WaitGroup
	for _, e := range ents {
		name := e.Name()
		if strings.HasPrefix(name, ".") {
			if layout.IsTrash(name) {
				os.RemoveAll(filepath.Join(m.lay.InstancesDir(), name))
			}
			continue
		}
		if !e.IsDir() || !layout.ValidName(name) {
			continue
		}
		i := &Instance{m: m, name: name}
		b, err := os.ReadFile(m.lay.InstanceFile(name, layout.StateFile))
		if err == nil {
			err = json.Unmarshal(b, &i.rec)
		}
		if err != nil {
			i.rec = record{Name: name, Created: time.Now().UTC(), State: Failed,
				Error: fmt.Sprintf("the instance's state file could not be read (%v); remove the instance with rmdir", err), ErrorCause: "load"}
		}
		i.rec.Name = name
		i.owner = i.rec.Owner
		m.instances[name] = i
		if live(i.rec.State) {
			m.moveLegacyRunDir(name)
			wg.Add(1)
			go func() {
				defer wg.Done()
				m.reattach(i)
			}()
		}
	}
	wg.Wait()
	return nil
}

// moveLegacyRunDir moves the run directory of a VM started by an earlier
// hypefs, which kept it at RUN/NAME, to where it is now (RUN/i/NAME), so
// that the VM is found again. Its sockets keep working: a Unix socket is
// reached through whatever path leads to it. An instance called "i" had
// the namespace's own path: moveLegacyI moves it first.
func (m *Manager) moveLegacyRunDir(name string) {
	old, now := filepath.Join(m.lay.Run, name), m.lay.RunDir(name)
	if name == layout.RunByName || filepath.Dir(now) != filepath.Join(m.lay.Run, layout.RunByName) {
		return // "i": moveLegacyI; hashed: RUN/h/HASH then as now
	}
	if _, err := os.Stat(filepath.Join(old, layout.ShimRecord)); err != nil {
		return
	}
	if _, err := os.Stat(now); err == nil {
		return
	}
	os.MkdirAll(filepath.Dir(now), layout.PrivateDir)
	if err := os.Rename(old, now); err != nil {
		m.log.Warn("move run directory of an earlier hypefs", "instance", name, "err", err)
	}
}

// moveLegacyI moves the run directory of an instance called "i" that an
// earlier hypefs started (RUN/i, a shim's record in it) to RUN/i/i, before
// RUN/i becomes the namespace of every instance's run directory.
func (m *Manager) moveLegacyI() {
	old := filepath.Join(m.lay.Run, layout.RunByName)
	if _, err := os.Stat(filepath.Join(old, layout.ShimRecord)); err != nil {
		return
	}
	aside := filepath.Join(m.lay.Run, ".legacy-"+layout.RunByName)
	if os.Rename(old, aside) != nil {
		return
	}
	if err := os.Mkdir(old, layout.PrivateDir); err == nil {
		err = os.Rename(aside, filepath.Join(old, layout.RunByName))
		if err == nil {
			return
		}
	}
	m.log.Warn("move run directory of an earlier hypefs", "instance", layout.RunByName)
}

func isGone(err error) bool {
	return errors.Is(err, client.ErrNoVM) || errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED)
}
