package main

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/user"
	"strconv"
	"strings"
	"syscall"

	"hypefs/backend/instance"
	"hypefs/backend/layout"
	"hypefs/internal/logcap"
	"hypefs/shim/engine"
)

// DefaultGroup is the group whose members may use the tree.
const DefaultGroup = "hypefs"

// DedicatedQEMUUser is who QEMU runs as when that user exists; else nobody.
const DedicatedQEMUUser = "hypefs-qemu"

// limitFlags are the flags that say who may use the tree and what bounds
// hold (docs/security.md).
type limitFlags struct {
	group      string
	qemuUser   string
	imageMax   string
	maxPulls   int
	maxDisk    string
	logMax     string
	followMem  string
	qemuUserOK bool // --qemu-user was given
}

func addLimitFlags(fl *flag.FlagSet) *limitFlags {
	f := &limitFlags{}
	fl.StringVar(&f.group, "group", env("HYPEFS_GROUP", DefaultGroup), "the group whose members may use the tree; when it does not exist, only root may (env HYPEFS_GROUP)")
	fl.Func("qemu-user", `the unprivileged user QEMU runs as (default "`+DedicatedQEMUUser+`" when it exists, else "nobody"; "" runs it as root)`, func(s string) error {
		f.qemuUser, f.qemuUserOK = s, true
		return nil
	})
	fl.StringVar(&f.imageMax, "image-max-bytes", "", "the most an image may unpack to, e.g. 20G (default: the smaller of 20G and half the free space of the data directory)")
	fl.IntVar(&f.maxPulls, "max-pulls", 4, "image pulls that fetch at once; more wait their turn")
	fl.StringVar(&f.maxDisk, "max-disk", "", `the largest "disk" a config may ask for, e.g. 100G (default: the free space of the data directory)`)
	fl.StringVar(&f.logMax, "log-max", "64M", "cap of each instance log (log, vmm.log, shim.log); past it the oldest part is dropped")
	fl.StringVar(&f.followMem, "follow-memory", "64M", "what all open console and events readers may hold unread, together")
	return f
}

// limits reads the size flags.
type limits struct {
	imageMax, logMax, followMem int64
	maxDiskMiB                  int64
}

func (f *limitFlags) parse() (limits, error) {
	var l limits
	for _, s := range []struct {
		name, val string
		dst       *int64
	}{{"--image-max-bytes", f.imageMax, &l.imageMax}, {"--log-max", f.logMax, &l.logMax}, {"--follow-memory", f.followMem, &l.followMem}} {
		if s.val == "" {
			continue
		}
		mib, err := instance.SizeMiB(s.val)
		if err != nil {
			return l, fmt.Errorf("%s: %w", s.name, err)
		}
		*s.dst = mib << 20
	}
	if f.maxDisk != "" {
		mib, err := instance.SizeMiB(f.maxDisk)
		if err != nil {
			return l, fmt.Errorf("--max-disk: %w", err)
		}
		l.maxDiskMiB = mib
	}
	if l.logMax == 0 {
		l.logMax = logcap.Default
	}
	if f.maxPulls < 1 {
		return l, fmt.Errorf("--max-pulls must be at least 1, not %d", f.maxPulls)
	}
	return l, nil
}

// groupID finds the tree's group. Missing, the tree is root's alone, and
// the log says how to share it.
func (f *limitFlags) groupID(log *slog.Logger) (uint32, bool) {
	if f.group == "" {
		log.Warn("no --group: the tree is root's alone")
		return 0, false
	}
	g, err := user.LookupGroup(f.group)
	if err == nil {
		if gid, err := strconv.ParseUint(g.Gid, 10, 32); err == nil {
			return uint32(gid), true
		}
	}
	log.Warn(fmt.Sprintf("group %q does not exist: only root may use the tree (hint: groupadd %s; usermod -aG %s USER; then mount again)", f.group, f.group, f.group))
	return 0, false
}

// hypervisorUser is who QEMU runs as: the --qemu-user, else the dedicated
// user when it exists, else nobody; nil when hypefs is not root (it
// cannot change users) or when asked to run QEMU as root.
func (f *limitFlags) hypervisorUser(log *slog.Logger) (*engine.User, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	name := f.qemuUser
	if !f.qemuUserOK {
		name = "nobody"
		if _, err := user.Lookup(DedicatedQEMUUser); err == nil {
			name = DedicatedQEMUUser
		}
	}
	if name == "" || name == "root" || name == "0" {
		log.Warn("QEMU runs as root (--qemu-user): a guest that escapes into QEMU is root on the host")
		return nil, nil
	}
	u, err := user.Lookup(name)
	if err != nil {
		if u, err = user.LookupId(name); err != nil {
			return nil, fmt.Errorf("--qemu-user %s: no such user (hint: useradd --system --no-create-home %s, or name another)", name, name)
		}
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil || uid == 0 {
		return nil, fmt.Errorf("--qemu-user %s: uid %s gid %s is not an unprivileged user", name, u.Uid, u.Gid)
	}
	return &engine.User{UID: uint32(uid), GID: uint32(gid)}, nil
}

// dataLock is held for the daemon's life: kept reachable here so that the
// file, and its flock, is never closed.
var dataLock *os.File

// lockData makes this daemon the only one on the data directory: two
// daemons would each follow, start and remove the same VMs. The lock file
// holds the holder's pid, for the refusal's sentence.
func lockData(lay layout.Layout) error {
	if err := lay.MakeRoots(); err != nil {
		return err
	}
	f, err := os.OpenFile(lay.Lock(), os.O_CREATE|os.O_RDWR, layout.PrivateFile)
	if err != nil {
		return fmt.Errorf("lock %s: %w", lay.Lock(), err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		b := make([]byte, 32)
		n, _ := f.ReadAt(b, 0)
		f.Close()
		holder := strings.TrimSpace(string(b[:n]))
		if holder == "" {
			holder = "unknown"
		}
		return fmt.Errorf("another hypefs (pid %s) is using the data directory %s; a second one would manage the same VMs (hint: stop it first, or give this one its own --data and --run)", holder, lay.Data)
	}
	f.Truncate(0)
	f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	dataLock = f
	return nil
}
