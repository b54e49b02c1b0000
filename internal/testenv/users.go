package testenv

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// Test accounts: real local users and groups, made with useradd and
// groupadd under unique random names starting with "hft", and removed
// when the test ends, pass or fail. The account files are left as they
// were: Accounts compares them, with every test account's lines left out
// (other packages' tests may be making theirs meanwhile), before and after.

// accountFiles are what useradd and groupadd change.
var accountFiles = []string{"/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow"}

// AccountPrefix starts the name of every account tests make.
const AccountPrefix = "hft"

// Accounts makes test users and groups for one test.
type Accounts struct {
	t     testing.TB
	names []string
}

// RequireAccounts skips unless this host lets the test make accounts.
func RequireAccounts(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (makes local users and groups with useradd and groupadd)")
	}
	for _, tool := range []string{"useradd", "userdel", "groupadd", "groupdel"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (passwd)", tool)
		}
	}
}

// NewAccounts starts making accounts for t. When t ends, every account
// made is removed, and the account files must hold what they held before
// (test accounts aside).
func NewAccounts(t testing.TB) *Accounts {
	t.Helper()
	RequireAccounts(t)
	before := snapshotAccounts()
	a := &Accounts{t: t}
	// Registered first, so it runs last: after every removal.
	t.Cleanup(func() {
		after := snapshotAccounts()
		for _, f := range accountFiles {
			if before[f] != after[f] {
				t.Errorf("%s differs after the test's accounts were removed:\nbefore:\n%s\nafter:\n%s", f, before[f], after[f])
			}
		}
		for _, n := range a.names {
			for _, f := range accountFiles {
				b, _ := os.ReadFile(f)
				if bytes.Contains(b, []byte("\n"+n+":")) || bytes.HasPrefix(b, []byte(n+":")) {
					t.Errorf("%s still names %s", f, n)
				}
			}
		}
	})
	return a
}

// snapshotAccounts reads the account files without test accounts' lines.
func snapshotAccounts() map[string]string {
	out := map[string]string{}
	for _, f := range accountFiles {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var keep []string
		for _, l := range strings.Split(string(b), "\n") {
			if !strings.HasPrefix(l, AccountPrefix) {
				keep = append(keep, l)
			}
		}
		out[f] = strings.Join(keep, "\n")
	}
	return out
}

func uniqueName(kind string) string {
	b := make([]byte, 4)
	rand.Read(b)
	return AccountPrefix + kind + hex.EncodeToString(b)
}

func run(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
}

// Group makes a group and returns its name and gid.
func (a *Accounts) Group() (string, uint32) {
	a.t.Helper()
	name := uniqueName("g")
	a.names = append(a.names, name)
	a.t.Cleanup(func() { exec.Command("groupdel", name).Run() })
	run(a.t, "groupadd", "--system", name)
	g, err := user.LookupGroup(name)
	if err != nil {
		a.t.Fatal(err)
	}
	gid, _ := strconv.ParseUint(g.Gid, 10, 32)
	return name, uint32(gid)
}

// User is a local user made for a test.
type User struct {
	Name     string
	UID, GID uint32
	Groups   []uint32 // supplementary groups, the primary one first
	Home     string   // a directory of the test's, owned by the user
}

// User makes a user with a group of its own and the given supplementary
// groups, and a home directory (0700, theirs) in a temporary directory.
func (a *Accounts) User(groups ...string) User {
	a.t.Helper()
	name := uniqueName("u")
	a.names = append(a.names, name)
	parent, err := os.MkdirTemp("", "hft-home")
	if err != nil {
		a.t.Fatal(err)
	}
	os.Chmod(parent, 0o755)
	home := filepath.Join(parent, name)
	a.t.Cleanup(func() {
		exec.Command("userdel", name).Run()
		exec.Command("groupdel", name).Run() // the user's own group, if userdel left it
		os.RemoveAll(parent)
	})
	args := []string{"--system", "--user-group", "--no-create-home", "--home-dir", home, "--shell", "/bin/bash"}
	if len(groups) > 0 {
		args = append(args, "--groups", strings.Join(groups, ","))
	}
	run(a.t, "useradd", append(args, name)...)
	u, err := user.Lookup(name)
	if err != nil {
		a.t.Fatal(err)
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	out := User{Name: name, UID: uint32(uid), GID: uint32(gid), Home: home}
	gids, _ := u.GroupIds()
	for _, s := range gids {
		g, _ := strconv.ParseUint(s, 10, 32)
		out.Groups = append(out.Groups, uint32(g))
	}
	sort.Slice(out.Groups, func(i, j int) bool { return out.Groups[i] < out.Groups[j] })
	if err := os.Mkdir(home, 0o700); err != nil {
		a.t.Fatal(err)
	}
	os.Chown(home, int(uid), int(gid))
	return out
}

// Cmd is a command run as the user: their uid, gid and groups, their
// HOME, in /.
func (u User) Cmd(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Dir = "/"
	cmd.Env = []string{"HOME=" + u.Home, "USER=" + u.Name, "PATH=/usr/local/bin:/usr/bin:/bin", "LC_ALL=C"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: u.UID, Gid: u.GID, Groups: u.Groups}}
	return cmd
}

// Shell runs a command line in bash as the user.
func (u User) Shell(line string) (string, error) {
	out, err := u.Cmd("/bin/bash", "-c", line).CombinedOutput()
	return string(out), err
}

// Errno names what a failed shell command said, as coreutils and bash
// word errnos: "EACCES", "EPERM", ..., "" when it succeeded, or the
// output itself when it names none of them.
func Errno(out string, err error) string {
	if err == nil {
		return ""
	}
	for _, e := range []struct{ text, name string }{
		{"Permission denied", "EACCES"},
		{"Operation not permitted", "EPERM"},
		{"Device or resource busy", "EBUSY"},
		{"Invalid argument", "EINVAL"},
		{"No such file or directory", "ENOENT"},
		{"File exists", "EEXIST"},
		{"No space left on device", "ENOSPC"},
		{"File too large", "EFBIG"},
		{"Input/output error", "EIO"},
	} {
		if strings.Contains(out, e.text) {
			return e.name
		}
	}
	return fmt.Sprintf("unknown error %v: %q", err, out)
}
