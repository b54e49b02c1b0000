package guest

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// apt runs apt-get and apt-cache, either against the host's own package
// lists (the host's architecture) or against private lists of another
// architecture.
//
// A private apt leaves the host's apt and dpkg configuration alone: no
// "dpkg --add-architecture", no new lists in /var/lib/apt. It reads the
// host's sources (/etc/apt/sources.list and sources.list.d, in place) and
// keyrings, copies the host's Acquire:: settings (proxies, Check-Valid-
// Until, ...), and keeps everything else in a temporary directory:
//
//	apt.conf          APT_CONFIG: the settings below
//	state/status      empty: apt sees no installed packages
//	state/lists/      the other architecture's package lists
//	cache/            pkgcache.bin, archives/partial
//
// The host's apt.conf.d is not read, on purpose: it holds hooks such as
// APT::Update::Post-Invoke (docker-clean, packagekit, appstream) that act
// on the host's caches and must not run for these private lists.
type apt struct {
	arch string
	dir  string   // private state; "" for the host's apt
	env  []string // APT_CONFIG=..., or nil
	// updateErr is how a private "apt-get update" failed. An unreachable
	// third-party source fails it but may not matter, so lookups report
	// it only when they fail too.
	updateErr error
}

// newApt returns an apt for arch: the host's when arch is the host's dpkg
// architecture, else a private one whose lists it downloads first
// ("apt-get update", a few seconds). Call close when done.
func newApt(ctx context.Context, arch string) (*apt, error) {
	if _, err := exec.LookPath("apt-get"); err != nil {
		return nil, fmt.Errorf("guest kernels come from Debian packages and need apt-get: %w (run \"hypefs kernel fetch --arch %s\" on a Debian or Ubuntu machine and copy the kernels directory)", err, arch)
	}
	if hostArch(ctx) == arch {
		return &apt{arch: arch}, nil
	}
	a, err := privateApt(ctx, arch)
	if err != nil {
		return nil, err
	}
	if out, err := a.command(ctx, "apt-get", "update").CombinedOutput(); err != nil {
		a.updateErr = fmt.Errorf("apt-get update (%s lists): %w: %s", arch, err, lastLines(out, 5))
	}
	return a, nil
}

func privateApt(ctx context.Context, arch string) (*apt, error) {
	dir, err := os.MkdirTemp("", "hypefs-apt-"+arch+"-")
	if err != nil {
		return nil, err
	}
	a := &apt{arch: arch, dir: dir}
	fail := func(err error) (*apt, error) {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("private apt for %s: %w", arch, err)
	}
	// apt downloads as the unprivileged _apt user, which must be able to
	// reach the lists and the download directory.
	if err := os.Chmod(dir, 0o755); err != nil {
		return fail(err)
	}
	for _, d := range []string{"etc/apt.conf.d", "etc/preferences.d", "state/lists/partial", "cache/archives/partial", "log"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return fail(err)
		}
	}
	for _, f := range []string{"state/status", "etc/main.conf"} {
		if err := os.WriteFile(filepath.Join(dir, f), nil, 0o644); err != nil {
			return fail(err)
		}
	}
	dump, err := exec.CommandContext(ctx, "apt-config", "dump").Output()
	if err != nil {
		return fail(fmt.Errorf("apt-config dump: %w", err))
	}
	conf := privateAptConfig(dir, arch, dump, os.Geteuid() == 0)
	if err := os.WriteFile(filepath.Join(dir, "apt.conf"), []byte(conf), 0o644); err != nil {
		return fail(err)
	}
	a.env = append(os.Environ(), "APT_CONFIG="+filepath.Join(dir, "apt.conf"))
	return a, nil
}

// privateAptConfig is the APT_CONFIG file of a private apt in dir:
// hostDump's Acquire:: settings (apt-config dump output), except the
// index targets and changelog URIs that other packages add, then the
// private directories and the architecture. As root, downloads stay
// root's: the temp dir belongs to root, and apt would otherwise warn
// and do the same.
func privateAptConfig(dir, arch string, hostDump []byte, root bool) string {
	var b strings.Builder
	sc := bufio.NewScanner(bytes.NewReader(hostDump))
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, "Acquire::") &&
			!strings.HasPrefix(l, "Acquire::IndexTargets") &&
			!strings.HasPrefix(l, "Acquire::Changelogs") {
			b.WriteString(l + "\n")
		}
	}
	q := func(p string) string { return fmt.Sprintf("%q", filepath.Join(dir, p)) }
	fmt.Fprintf(&b, "Dir::State %s;\nDir::State::status %s;\nDir::Cache %s;\nDir::Log %s;\n",
		q("state"), q("state/status"), q("cache"), q("log"))
	fmt.Fprintf(&b, "Dir::Etc::Parts %s;\nDir::Etc::main %s;\nDir::Etc::Preferences %s;\nDir::Etc::PreferencesParts %s;\n",
		q("etc/apt.conf.d"), q("etc/main.conf"), q("etc/preferences"), q("etc/preferences.d"))
	fmt.Fprintf(&b, "APT::Architecture %q;\nAPT::Architectures { %q; };\n", arch, arch)
	if root {
		b.WriteString("APT::Sandbox::User \"root\";\n")
	}
	return b.String()
}

func (a *apt) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = a.env
	return cmd
}

func (a *apt) close() {
	if a != nil && a.dir != "" {
		os.RemoveAll(a.dir)
	}
}

// hint says how to refresh the lists this apt uses.
func (a *apt) hint() string {
	if a.updateErr != nil {
		return a.updateErr.Error()
	}
	if a.dir != "" {
		return fmt.Sprintf("private %s lists, updated just now from the host's sources in /etc/apt", a.arch)
	}
	return `hint: run "apt-get update"`
}

// download fetches the packages' .deb files into dir, never installing
// them.
func (a *apt) download(ctx context.Context, dir string, pkgs ...string) error {
	cmd := a.command(ctx, "apt-get", append([]string{"download"}, pkgs...)...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("apt-get download %s (%s): %w: %s (%s)", strings.Join(pkgs, " "), a.arch, err, bytes.TrimSpace(out), a.hint())
	}
	return nil
}

// lastLines returns up to n last lines of out, for error messages.
func lastLines(out []byte, n int) string {
	ls := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	return strings.Join(ls, " / ")
}
