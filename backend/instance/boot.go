package instance

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"hypefs/backend/guest"
	"hypefs/backend/host"
	"hypefs/backend/layout"
	"hypefs/internal/atomicfile"
	"hypefs/internal/bootid"
	"hypefs/internal/cleanup"
	"hypefs/internal/errno"
	"hypefs/shim/api"
	"hypefs/shim/client"
	"hypefs/shim/engine"
)

// shimReadyTimeout bounds how long a shim may take to start its hypervisor.
const shimReadyTimeout = 60 * time.Second

// start boots the instance in the background: the caller's write returns
// at once with the instance in booting; a failure moves it to error with
// a sentence saying what is missing and how to get it.
func (i *Instance) start() error {
	i.mu.Lock()
	if i.deleted {
		i.mu.Unlock()
		return errno.Errorf(syscall.ENOENT, "instance %q was removed", i.name)
	}
	if i.boot != nil || live(i.rec.State) {
		i.mu.Unlock()
		return nil
	}
	ctx, cancel := context.WithTimeout(i.m.ctx, 5*time.Minute)
	b := &bootJob{cancel: cancel, done: make(chan struct{}), attached: make(chan struct{})}
	i.boot = b
	i.rec.State = Booting
	i.rec.Changed = time.Now().UTC()
	i.setErrorLocked("boot", "")
	i.rec.Exit = nil
	cfg := *i.rec.Config
	i.saveLocked()
	i.mu.Unlock()
	i.m.changed(i.name, Booting, "starting")
	i.m.wg.Add(1)
	go func() {
		defer i.m.wg.Done()
		defer close(b.done)
		defer cancel()
		err := i.bootVM(ctx, cfg)
		i.mu.Lock()
		i.boot = nil
		state := ""
		if err != nil && !i.deleted {
			state = Failed
			if b.killed {
				state = Stopped
				err = errors.New("the boot was cancelled by " + b.killedBy + " before the VM started")
			}
			i.rec.State = state
			i.rec.Changed = time.Now().UTC()
			cause := "boot"
			if b.killed {
				cause = ctlCause(b.killedBy)
			}
			i.setErrorLocked(cause, err.Error())
			i.saveLocked()
		}
		i.mu.Unlock()
		if state != "" {
			i.m.log.Warn("boot did not complete", "instance", i.name, "err", err)
			i.m.changed(i.name, state, err.Error())
		}
	}()
	return nil
}

// bootJob is a boot being set up (before the shim says the VM runs).
type bootJob struct {
	cancel   context.CancelFunc
	done     chan struct{}
	attached chan struct{} // closed once the shim runs: its console exists
	upOnce   sync.Once
	killed   bool   // under Instance.mu
	killedBy string // "kill" or "shutdown"
}

// shimUp says that the shim runs and its console can be dialled.
func (j *bootJob) shimUp() { j.upOnce.Do(func() { close(j.attached) }) }

// cancelBoot stops a boot being set up and waits until it has given up
// (or finished: then the VM runs and the caller deals with it).
func (i *Instance) cancelBoot(by string) {
	i.mu.Lock()
	b := i.boot
	if b != nil {
		b.killed, b.killedBy = true, by
	}
	i.mu.Unlock()
	if b != nil {
		b.cancel()
		<-b.done
	}
}

// errBootCancelled is what a boot cancelled during its set-up ends with.
var errBootCancelled = errors.New("the boot was cancelled before the VM started")

// bootVM prepares the guest, starts the shim and waits until it says the
// hypervisor runs. It is a list of named steps; what a step makes (the
// parts' share, the run directory, the shim) is undone through one
// cleanup stack when a later step fails. Cancelling ctx (kill during
// set-up) gives up at the next step, ending a shim that was already
// started.
func (i *Instance) bootVM(ctx context.Context, cfg Config) error {
	b := &boot{i: i, m: i.m, ctx: ctx, cfg: cfg}
	var undo cleanup.Stack
	defer undo.Unwind()
	for _, step := range []func(*cleanup.Stack) error{
		b.resolve, b.prepareGuest, b.prepareParts, b.makeRunDir, b.writeShimConfig, b.spawn, b.follow,
	} {
		if err := step(&undo); err != nil {
			return err
		}
	}
	undo.Release()
	return nil
}

// boot is one boot being set up: what its steps found and made.
type boot struct {
	i   *Instance
	m   *Manager
	ctx context.Context
	cfg Config

	accel   string
	shimBin string
	guest   *guest.Boot
	cmdline string
	plan    *Plan
	runDir  string
	shim    api.Config
	cfgPath string
}

// resolve checks what the boot needs from the host: the accelerator and
// the shim binary.
func (b *boot) resolve(*cleanup.Stack) error {
	accel, err := host.ResolveAccel(b.cfg.Accel)
	if err != nil {
		return err
	}
	b.accel = accel
	b.shimBin = filepath.Join(b.m.binDir, "hypefs-shim")
	if _, err := os.Stat(b.shimBin); err != nil {
		return fmt.Errorf("cannot start the VM: %s is missing (hint: run \"make build\")", b.shimBin)
	}
	return nil
}

// prepareGuest finds the kernel and builds the initramfs.
func (b *boot) prepareGuest(*cleanup.Stack) error {
	gb, err := guest.Prepare(b.ctx, guest.Options{KernelsDir: b.m.lay.Kernels, Init: filepath.Join(b.m.binDir, "hypefs-init"), Busybox: b.m.busybox, Arch: runtime.GOARCH})
	if err != nil {
		return fmt.Errorf("cannot start the VM: %w", err)
	}
	b.guest, b.cmdline = gb, gb.Cmdline
	if f := host.Probe(); b.accel == "tcg" && f.TSCkHz > 0 && runtime.GOARCH == "amd64" {
		// microvm under TCG hangs calibrating the TSC without it.
		b.cmdline += " tsc_early_khz=" + strconv.Itoa(f.TSCkHz)
	}
	return nil
}

// prepareParts lets every part (image, network) add to the plan; if the
// boot fails from here on, every part is told the VM is over.
func (b *boot) prepareParts(undo *cleanup.Stack) error {
	undo.Push(b.i.partsEnded)
	b.plan = &Plan{Facts: map[string]string{}, Owner: b.i.owner}
	for _, p := range b.m.parts {
		if err := p.Prepare(b.ctx, b.i.name, b.cfg, b.plan); err != nil {
			return err
		}
	}
	b.i.mu.Lock()
	b.i.rec.Facts = b.plan.Facts
	b.i.mu.Unlock()
	for _, a := range b.plan.Cmdline {
		b.cmdline += " " + a
	}
	return nil
}

// makeRunDir makes a fresh run directory (and the engine's e/ in it).
func (b *boot) makeRunDir(undo *cleanup.Stack) error {
	b.runDir = b.m.lay.RunDir(b.i.name)
	os.RemoveAll(b.runDir)
	if err := os.MkdirAll(filepath.Join(b.runDir, layout.EngineDir), layout.PrivateDir); err != nil {
		return fmt.Errorf("create run directory: %w", err)
	}
	undo.Push(func() { os.RemoveAll(b.runDir) })
	return nil
}

// writeShimConfig writes what the shim is to run.
func (b *boot) writeShimConfig(*cleanup.Stack) error {
	i, lay, dir := b.i, b.m.lay, b.runDir
	b.shim = api.Config{
		Engine: engine.Spec{
			Name: i.name, RunDir: filepath.Join(dir, layout.EngineDir),
			Kernel: b.guest.Kernel, Initramfs: b.guest.Initramfs, Cmdline: b.cmdline,
			CPUs: b.cfg.CPUs, MemoryMiB: b.cfg.MemoryMiB(), Accel: b.accel,
			VMMLog: i.VMMLogPath(), LogMax: b.m.logMax, Disks: b.plan.Disks, NICs: b.plan.NICs,
			User: b.m.hvUser,
		},
		LogMax:        b.m.logMax,
		APISocket:     filepath.Join(dir, layout.APISock),
		ConsoleSocket: filepath.Join(dir, layout.ConsoleSock),
		VsockSocket:   filepath.Join(dir, layout.VsockSock),
		LogPath:       i.LogPath(),
		RecordPath:    filepath.Join(dir, layout.ShimRecord),
		ExitPath:      lay.InstanceFile(i.name, layout.ExitFile),
		MachineIDPath: lay.InstanceFile(i.name, layout.MachineID),
	}
	b.cfgPath = filepath.Join(dir, layout.ShimConfig)
	return atomicfile.WriteJSON(b.cfgPath, b.shim, layout.PrivateFile)
}

// spawn starts the shim, unless the boot was cancelled or the instance
// removed meanwhile; from here on a failure ends that shim.
func (b *boot) spawn(undo *cleanup.Stack) error {
	b.i.mu.Lock()
	gone := b.i.deleted
	b.i.mu.Unlock()
	if gone || b.ctx.Err() != nil {
		return errBootCancelled
	}
	if err := b.i.spawnShim(b.ctx, b.shimBin, b.cfgPath); err != nil {
		return err
	}
	b.i.mu.Lock()
	if j := b.i.boot; j != nil {
		j.shimUp() // console readers waiting for the boot dial it now
	}
	b.i.mu.Unlock()
	undo.Push(func() {
		// The shim runs but cannot be followed: end it rather than
		// leave a VM nobody can see.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		client.New(b.shim.APISocket).ShutdownVMM(ctx)
		cancel()
	})
	return nil
}

// follow reads the shim's record and starts following it.
func (b *boot) follow(*cleanup.Stack) error {
	rec, err := api.ReadRecord(b.shim.RecordPath)
	if err == nil && b.ctx.Err() == nil {
		now := time.Now().UTC()
		b.i.mu.Lock()
		b.i.rec.Started = &now
		b.i.mu.Unlock()
		if b.i.attach(rec) != nil {
			return nil
		}
		err = errors.New("the instance was removed or hypefs is stopping")
	}
	if b.ctx.Err() != nil {
		return errBootCancelled
	}
	return fmt.Errorf("the shim started but cannot be followed: %w", err)
}

// spawnShim starts hypefs-shim detached (own session, plain exec.Command:
// its life is not tied to any context of ours) and waits for its word on
// the ready pipe.
func (i *Instance) spawnShim(ctx context.Context, bin, cfgPath string) error {
	logf, err := os.OpenFile(i.m.lay.InstanceFile(i.name, layout.ShimLog), os.O_WRONLY|os.O_APPEND|os.O_CREATE, layout.PrivateFile)
	if err != nil {
		return fmt.Errorf("open shim log: %w", err)
	}
	defer logf.Close()
	pr, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	defer pr.Close()
	cmd := exec.Command(bin, "--config", cfgPath)
	cmd.Dir = filepath.Dir(cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.ExtraFiles = []*os.File{pw}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		pw.Close()
		return fmt.Errorf("start %s: %w", bin, err)
	}
	pw.Close()
	// Reap the shim when it ends; it is our child while we live.
	go cmd.Wait()
	type answer struct {
		line string
		err  error
	}
	ch := make(chan answer, 1)
	go func() {
		line, err := bufio.NewReader(pr).ReadString('\n')
		ch <- answer{strings.TrimSpace(line), err}
	}()
	select {
	case a := <-ch:
		switch {
		case a.line == "ok":
			return nil
		case strings.HasPrefix(a.line, "error: "):
			return errors.New("cannot start the VM: " + strings.TrimPrefix(a.line, "error: "))
		default:
			return fmt.Errorf("cannot start the VM: the shim ended without a word (see %s)", layout.ShimLog)
		}
	case <-time.After(shimReadyTimeout):
		cmd.Process.Kill()
		return fmt.Errorf("cannot start the VM: the shim did not report ready within %s", shimReadyTimeout)
	case <-ctx.Done():
		// A shim still starting has no VM worth keeping; its QEMU dies
		// with it (parent-death signal).
		cmd.Process.Kill()
		return errBootCancelled
	}
}

// killLeftover ends a hypervisor whose shim died, but only if the process
// with that pid really is the one of this instance: it names this run
// directory (namesRunDir).
func killLeftover(pid int, runDir string) {
	if pid <= 0 || pid == os.Getpid() {
		return
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return
	}
	environ, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if !namesRunDir(cmdline, environ, runDir) {
		return
	}
	// The hypervisor leads its own process group: end all of it.
	syscall.Kill(-pid, syscall.SIGKILL)
	syscall.Kill(pid, syscall.SIGKILL)
}

// namesRunDir reports whether a process (its NUL-separated command line
// and environment) belongs to the run directory dir: its environment
// sets engine.RunDirEnv to dir or a path under it, or an argument, or a
// value in one of QEMU's key=value,... options, is dir or a path under
// it. A mere prefix does not count: RUN/i/web is not RUN/i/web2.
func namesRunDir(cmdline, environ []byte, dir string) bool {
	dir = filepath.Clean(dir)
	under := func(p string) bool { return p == dir || strings.HasPrefix(p, dir+"/") }
	for _, kv := range strings.Split(string(environ), "\x00") {
		if v, ok := strings.CutPrefix(kv, engine.RunDirEnv+"="); ok && under(v) {
			return true
		}
	}
	for _, arg := range strings.Split(string(cmdline), "\x00") {
		if under(arg) {
			return true
		}
		for _, o := range strings.Split(arg, ",") {
			if _, v, ok := strings.Cut(o, "="); ok && under(v) {
				return true
			}
		}
	}
	return false
}

// reattach finds the shim of an instance that was live when the daemon
// last ran. A shim is declared gone only when its socket is missing or
// refuses, or it belongs to an earlier boot of the host; a shim that does
// not answer in time is kept and asked again later.
func (m *Manager) reattach(i *Instance) {
	rec, err := api.ReadRecord(m.lay.RunFile(i.name, layout.ShimRecord))
	if err != nil {
		i.settleMissing("the VM was not running when hypefs started (no shim record)")
		return
	}
	if id := bootid.Current(); id != "" && rec.BootID != "" && id != rec.BootID {
		i.settleMissing("the host restarted since the VM last ran")
		return
	}
	c := client.New(m.lay.RunFile(i.name, layout.APISock))
	if rec.APIVersion != api.APIVersion {
		m.endForeign(i, rec, c)
		return
	}
	if m.tryAttach(i, rec, c) {
		c.Close()
		return
	}
	m.log.Warn("shim does not answer yet; keeping it and retrying", "instance", i.name)
	// Do not hold up the daemon's start: go on in the background.
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		defer c.Close()
		for {
			select {
			case <-m.ctx.Done():
				return
			case <-time.After(time.Second):
			}
			if m.tryAttach(i, rec, c) {
				return
			}
		}
	}()
}

// endForeign ends the VM of a shim that speaks another version of the
// daemon/shim protocol (one started by another hypefs): this daemon cannot
// follow it, and a VM nobody can see must not keep running. vmm.shutdown
// is Cloud Hypervisor's and means the same in every version.
func (m *Manager) endForeign(i *Instance, rec *api.Record, c *client.Client) {
	ctx, cancel := context.WithTimeout(m.ctx, 10*time.Second)
	err := c.ShutdownVMM(ctx)
	cancel()
	c.Close()
	if err != nil && !isGone(err) {
		m.log.Warn("shim of another protocol version did not end", "instance", i.name, "shim_pid", rec.ShimPID, "err", err)
	}
	i.settleMissing(fmt.Sprintf("the VM ran under a shim of protocol version %d (pid %d), which this hypefs (version %d) cannot follow, so it was ended (hint: echo start > ctl)",
		rec.APIVersion, rec.ShimPID, api.APIVersion))
}

// tryAttach asks a shim for its status once: it attaches to a shim that
// answers, settles one that is gone, and reports false only when the
// shim did not answer in time (not proof of death: ask again).
func (m *Manager) tryAttach(i *Instance, rec *api.Record, c *client.Client) bool {
	ctx, cancel := context.WithTimeout(m.ctx, 2*time.Second)
	_, err := c.Status(ctx)
	cancel()
	switch {
	case err == nil:
		i.attach(rec)
	case m.ctx.Err() != nil:
	case isGone(err):
		i.settleGone(rec)
	default:
		return false
	}
	return true
}

// settleMissing ends an instance whose shim cannot exist any more.
func (i *Instance) settleMissing(why string) {
	i.mu.Lock()
	i.setErrorLocked("restart", why)
	i.mu.Unlock()
	os.RemoveAll(i.m.lay.RunDir(i.name))
	i.partsEnded()
	i.setState(Stopped, why)
}

// partsEnded tells every part that this instance's VM is over.
func (i *Instance) partsEnded() {
	for _, p := range i.m.parts {
		p.Ended(i.name)
	}
}

// settleGone settles a run whose shim was already gone when the daemon
// came to look for it.
func (i *Instance) settleGone(rec *api.Record) {
	r := &run{rec: rec, client: client.New(i.m.lay.RunFile(i.name, layout.APISock)), cancel: func() {},
		settled: make(chan struct{}), applied: make(chan struct{})}
	i.mu.Lock()
	i.cur = r
	i.mu.Unlock()
	i.settle(r)
	close(r.settled)
}
