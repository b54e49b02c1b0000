package e2e

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"hypefs/internal/testenv"
	"hypefs/internal/testimage"
)

// imageScript checks, from inside the guest, what the flattened root
// must hold, and ends with exit code 7.
const imageScript = `echo first-line-from-image
echo "env foo=$FOO bar=$BAR pwd=$(pwd) uid=$(id -u)"
[ ! -e /etc/gone ] && echo whiteout-ok
[ "$(ls /opq)" = new ] && echo opaque-ok
[ "$(stat -c %i /data/link)" = "$(stat -c %i /data/f0001)" ] && echo hardlink-ok
[ "$(stat -c %a /bin/suid)" = 4755 ] && echo setuid-ok
[ -c /devs/null ] && echo devnode-ok
[ -p /devs/fifo ] && echo fifo-ok
echo "files=$(ls /data | wc -l)"
echo "owned=$(stat -c %u:%g:%a /data/owned)"
[ -e /data/written ] && echo persisted-ok
touch /data/written && echo write-ok
exit 7`

// registry serves test images on loopback; private/ refuses everyone,
// corrupt/ flips a byte of every layer, short/ drops the connection
// halfway through a layer.
func registry(t *testing.T) string {
	return testimage.Serve(t, testimage.Faulty)
}

func pushStandard(t *testing.T, ref, user string) v1.Image {
	t.Helper()
	img, err := testimage.Standard(imageScript)
	if err != nil {
		t.Skip(err)
	}
	if user != "" {
		cf, _ := img.ConfigFile()
		cf = cf.DeepCopy()
		cf.Config.User = user
		if img, err = testimage.WithConfig(img, cf); err != nil {
			t.Fatal(err)
		}
	}
	testimage.Push(t, ref, img)
	return img
}

// checkExit: the instance's exit file holds the program's code (once the
// shim records it).
func checkExit(t *testing.T, d *testenv.Daemon, name string, want int) {
	t.Helper()
	d.WaitLog(name, "hypefs: exit status "+strconv.Itoa(want), 1, 10*time.Second)
	got := strings.TrimSpace(d.Read(d.Inst(name, "exit")))
	if got == "" {
		t.Logf("%s: exit file is empty (the shim does not record guest_exit yet)", name)
		return
	}
	if got != strconv.Itoa(want) {
		t.Errorf("%s: exit = %q, want %d", name, got, want)
	}
}

func write(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
}

// An image boots and runs its program; its output lands in log, its exit
// code in exit, and the VM stops. A second instance overrides entrypoint,
// cmd, env and workdir, runs as the image's user, reads the console, and
// is killed by a signal (exit 137). rm of its image meanwhile: EBUSY.
func TestImageRun(t *testing.T) {
	host := registry(t)
	ref := host + "/test/app:v1"
	pushStandard(t, ref, "")
	userRef := host + "/test/app:user"
	pushStandard(t, userRef, "app:extra")
	d := testenv.NewDaemon(t)

	for _, n := range []string{"img", "ovr"} {
		if err := os.Mkdir(d.Path("instances", n), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write(t, d.Inst("img", "config"), `{"image":"`+ref+`"}`)
	if st := d.Status("img"); st != "booting" {
		t.Errorf("status while pulling = %q, want booting", st)
	}
	write(t, d.Inst("ovr", "config"), `{"image":"`+userRef+`","entrypoint":["/bin/sh"],`+
		`"cmd":["-c","echo over-$FOO-$BAR-$NEW-$(pwd)-$(id -u)-$(id -g); read line; echo got-$line; kill -KILL $$"],`+
		`"env":{"FOO":"cfg","NEW":"n"},"workdir":"/tmp"}`)

	d.WaitStatus("img", "stopped", 3*time.Minute)
	log := d.Read(d.Inst("img", "log"))
	for _, want := range []string{"first-line-from-image", "env foo=from-image bar=image-bar pwd=/data uid=0",
		"whiteout-ok", "opaque-ok", "hardlink-ok", "setuid-ok", "devnode-ok", "fifo-ok",
		"files=2102", "owned=1000:2000:640", "write-ok"} {
		if !strings.Contains(log, want) {
			t.Errorf("img log lacks %q", want)
		}
	}
	if strings.Contains(log, "persisted-ok") {
		t.Errorf("a fresh writable layer already holds /data/written")
	}
	checkExit(t, d, "img", 7)
	info := d.Read(d.Inst("img", "info"))
	if !strings.Contains(info, "sha256:") {
		t.Errorf("info lacks the image digest: %s", info)
	}

	// The image shows under images/.
	dir := d.Path("images", strings.Split(host, "/")[0], "test", "app", "v1")
	if st := strings.TrimSpace(d.Read(filepath.Join(dir, "status"))); st != "ready" {
		t.Errorf("images/…/v1/status = %q", st)
	}
	if !strings.HasPrefix(d.Read(filepath.Join(dir, "digest")), "sha256:") ||
		!strings.Contains(d.Read(filepath.Join(dir, "config")), "from-image") ||
		strings.TrimSpace(d.Read(filepath.Join(dir, "ref"))) != ref {
		t.Errorf("image files: digest %q ref %q", d.Read(filepath.Join(dir, "digest")), d.Read(filepath.Join(dir, "ref")))
	}
	if p := strings.Split(strings.TrimSpace(d.Read(filepath.Join(dir, "progress"))), "/"); len(p) != 2 || p[0] != p[1] || p[0] == "0" {
		t.Errorf("progress = %v", p)
	}
	if n, _ := strconv.Atoi(strings.TrimSpace(d.Read(filepath.Join(dir, "size")))); n < 1<<20 {
		t.Errorf("size = %d", n)
	}

	// The overriding instance waits on its console.
	d.WaitLog("ovr", "over-cfg-image-bar-n-/tmp-1000-2000", 1, 2*time.Minute)
	if out, err := testenv.Shell("echo rm " + userRef + " > " + d.Path("images", "ctl")); err == nil || !strings.Contains(out, "busy") {
		t.Errorf("rm of an image in use: %v %s", err, out)
	}
	if e := d.Read(d.Path("images", "error")); !strings.Contains(e, "in use by instance ovr") {
		t.Errorf("images/error = %q", e)
	}
	write(t, d.Inst("ovr", "console"), "bye\n")
	d.WaitLog("ovr", "got-bye", 1, 30*time.Second)
	d.WaitStatus("ovr", "stopped", 30*time.Second)
	checkExit(t, d, "ovr", 137)
	if out, err := testenv.Shell("echo rm " + userRef + " > " + d.Path("images", "ctl")); err != nil {
		t.Errorf("rm of an unused image: %v %s", err, out)
	}
	if _, err := os.Stat(filepath.Join(d.Path("images", strings.Split(host, "/")[0], "test", "app", "user"))); !os.IsNotExist(err) {
		t.Errorf("removed image still listed: %v", err)
	}

	// The writable layer survives a reboot of the instance.
	write(t, d.Inst("img", "ctl"), "start")
	d.WaitLog("img", "persisted-ok", 1, 2*time.Minute)
	d.WaitStatus("img", "stopped", time.Minute)
}

// Bad input: each fails in the pull or before the VM starts, with the
// instance in error and a sentence naming the cause; nothing half made
// stays in the cache.
func TestImageBadInput(t *testing.T) {
	host := registry(t)
	for _, repo := range []string{"corrupt/app:v1", "short/app:v1"} {
		pushStandard(t, host+"/"+repo, "")
	}
	base, err := testimage.Base()
	if err != nil {
		t.Skip(err)
	}
	big, err := testimage.Image(v1.Config{Cmd: []string{"/bin/true"}}, base, testimage.Filler("fill", 40, 24<<20, 1))
	if err != nil {
		t.Fatal(err)
	}
	testimage.Push(t, host+"/big/app:v1", big)
	bomb, err := testimage.Image(v1.Config{Cmd: []string{"/bin/true"}}, base, testimage.SparseLayer("big", 1<<40))
	if err != nil {
		t.Fatal(err)
	}
	testimage.Push(t, host+"/bomb/app:v1", bomb)
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	down := l.Addr().String()
	l.Close()

	d := testenv.NewDaemon(t)
	cases := []struct{ name, config, says string }{
		{"unknown", `{"image":"` + host + `/nosuch/app:v1"}`, "is unknown"},
		{"down", `{"image":"` + down + `/app:v1"}`, "is unreachable"},
		{"auth", `{"image":"` + host + `/private/app:v1"}`, "auth refused"},
		{"corrupt", `{"image":"` + host + `/corrupt/app:v1"}`, "is corrupt"},
		{"short", `{"image":"` + host + `/short/app:v1"}`, "truncated"},
		{"small", `{"image":"` + host + `/big/app:v1","disk":"16M"}`, "too small"},
		{"bomb", `{"image":"` + host + `/bomb/app:v1"}`, "sparse files counting their full size"},
	}
	for _, c := range cases {
		if err := os.Mkdir(d.Path("instances", c.name), 0o755); err != nil {
			t.Fatal(err)
		}
		write(t, d.Inst(c.name, "config"), c.config)
	}
	for _, c := range cases {
		d.WaitStatus(c.name, "error", time.Minute)
		if e := d.Read(d.Inst(c.name, "error")); !strings.Contains(e, c.says) {
			t.Errorf("%s: error = %q, want it to say %q", c.name, e, c.says)
		}
	}
	// A boot that failed half-way released what it took: the image it
	// claimed can be removed, and nothing of the run is left.
	if _, err := os.Stat(d.RunDir("small")); !os.IsNotExist(err) {
		t.Errorf("the failed boot left its run directory: %v", err)
	}
	if out, err := testenv.Shell("echo rm " + host + "/big/app:v1 > " + d.Path("images", "ctl")); err != nil {
		t.Errorf("rm of the image a failed boot had claimed: %v %s (%s)", err, out, d.Read(d.Path("images", "error")))
	}
	// A reference that cannot parse is refused at the write.
	os.Mkdir(d.Path("instances", "badref"), 0o755)
	if out, err := testenv.Shell(`echo '{"image":"Bad Ref!"}' > ` + d.Inst("badref", "config")); err == nil ||
		!strings.Contains(out, "Invalid argument") || !strings.Contains(d.Read(d.Inst("badref", "error")), "not a valid image reference") {
		t.Errorf("bad reference: %v %s; error %q", err, out, d.Read(d.Inst("badref", "error")))
	}
	// images/ctl says why too.
	if out, err := testenv.Shell("echo pull " + host + "/nosuch/x:1 > " + d.Path("images", "ctl")); err == nil {
		t.Errorf("pull of an unknown image succeeded: %s", out)
	}
	if e := d.Read(d.Path("images", "error")); !strings.Contains(e, "is unknown") {
		t.Errorf("images/error = %q", e)
	}
	if st := strings.TrimSpace(d.Read(d.Path("images", strings.Split(host, "/")[0], "corrupt", "app", "v1", "status"))); st != "failed" {
		t.Errorf("corrupt image status = %q, want failed", st)
	}
	// Nothing half made: no work left in tmp, and nothing in the cache
	// (the big image, which pulled fine, was removed).
	if ents, _ := os.ReadDir(filepath.Join(d.Data, "images", "tmp")); len(ents) != 0 {
		t.Errorf("images/tmp holds %d entries", len(ents))
	}
	ents, _ := os.ReadDir(filepath.Join(d.Data, "images", "sha256"))
	for _, e := range ents {
		t.Errorf("cache holds %s", e.Name())
	}
}
