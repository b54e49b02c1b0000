package e2e

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"

	"hypefs/internal/test9p"
	"hypefs/internal/testenv"
	"hypefs/internal/testimage"
)

// actor is one of the matrix's users: an outsider (not in the group), a
// member, the owner of the instance under test (a member too), and root.
type actor struct {
	name string
	u    *testenv.User // nil: root
	uid  uint32
}

// sh runs a shell line as the actor and names the errno it met ("" when
// it succeeded).
func (a actor) sh(line string) string {
	if a.u == nil {
		return testenv.Errno(testenv.Shell(line))
	}
	return testenv.Errno(a.u.Shell(line))
}

// op is one row of the permission matrix: what each actor gets, over FUSE
// (a shell command) and over 9P (p9 calls on the actor's attach).
type op struct {
	what  string
	fuse  string                      // a shell line; %s is the mount
	ninep func(root p9.File) error    // nil: FUSE only
	want  map[string]string           // actor -> errno name ("" = allowed)
	check func(t *testing.T, a actor) // after an allowed FUSE run, if set
}

func allow(except map[string]string) map[string]string {
	w := map[string]string{"outsider": "EACCES", "member": "", "owner": "", "root": ""}
	for k, v := range except {
		w[k] = v
	}
	return w
}

// ninepErrno names a 9P error as the matrix does.
func ninepErrno(err error) string {
	if err == nil {
		return ""
	}
	for _, e := range []struct {
		errno linux.Errno
		name  string
	}{{linux.EACCES, "EACCES"}, {linux.EPERM, "EPERM"}, {linux.EBUSY, "EBUSY"}, {linux.ENOENT, "ENOENT"}, {linux.EINVAL, "EINVAL"}} {
		if errors.Is(err, e.errno) {
			return e.name
		}
	}
	return "unknown error: " + err.Error()
}

func p9walk(root p9.File, path string) (p9.File, error) {
	if path == "" {
		_, f, err := root.Walk(nil)
		return f, err
	}
	_, f, err := root.Walk(strings.Split(path, "/"))
	return f, err
}

func p9read(path string) func(p9.File) error {
	return func(root p9.File) error {
		f, err := p9walk(root, path)
		if err != nil {
			return err
		}
		defer f.Close()
		_, _, attr, err := f.GetAttr(p9.AttrMaskAll)
		if err != nil {
			return err
		}
		if _, _, err := f.Open(p9.ReadOnly); err != nil {
			return err
		}
		if attr.Mode.IsDir() {
			_, err := f.Readdir(0, 4096)
			return err
		}
		_, err = f.ReadAt(make([]byte, 4096), 0)
		if err == io.EOF {
			err = nil
		}
		return err
	}
}

func p9open(path string, mode p9.OpenFlags) func(p9.File) error {
	return func(root p9.File) error {
		f, err := p9walk(root, path)
		if err != nil {
			return err
		}
		defer f.Close()
		_, _, err = f.Open(mode)
		return err
	}
}

func p9write(path, data string) func(p9.File) error {
	return func(root p9.File) error {
		f, err := p9walk(root, path)
		if err != nil {
			return err
		}
		defer f.Close()
		if _, _, err := f.Open(p9.WriteOnly); err != nil {
			return err
		}
		_, err = f.WriteAt([]byte(data), 0)
		return err
	}
}

func p9mkdir(dir, name string) func(p9.File) error {
	return func(root p9.File) error {
		f, err := p9walk(root, dir)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = f.Mkdir(name, 0o755, p9.NoUID, p9.NoGID)
		return err
	}
}

func p9rmdir(dir, name string) func(p9.File) error {
	return func(root p9.File) error {
		f, err := p9walk(root, dir)
		if err != nil {
			return err
		}
		defer f.Close()
		return f.UnlinkAt(name, 0x200)
	}
}

// The permission matrix: outsider, member, owner and root against every
// file and directory operation, over FUSE (the kernel checks the owners
// and modes the tree reports) and over 9P (the adapter checks them for
// the attach user). Then what hypefs keeps on disk is root's alone.
func TestPermissions(t *testing.T) {
	acc := testenv.NewAccounts(t)
	group, gid := acc.Group()
	owner, member, outsider := acc.User(group), acc.User(group), acc.User()
	sockDir, err := os.MkdirTemp("", "hfs9")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(sockDir)
	sock := filepath.Join(sockDir, "9p.sock")
	d := testenv.NewDaemonWith(t, "--group", group, "--9p", "unix:"+sock)
	os.Chmod(d.Dir, 0o711) // the users reach the mount through the test's directory
	host := registry(t)
	pushSmall(t, host+"/small:1")

	actors := []actor{
		{"outsider", &outsider, outsider.UID}, {"member", &member, member.UID},
		{"owner", &owner, owner.UID}, {"root", nil, 0},
	}
	byName := map[string]actor{}
	for _, a := range actors {
		byName[a.name] = a
	}
	m := d.Mnt

	// The owner makes and boots an instance; a member makes one too.
	if e := byName["owner"].sh("mkdir " + m + "/instances/a && echo '{}' > " + m + "/instances/a/config"); e != "" {
		t.Fatalf("owner's mkdir and config: %s (error: %s)", e, d.Read(d.Inst("a", "error")))
	}
	if e := byName["member"].sh("mkdir " + m + "/instances/b"); e != "" {
		t.Fatalf("member's mkdir: %s", e)
	}
	d.WaitStatus("a", "running", 90*time.Second)

	// Owners and modes as stat shows them.
	for _, c := range []struct {
		path, want string
	}{
		{"", fmt.Sprintf("0:%d:750", gid)},
		{"instances", fmt.Sprintf("0:%d:1770", gid)},
		{"instances/a", fmt.Sprintf("%d:%d:750", owner.UID, gid)},
		{"instances/b", fmt.Sprintf("%d:%d:750", member.UID, gid)},
		{"instances/a/config", fmt.Sprintf("%d:%d:600", owner.UID, gid)},
		{"instances/a/console", fmt.Sprintf("%d:%d:600", owner.UID, gid)},
		{"instances/a/log", fmt.Sprintf("%d:%d:400", owner.UID, gid)},
		{"instances/a/ctl", fmt.Sprintf("%d:%d:640", owner.UID, gid)},
		{"instances/a/status", fmt.Sprintf("%d:%d:440", owner.UID, gid)},
		{"images/ctl", fmt.Sprintf("0:%d:660", gid)},
	} {
		out, err := testenv.Shell("stat -c %u:%g:%a " + filepath.Join(m, c.path))
		if err != nil || strings.TrimSpace(out) != c.want {
			t.Errorf("stat %s: %q, want %s", c.path, strings.TrimSpace(out), c.want)
		}
	}

	ops := []op{
		{what: "ls /", fuse: "ls %s", ninep: p9read(""), want: allow(nil)},
		{what: "ls instances", fuse: "ls %s/instances", ninep: p9read("instances"), want: allow(nil)},
		{what: "ls instances/a", fuse: "ls %s/instances/a", ninep: p9read("instances/a"), want: allow(nil)},
		{what: "stat instances/a/status", fuse: "stat %s/instances/a/status", want: allow(nil)},
		{what: "cat README", fuse: "cat %s/README", ninep: p9read("README"), want: allow(nil)},
		{what: "cat status", fuse: "cat %s/instances/a/status", ninep: p9read("instances/a/status"), want: allow(nil)},
		{what: "cat error", fuse: "cat %s/instances/a/error", ninep: p9read("instances/a/error"), want: allow(nil)},
		{what: "cat exit", fuse: "cat %s/instances/a/exit", ninep: p9read("instances/a/exit"), want: allow(nil)},
		{what: "cat ctl", fuse: "cat %s/instances/a/ctl", ninep: p9read("instances/a/ctl"), want: allow(nil)},
		{what: "cat info", fuse: "cat %s/instances/a/info", ninep: p9read("instances/a/info"), want: allow(nil),
			check: func(t *testing.T, a actor) {
				out, _ := a.u.Shell("cat " + m + "/instances/a/info")
				var info struct {
					API string `json:"api_socket"`
				}
				json.Unmarshal([]byte(out), &info)
				if shows := info.API != ""; shows != (a.name != "member") {
					t.Errorf("%s: info shows api_socket %q", a.name, info.API)
				}
			}},
		{what: "cat config", fuse: "cat %s/instances/a/config", ninep: p9read("instances/a/config"), want: allow(map[string]string{"member": "EACCES"})},
		{what: "cat log", fuse: "cat %s/instances/a/log", ninep: p9read("instances/a/log"), want: allow(map[string]string{"member": "EACCES"})},
		{what: "cat vmm.log", fuse: "cat %s/instances/a/vmm.log", ninep: p9read("instances/a/vmm.log"), want: allow(map[string]string{"member": "EACCES"})},
		{what: "open console", fuse: "exec 3< %s/instances/a/console", ninep: p9open("instances/a/console", p9.ReadOnly), want: allow(map[string]string{"member": "EACCES"})},
		{what: "open events", fuse: "exec 3< %s/instances/a/events", ninep: p9open("instances/a/events", p9.ReadOnly), want: allow(nil)},
		{what: "open /events", fuse: "exec 3< %s/events", ninep: p9open("events", p9.ReadOnly), want: allow(nil)},
		{what: "type into console", fuse: "printf '\\n' > %s/instances/a/console", ninep: p9write("instances/a/console", "\n"), want: allow(map[string]string{"member": "EACCES"})},
		// The owner and root get past the permission check to the
		// tree's own answer: resume of a running VM, config of a
		// running VM: EBUSY.
		{what: "write ctl", fuse: "echo resume > %s/instances/a/ctl", ninep: p9write("instances/a/ctl", "resume\n"),
			want: map[string]string{"outsider": "EACCES", "member": "EACCES", "owner": "EBUSY", "root": "EBUSY"}},
		{what: "write config", fuse: "echo '{}' > %s/instances/a/config", ninep: p9write("instances/a/config", "{}\n"),
			want: map[string]string{"outsider": "EACCES", "member": "EACCES", "owner": "EBUSY", "root": "EBUSY"}},
		{what: "write status", fuse: "echo x > %s/instances/a/status", ninep: p9write("instances/a/status", "x"),
			want: map[string]string{"outsider": "EACCES", "member": "EACCES", "owner": "EACCES", "root": "EACCES"}},
		{what: "cat images/ctl", fuse: "cat %s/images/ctl", ninep: p9read("images/ctl"), want: allow(nil)},
		{what: "pull", fuse: "echo pull " + host + "/small:1 > %s/images/ctl", ninep: p9write("images/ctl", "pull "+host+"/small:1"), want: allow(nil)},
		{what: "cat a pulled image's config", fuse: "cat %s/images/" + host + "/small/1/config", ninep: p9read("images/" + host + "/small/1/config"), want: allow(nil)},
		{what: "write a pulled image's config", fuse: "echo x > %s/images/" + host + "/small/1/config", ninep: p9write("images/"+host+"/small/1/config", "x"),
			want: map[string]string{"outsider": "EACCES", "member": "EACCES", "owner": "EACCES", "root": "EACCES"}},
		{what: "touch a file", fuse: "touch %s/instances/a/new", want: allow(map[string]string{"member": "EACCES", "owner": "EPERM", "root": "EPERM"})},
	}
	for _, o := range ops {
		for _, a := range actors {
			if got := a.sh(fmt.Sprintf(o.fuse, m)); got != o.want[a.name] {
				t.Errorf("FUSE %s as %s: %q, want %q", o.what, a.name, got, o.want[a.name])
			} else if got == "" && o.check != nil && a.u != nil {
				o.check(t, a)
			}
		}
	}

	// The same rows over 9P, attaching as each actor.
	roots := map[string]p9.File{}
	for _, a := range actors {
		r, err := test9p.DialAs(t, "unix:"+sock, a.uid)
		if err != nil {
			t.Fatalf("9P attach as %s: %v", a.name, err)
		}
		roots[a.name] = r
	}
	for _, o := range ops {
		if o.ninep == nil {
			continue
		}
		for _, a := range actors {
			if got := ninepErrno(o.ninep(roots[a.name])); got != o.want[a.name] {
				t.Errorf("9P %s as %s: %q, want %q", o.what, a.name, got, o.want[a.name])
			}
		}
	}

	// mkdir and rmdir: instances/ is sticky.
	for _, c := range []struct {
		who, line, want string
	}{
		{"outsider", "mkdir %s/instances/x-outsider", "EACCES"},
		{"member", "mkdir %s/instances/x-member", ""},
		{"owner", "mkdir %s/instances/x-owner", ""},
		{"outsider", "rmdir %s/instances/b", "EACCES"},
		{"member", "rmdir %s/instances/a", "EPERM"}, // the owner's
		{"owner", "rmdir %s/instances/b", "EPERM"},  // the member's
		{"member", "rmdir %s/instances/x-member", ""},
		{"owner", "rmdir %s/instances/x-owner", ""},
		{"root", "rmdir %s/instances/b", ""},
	} {
		if got := byName[c.who].sh(fmt.Sprintf(c.line, m)); got != c.want {
			t.Errorf("FUSE %q as %s: %q, want %q", c.line, c.who, got, c.want)
		}
	}
	for _, c := range []struct {
		who  string
		fn   func(p9.File) error
		what string
		want string
	}{
		{"outsider", p9mkdir("instances", "y-outsider"), "mkdir y-outsider", "EACCES"},
		{"member", p9mkdir("instances", "y-member"), "mkdir y-member", ""},
		{"owner", p9mkdir("instances", "y-owner"), "mkdir y-owner", ""},
		{"outsider", p9rmdir("instances", "y-member"), "rmdir y-member", "EACCES"},
		{"member", p9rmdir("instances", "y-owner"), "rmdir y-owner", "EPERM"},
		{"owner", p9rmdir("instances", "y-member"), "rmdir y-member", "EPERM"},
		{"member", p9rmdir("instances", "y-member"), "rmdir y-member", ""},
		{"root", p9rmdir("instances", "y-owner"), "rmdir y-owner", ""},
	} {
		if got := ninepErrno(c.fn(roots[c.who])); got != c.want {
			t.Errorf("9P %s as %s: %q, want %q", c.what, c.who, got, c.want)
		}
	}
	if out, err := testenv.Shell("stat -c %u " + d.Path("instances", "y-member")); err == nil {
		t.Errorf("y-member still there: %s", out)
	}

	// What hypefs keeps on disk is root's alone while the VM runs.
	checkPrivate(t, d.Data, d.Run)
	testenv.Shell("echo kill > " + d.Inst("a", "ctl"))
}

// checkPrivate walks the data and run directories: every directory and
// file (sockets too) is root's, and no one else may read, write or enter
// it.
func checkPrivate(t *testing.T, roots ...string) {
	t.Helper()
	n := 0
	for _, root := range roots {
		filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
			if err != nil {
				return nil
			}
			n++
			st := fi.Sys().(*syscall.Stat_t)
			if fi.Mode().Perm()&0o077 != 0 || st.Uid != 0 {
				t.Errorf("%s: uid %d mode %v: other users may reach it", p, st.Uid, fi.Mode())
			}
			return nil
		})
	}
	if n < 10 {
		t.Fatalf("only %d entries under %v", n, roots)
	}
}

// pushSmall pushes a small image: busybox, that prints a line and its
// ids and ends.
func pushSmall(t *testing.T, ref string) {
	t.Helper()
	base, err := testimage.Base()
	if err != nil {
		t.Skip(err)
	}
	img, err := testimage.Image(v1.Config{Cmd: []string{"/bin/sh", "-c", "echo small-image-ran; id"}}, base)
	if err != nil {
		t.Fatal(err)
	}
	testimage.Push(t, ref, img)
}

// lockedRegistry serves test images on loopback; once lock is set,
// repositories under locked/ answer only user alice with password s3cret.
func lockedRegistry(t *testing.T, lock *atomic.Bool) string {
	return testimage.Serve(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if lock.Load() && strings.HasPrefix(r.URL.Path, "/v2/locked/") {
				if u, p, ok := r.BasicAuth(); !ok || u != "alice" || p != "s3cret" {
					w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
					http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"who are you"}]}`, http.StatusUnauthorized)
					return
				}
			}
			h.ServeHTTP(w, r)
		})
	})
}

// writeDockerConfig gives u a docker config with auth for host.
func writeDockerConfig(t *testing.T, u testenv.User, host string, mode os.FileMode) string {
	t.Helper()
	dir := filepath.Join(u.Home, ".docker")
	os.Mkdir(dir, 0o700)
	os.Chown(dir, int(u.UID), int(u.GID))
	p := filepath.Join(dir, "config.json")
	auth := base64.StdEncoding.EncodeToString([]byte("alice:s3cret"))
	if err := os.WriteFile(p, []byte(`{"auths":{"`+host+`":{"auth":"`+auth+`"}}}`), mode); err != nil {
		t.Fatal(err)
	}
	os.Chmod(p, mode)
	os.Chown(p, int(u.UID), int(u.GID))
	return p
}

// A pull runs with the registry credentials of the user who asked: their
// docker config, only if no one else may write it, and their credential
// helper, run as them; a boot pulls as the instance's owner. Never
// root's for someone else.
func TestPullAsUser(t *testing.T) {
	acc := testenv.NewAccounts(t)
	group, _ := acc.Group()
	alice, bob, carol := acc.User(group), acc.User(group), acc.User(group)
	var lock atomic.Bool
	host := lockedRegistry(t, &lock)
	for _, tag := range []string{"1", "2", "3", "4"} {
		pushSmall(t, host+"/locked/small:"+tag)
	}
	lock.Store(true)
	writeDockerConfig(t, alice, host, 0o600)
	loose := writeDockerConfig(t, carol, host, 0o666)

	// bob's credentials come from a helper, which must run as bob.
	helperDir, err := os.MkdirTemp("", "hft-helper")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(helperDir)
	os.Chmod(helperDir, 0o755)
	helper := "#!/bin/sh\nread server\nid -u > \"$HOME/helper-ran-as\"\necho '{\"ServerURL\":\"'$server'\",\"Username\":\"alice\",\"Secret\":\"s3cret\"}'\n"
	if err := os.WriteFile(filepath.Join(helperDir, "docker-credential-hfttest"), []byte(helper), 0o755); err != nil {
		t.Fatal(err)
	}
	bobCfg := filepath.Join(bob.Home, ".docker", "config.json")
	os.MkdirAll(filepath.Dir(bobCfg), 0o700)
	os.WriteFile(bobCfg, []byte(`{"credHelpers":{"`+host+`":"hfttest"}}`), 0o600)
	testenv.Shell(fmt.Sprintf("chown -R %d:%d %s", bob.UID, bob.GID, filepath.Dir(bobCfg)))

	d := testenv.NewDaemonWith(t, "--group", group)
	d.Stop()
	d.SetEnv("PATH=" + helperDir + ":" + os.Getenv("PATH"))
	d.Start()
	os.Chmod(d.Dir, 0o711)
	ctl := d.Path("images", "ctl")

	if out, err := alice.Shell("echo pull " + host + "/locked/small:1 > " + ctl); err != nil {
		t.Fatalf("alice's pull with her config: %v %s; images/error: %s", err, out, d.Read(d.Path("images", "error")))
	}
	if out, err := bob.Shell("echo pull " + host + "/locked/small:2 > " + ctl); err != nil {
		t.Fatalf("bob's pull through his helper: %v %s; images/error: %s", err, out, d.Read(d.Path("images", "error")))
	}
	if ran, _ := os.ReadFile(filepath.Join(bob.Home, "helper-ran-as")); strings.TrimSpace(string(ran)) != fmt.Sprint(bob.UID) {
		t.Errorf("bob's credential helper ran as uid %q, want %d", strings.TrimSpace(string(ran)), bob.UID)
	}
	if e := testenv.Errno(carol.Shell("echo pull " + host + "/locked/small:3 > " + ctl)); e != "EACCES" {
		t.Errorf("carol's pull with a config others may write: %q, want EACCES", e)
	}
	if msg := d.Read(d.Path("images", "error")); !strings.Contains(msg, loose) || !strings.Contains(msg, "only its owner may write") {
		t.Errorf("images/error after carol's pull: %q", msg)
	}
	// A boot pulls as the instance's owner: alice's boots, carol's does not.
	for _, c := range []struct {
		u         testenv.User
		name, tag string
	}{{alice, "alices", "4"}, {carol, "carols", "3"}} {
		cfg := `{"image":"` + host + `/locked/small:` + c.tag + `","network":false}`
		if out, err := c.u.Shell("mkdir " + d.Path("instances", c.name) + " && echo '" + cfg + "' > " + d.Inst(c.name, "config")); err != nil {
			t.Fatalf("%s: %v %s", c.name, err, out)
		}
	}
	d.WaitStatus("carols", "error", 60*time.Second)
	if msg := d.Read(d.Inst("carols", "error")); !strings.Contains(msg, "only its owner may write") {
		t.Errorf("carol's boot: error %q", msg)
	}
	d.WaitLog("alices", "small-image-ran", 1, 90*time.Second)
}

// 9P attach names map to local users, and a claim is checked against who
// connected (here over loopback TCP): a user may attach only as
// themselves, root as anyone; unknown names are refused.
func TestNinePClaims(t *testing.T) {
	acc := testenv.NewAccounts(t)
	group, _ := acc.Group()
	member, outsider := acc.User(group), acc.User()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := "tcp:" + l.Addr().String()
	l.Close()
	testenv.NewDaemonWith(t, "--group", group, "--9p", addr)
	// The test binary, where the users may run it.
	binDir, err := os.MkdirTemp("", "hft-bin")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(binDir)
	os.Chmod(binDir, 0o755)
	bin := filepath.Join(binDir, "e2e.test")
	if out, err := testenv.Shell("cp " + os.Args[0] + " " + bin + " && chmod 755 " + bin); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	attach := func(u *testenv.User, uname string, nuname uint32) string {
		spec := fmt.Sprintf("%s,%s,%d", addr, uname, nuname)
		if u == nil {
			return attachChild(spec)
		}
		cmd := u.Cmd(bin, "-test.run=^$")
		cmd.Env = append(cmd.Env, attachEnv+"="+spec)
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Sprintf("run: %v %s", err, out)
		}
		return strings.TrimSpace(string(out))
	}
	for _, c := range []struct {
		what   string
		u      *testenv.User
		uname  string
		nuname uint32
		want   string
	}{
		{"member as themselves", &member, "", member.UID, "ok"},
		{"member by name", &member, member.Name, test9p.NoUID, "ok"},
		{"member naming no one: who connected", &member, "", test9p.NoUID, "ok"},
		{"member claiming root", &member, "", 0, "attach EACCES"},
		{"member claiming root by name", &member, "root", test9p.NoUID, "attach EACCES"},
		{"member claiming the outsider", &member, "", outsider.UID, "attach EACCES"},
		{"outsider as themselves", &outsider, "", outsider.UID, "list EACCES"},
		{"root as the member", nil, "", member.UID, "ok"},
		{"root as the outsider", nil, outsider.Name, test9p.NoUID, "list EACCES"},
		{"an unknown name", nil, "hft-no-such-user", test9p.NoUID, "attach EACCES"},
	} {
		if got := attach(c.u, c.uname, c.nuname); got != c.want {
			t.Errorf("%s: %q, want %q", c.what, got, c.want)
		}
	}
}

// Without its group on the host, the tree is root's alone: the group's
// bits are gone from every mode, and the log says how to share it.
func TestNoGroup(t *testing.T) {
	acc := testenv.NewAccounts(t)
	u := acc.User()
	missing := testenv.AccountPrefix + "-missing-group"
	d := testenv.NewDaemonWith(t, "--group", missing)
	os.Chmod(d.Dir, 0o711)
	if err := os.Mkdir(d.Path("instances", "r"), 0o755); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{"": "0:0:700", "instances": "0:0:1700", "instances/r": "0:0:700", "instances/r/status": "0:0:400", "images/ctl": "0:0:600"} {
		out, _ := testenv.Shell("stat -c %u:%g:%a " + filepath.Join(d.Mnt, path))
		if strings.TrimSpace(out) != want {
			t.Errorf("stat %s: %q, want %s", path, strings.TrimSpace(out), want)
		}
	}
	if e := testenv.Errno(u.Shell("ls " + d.Mnt)); e != "EACCES" {
		t.Errorf("a user's ls of the tree: %q, want EACCES", e)
	}
	if log := d.Log(); !strings.Contains(log, "groupadd "+missing) {
		t.Errorf("the log does not say how to make the group:\n%s", log)
	}
}
