//go:build linux

package main

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"hypefs/internal/rootpath"
	"hypefs/internal/runcfg"
)

// Where the image's disks are mounted in the initramfs.
const (
	imgLower = "/mnt/lower" // the image's read-only base (erofs)
	imgRW    = "/mnt/rw"    // the instance's writable disk (ext4): upper/ and work/
	imgRoot  = "/mnt/root"  // overlayfs of the two: the program's root
)

// exitLine is what hosts read the program's exit code from; keep it stable.
const exitLine = "hypefs: exit status %d"

// imageDisks are the block devices that hypefs.run=image boots with,
// found by their content (virtio-mmio probe order is not the order the
// host listed them in).
type imageDisks struct {
	lower, rw, cfg string
}

func findImageDisks(timeout time.Duration) (imageDisks, error) {
	var d imageDisks
	deadline := time.Now().Add(timeout)
	for {
		d = imageDisks{}
		devs, _ := filepath.Glob("/sys/block/vd*")
		for _, s := range devs {
			dev := "/dev/" + filepath.Base(s)
			head := make([]byte, 4096)
			f, err := os.Open(dev)
			if err != nil {
				continue
			}
			n, _ := f.ReadAt(head, 0)
			f.Close()
			head = head[:n]
			switch {
			case runcfg.IsConfig(head):
				d.cfg = dev
			case len(head) >= 1028 && binary.LittleEndian.Uint32(head[1024:]) == 0xE0F5E1E2:
				d.lower = dev
			case len(head) >= 1082 && binary.LittleEndian.Uint16(head[1080:]) == 0xEF53:
				d.rw = dev
			}
		}
		if d.lower != "" && d.rw != "" && d.cfg != "" {
			return d, nil
		}
		if time.Now().After(deadline) {
			return d, fmt.Errorf("image disks missing (base %q, writable %q, run config %q)", d.lower, d.rw, d.cfg)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// mountImage mounts the image's root: overlayfs with the read-only base
// below and the writable disk's upper/ above, plus /dev, /proc and /sys
// bound into it.
func mountImage(d imageDisks) error {
	for _, p := range []string{imgLower, imgRW, imgRoot} {
		if err := os.MkdirAll(p, 0o755); err != nil {
			return err
		}
	}
	if err := unix.Mount(d.lower, imgLower, "erofs", unix.MS_RDONLY, ""); err != nil {
		return fmt.Errorf("mount the image's base disk %s (erofs): %w", d.lower, err)
	}
	// noinit_itable: no background zeroing of inode tables, which would
	// compete with the program for the (emulated) CPU; the host made the
	// disk from a sparse file, whose unwritten tables read as zeros.
	if err := unix.Mount(d.rw, imgRW, "ext4", unix.MS_NOATIME, "noinit_itable"); err != nil {
		return fmt.Errorf("mount the writable disk %s (ext4): %w", d.rw, err)
	}
	for _, p := range []string{imgRW + "/upper", imgRW + "/work"} {
		if err := os.MkdirAll(p, 0o755); err != nil {
			return fmt.Errorf("writable disk: %w", err)
		}
	}
	opts := "lowerdir=" + imgLower + ",upperdir=" + imgRW + "/upper,workdir=" + imgRW + "/work"
	if err := unix.Mount("overlay", imgRoot, "overlay", 0, opts); err != nil {
		return fmt.Errorf("mount overlayfs: %w", err)
	}
	for _, m := range []string{"/dev", "/proc", "/sys"} {
		p, err := rootpath.Resolve(imgRoot, m, true)
		if err != nil {
			return err
		}
		os.MkdirAll(p, 0o755)
		if err := unix.Mount(m, p, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind %s into the image: %w", m, err)
		}
	}
	// The guest's name servers (written by the network set-up), as
	// container runtimes provide them: bound over the image's file.
	if _, err := os.Stat("/etc/resolv.conf"); err == nil {
		if p, err := rootpath.Resolve(imgRoot, "/etc/resolv.conf", false); err == nil {
			if fi, err := os.Lstat(p); err != nil || !fi.Mode().IsRegular() {
				os.Remove(p)
				os.MkdirAll(filepath.Dir(p), 0o755)
				os.WriteFile(p, nil, 0o644)
			}
			if err := unix.Mount("/etc/resolv.conf", p, "", unix.MS_BIND, ""); err != nil {
				fmt.Printf("hypefs: bind /etc/resolv.conf into the image: %v\n", err)
			}
		}
	}
	if p, err := rootpath.Resolve(imgRoot, "/tmp", true); err == nil {
		if _, err := os.Stat(p); os.IsNotExist(err) {
			os.Mkdir(p, 0o1777)
			os.Chmod(p, 0o1777|os.ModeSticky)
		}
	}
	return nil
}

// runImage runs the image's program (hypefs.run=image): it mounts the
// root, starts entrypoint+cmd chrooted into it on the console tty with
// the image's env, workdir and user, and when it ends prints
// "hypefs: exit status N" (128+signal when a signal killed it).
func runImage(r *reaper) (<-chan string, error) {
	d, err := findImageDisks(5 * time.Second)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(d.cfg)
	if err != nil {
		return nil, fmt.Errorf("run config: %w", err)
	}
	rc, err := runcfg.Decode(b)
	if err != nil {
		return nil, err
	}
	if err := mountImage(d); err != nil {
		return nil, err
	}
	pid, err := startProgram(imgRoot, rc)
	if err != nil {
		code := 126
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ENOENT) {
			code = 127
		}
		fmt.Printf("hypefs: cannot run %q: %v\n", rc.Args[0], err)
		fmt.Printf(exitLine+"\n", code)
		ch := make(chan string, 1)
		ch <- fmt.Sprintf("program did not start: exit status %d", code)
		return ch, nil
	}
	out := make(chan string, 1)
	w := r.wait(pid)
	go func() {
		how := <-w
		fmt.Printf(exitLine+"\n", exitCode(how))
		out <- "program exited: " + how
	}()
	return out, nil
}

var signalRE = regexp.MustCompile(`signal (\d+)\)`)

// exitCode turns the reaper's description into a shell-style code.
func exitCode(how string) int {
	if n, ok := strings.CutPrefix(how, "status "); ok {
		if c, err := strconv.Atoi(n); err == nil {
			return c
		}
	}
	if m := signalRE.FindStringSubmatch(how); m != nil {
		n, _ := strconv.Atoi(m[1])
		return 128 + n
	}
	return 255
}

// startProgram starts rc's program chrooted into root.
func startProgram(root string, rc runcfg.Config) (int, error) {
	env := rc.Env
	cred, home, err := lookupUser(root, rc.User)
	if err != nil {
		return 0, err
	}
	if !hasEnv(env, "HOME") {
		env = append(env, "HOME="+home)
	}
	if !hasEnv(env, "HOSTNAME") {
		if h, err := os.Hostname(); err == nil {
			env = append(env, "HOSTNAME="+h)
		}
	}
	argv0, err := lookPath(root, rc.Args[0], env)
	if err != nil {
		return 0, err
	}
	wd := rc.Workdir
	if wd == "" {
		wd = "/"
	}
	if p, err := rootpath.Resolve(root, wd, true); err == nil {
		if _, err := os.Stat(p); os.IsNotExist(err) {
			os.MkdirAll(p, 0o755)
		}
	}
	tty, err := os.OpenFile(consoleTTY(), os.O_RDWR, 0)
	if err != nil {
		return 0, err
	}
	defer tty.Close()
	p, err := os.StartProcess(argv0, rc.Args, &os.ProcAttr{
		Dir:   wd,
		Env:   env,
		Files: []*os.File{tty, tty, tty},
		Sys: &syscall.SysProcAttr{Chroot: root, Setsid: true, Setctty: true, Ctty: 0,
			Credential: cred},
	})
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			return 0, pe.Err
		}
		return 0, err
	}
	pid := p.Pid
	p.Release() // the reaper waits for it
	return pid, nil
}

func hasEnv(env []string, k string) bool {
	for _, kv := range env {
		if strings.HasPrefix(kv, k+"=") {
			return true
		}
	}
	return false
}

// lookPath finds a program inside root: a name with a slash is taken as
// it is, a bare name is searched in PATH (from env), as execvp does.
func lookPath(root, name string, env []string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	path := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
		}
	}
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			dir = "."
		}
		cand := filepath.Join(dir, name)
		p, err := rootpath.Resolve(root, cand, true)
		if err != nil {
			continue
		}
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return cand, nil
		}
	}
	return "", fmt.Errorf("%s not found in PATH (%s): %w", name, path, os.ErrNotExist)
}

// lookupUser reads "user[:group]" (names or numbers) against the image's
// /etc/passwd and /etc/group, and returns the credential and home.
func lookupUser(root, spec string) (*syscall.Credential, string, error) {
	if spec == "" {
		spec = "root"
	}
	user, group, hasGroup := strings.Cut(spec, ":")
	passwd := readDB(root, "/etc/passwd")
	uid, gid, home := -1, 0, "/"
	for _, f := range passwd {
		if len(f) < 6 {
			continue
		}
		if f[0] == user || f[2] == user {
			uid, _ = strconv.Atoi(f[2])
			gid, _ = strconv.Atoi(f[3])
			home = f[5]
			user = f[0]
			break
		}
	}
	if uid < 0 && user == "root" {
		user = "0" // no USER, or USER root, in an image without /etc/passwd (FROM scratch): uid 0, as Docker runs it
	}
	if uid < 0 {
		n, err := strconv.Atoi(user)
		if err != nil {
			return nil, "", fmt.Errorf("user %q is not in the image's /etc/passwd", user)
		}
		uid = n
		if uid == 0 {
			home = "/root"
		}
	}
	groups := readDB(root, "/etc/group")
	if hasGroup {
		found := false
		for _, f := range groups {
			if len(f) >= 3 && (f[0] == group || f[2] == group) {
				gid, _ = strconv.Atoi(f[2])
				found = true
				break
			}
		}
		if !found {
			n, err := strconv.Atoi(group)
			if err != nil {
				return nil, "", fmt.Errorf("group %q is not in the image's /etc/group", group)
			}
			gid = n
		}
	}
	var sup []uint32
	for _, f := range groups {
		if len(f) < 4 {
			continue
		}
		for _, m := range strings.Split(f[3], ",") {
			if m != "" && m == user {
				if g, err := strconv.Atoi(f[2]); err == nil {
					sup = append(sup, uint32(g))
				}
			}
		}
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: sup}, home, nil
}

func readDB(root, name string) [][]string {
	p, err := rootpath.Resolve(root, name, true)
	if err != nil {
		return nil
	}
	f, err := os.Open(p)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out [][]string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := sc.Text()
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		out = append(out, strings.Split(l, ":"))
	}
	return out
}
