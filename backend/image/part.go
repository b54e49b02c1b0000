package image

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"hypefs/backend/instance"
	"hypefs/backend/layout"
	"hypefs/internal/errno"
	"hypefs/internal/runcfg"
	"hypefs/shim/engine"
)

// Part returns the store's instance.Part: it puts an image's disks into
// a boot plan.
func (s *Store) Part() instance.Part { return part{s} }

type part struct{ s *Store }

type using struct {
	Ref    string `json:"ref"`
	Digest string `json:"digest"`
}

// Prepare pulls the image if needed and adds three disks: the image's
// read-only base, the instance's writable layer and the run config.
func (p part) Prepare(ctx context.Context, inst string, cfg instance.Config, plan *instance.Plan) error {
	if cfg.Image == "" {
		return nil
	}
	s := p.s
	start := time.Now()
	defer func() { s.opt.Log.Debug("image part prepared", "instance", inst, "took", time.Since(start)) }()
	e, err := s.Get(ctx, cfg.Image, plan.Owner.UID)
	if err != nil {
		if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			return errno.Errorf(syscall.ETIMEDOUT, "pulling image %s took longer than a boot may wait; the pull goes on: watch images/…/progress, then start the instance again (echo start > ctl)", cfg.Image)
		}
		return err
	}
	// Claim the image before anything slow, so that an rm from now on
	// sees it in use; one that came before is seen here.
	s.use(inst, e.Digest)
	if _, err := os.Stat(filepath.Join(s.ImageDir(e.Digest), layout.ImageRootfs)); err != nil {
		return errno.Errorf(syscall.ENOENT, "image %s was removed while the instance was starting; start it again to pull it anew", e.Ref)
	}
	dir := s.opt.InstanceDir(inst)
	diskMiB, err := instance.SizeMiB(cfg.Disk)
	if err != nil {
		return errno.Errorf(syscall.EINVAL, "config key \"disk\": %v", err)
	}
	if need := (e.Size*5/4 + 8<<20) >> 20; diskMiB < need {
		return errno.Errorf(syscall.ENOSPC, "disk %s is too small for image %s, whose files take %d MiB: set \"disk\" to at least %dM", cfg.Disk, e.Ref, e.Size>>20, need)
	}
	var oc v1.ConfigFile
	if len(e.Config) > 0 {
		if err := json.Unmarshal(e.Config, &oc); err != nil {
			return errno.Errorf(syscall.EIO, "image %s has an unreadable config (%v); pull it again", e.Ref, err)
		}
	}
	rc := runConfig(oc.Config, cfg)
	rc.Image, rc.Digest = e.Ref, e.Digest
	if len(rc.Args) == 0 {
		return errno.Errorf(syscall.EINVAL, "image %s names no program to run (no entrypoint or cmd): set \"cmd\" in the config", e.Ref)
	}
	rw := filepath.Join(dir, layout.WritableDisk)
	// The writable layer belongs to one image: on another image's base
	// its changes would make no sense, so a new image starts afresh.
	var prev using
	if b, err := os.ReadFile(filepath.Join(dir, layout.ImageInUse)); err == nil && json.Unmarshal(b, &prev) == nil &&
		prev.Digest != "" && prev.Digest != e.Digest {
		s.opt.Log.Info("instance's image changed; starting with an empty writable layer", "instance", inst, "from", prev.Digest, "to", e.Digest)
		os.Remove(rw)
	}
	if err := ensureWritable(ctx, rw, diskMiB); err != nil {
		return err
	}
	b, err := runcfg.Encode(rc)
	if err != nil {
		return err
	}
	rcPath := filepath.Join(dir, layout.RunConfigDisk)
	if err := os.WriteFile(rcPath, b, layout.PrivateFile); err != nil {
		return fmt.Errorf("write run config: %w", err)
	}
	u, _ := json.Marshal(using{Ref: e.Ref, Digest: e.Digest})
	os.WriteFile(filepath.Join(dir, layout.ImageInUse), u, layout.PrivateFile)
	plan.Disks = append(plan.Disks,
		engine.Disk{Path: filepath.Join(s.ImageDir(e.Digest), layout.ImageRootfs), ReadOnly: true},
		engine.Disk{Path: rw, ReadOnly: false},
		engine.Disk{Path: rcPath, ReadOnly: true})
	plan.Cmdline = append(plan.Cmdline, "hypefs.run=image")
	plan.Facts["image"] = e.Ref
	plan.Facts["digest"] = e.Digest
	return nil
}

// Ended forgets that the instance's VM uses its image.
func (p part) Ended(inst string) { p.s.release(inst) }

// Deleted removes the instance's writable layer and run config.
func (p part) Deleted(inst string) {
	p.s.release(inst)
	dir := p.s.opt.InstanceDir(inst)
	for _, f := range []string{layout.WritableDisk, layout.RunConfigDisk, layout.ImageInUse} {
		os.Remove(filepath.Join(dir, f))
	}
}

// Reconcile marks the images of VMs that survived a daemon restart as in use.
func (p part) Reconcile(live map[string]bool) {
	for inst, ok := range live {
		if !ok {
			continue
		}
		b, err := os.ReadFile(filepath.Join(p.s.opt.InstanceDir(inst), layout.ImageInUse))
		var u using
		if err == nil && json.Unmarshal(b, &u) == nil && u.Digest != "" {
			p.s.use(inst, u.Digest)
		}
	}
}

// runConfig merges the image's config with the instance's overrides, the
// way docker run does: an entrypoint override drops the image's cmd; env
// adds to (and overrides) the image's.
func runConfig(ic v1.Config, cfg instance.Config) runcfg.Config {
	ep, cmd := ic.Entrypoint, ic.Cmd
	if cfg.Entrypoint != nil {
		ep, cmd = cfg.Entrypoint, nil
	}
	if cfg.Cmd != nil {
		cmd = cfg.Cmd
	}
	args := append(append([]string{}, ep...), cmd...)
	env := map[string]string{}
	var order []string
	for _, kv := range ic.Env {
		k, v, _ := strings.Cut(kv, "=")
		if _, ok := env[k]; !ok {
			order = append(order, k)
		}
		env[k] = v
	}
	keys := make([]string, 0, len(cfg.Env))
	for k := range cfg.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if _, ok := env[k]; !ok {
			order = append(order, k)
		}
		env[k] = cfg.Env[k]
	}
	if _, ok := env["PATH"]; !ok {
		env["PATH"] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
		order = append([]string{"PATH"}, order...)
	}
	var envl []string
	for _, k := range order {
		envl = append(envl, k+"="+env[k])
	}
	wd := ic.WorkingDir
	if cfg.Workdir != "" {
		wd = cfg.Workdir
	}
	if wd == "" {
		wd = "/"
	}
	return runcfg.Config{Args: args, Env: envl, Workdir: wd, User: ic.User}
}

// ensureWritable makes the instance's writable layer: a sparse file of
// the configured size holding an empty ext4. An existing one is kept
// (with what the guest wrote to it); when the config asks for more
// room, it grows.
func ensureWritable(ctx context.Context, path string, mib int64) error {
	want := mib << 20
	if fi, err := os.Stat(path); err == nil {
		if fi.Size() < want {
			if err := os.Truncate(path, want); err != nil {
				return fmt.Errorf("grow the writable disk: %w", err)
			}
			if out, err := exec.CommandContext(ctx, "resize2fs", "-f", path).CombinedOutput(); err != nil {
				return fmt.Errorf("grow the writable disk: resize2fs: %w: %s", err, strings.TrimSpace(string(out)))
			}
		}
		return nil
	}
	tmp := path + ".tmp"
	os.Remove(tmp)
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_EXCL, layout.PrivateFile)
	if err != nil {
		return fmt.Errorf("create the writable disk: %w", err)
	}
	err = f.Truncate(want)
	f.Close()
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("create the writable disk: %w", err)
	}
	bin, lerr := exec.LookPath("mkfs.ext4")
	if lerr != nil {
		os.Remove(tmp)
		return fmt.Errorf("cannot make the writable disk: mkfs.ext4 is missing (hint: run \"make deps\")")
	}
	// The overlay's upper/ and work/ are made here too: the guest then
	// has nothing to create at first boot.
	seed, err := os.MkdirTemp(filepath.Dir(path), ".seed-")
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("create the writable disk: %w", err)
	}
	defer os.RemoveAll(seed)
	os.Mkdir(filepath.Join(seed, "upper"), 0o755)
	os.Mkdir(filepath.Join(seed, "work"), 0o755)
	out, err := exec.CommandContext(ctx, bin, "-q", "-F", "-L", "hypefs-rw", "-m", "0", "-d", seed,
		"-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard", tmp).CombinedOutput()
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("cannot make the writable disk: mkfs.ext4: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return os.Rename(tmp, path)
}
