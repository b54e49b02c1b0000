package testenv

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
)

// NetnsEnv names the network namespace a test runs in when it was
// started again inside one by Netns.
const NetnsEnv = "HYPEFS_TEST_NETNS"

// RequireNetns skips unless network namespaces, TAPs and bridges can be
// made here.
func RequireNetns(t TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces, bridges, TAPs)")
	}
	for _, tool := range []string{"ip", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (iproute2, util-linux)", tool)
		}
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skip("needs /dev/net/tun")
	}
}

// Netns runs the calling test (or benchmark) again, alone, in a fresh
// network namespace "hfs-<random>" that it deletes afterwards, so nothing
// the test does to the network reaches the host's namespace. It returns
// inside=true in that second run, where the caller does the work; in the
// first run it waits for it, reports its output and result, and returns
// inside=false: the caller then just returns.
//
// Only the network namespace changes (nsenter --net): FUSE mounts made
// inside stay visible to the test.
func Netns(t TB) (name string, inside bool) {
	t.Helper()
	if n := os.Getenv(NetnsEnv); n != "" {
		if got := currentNetns(); got != n {
			t.Fatalf("%s=%s but this process is not in that namespace", NetnsEnv, n)
		}
		return n, true
	}
	RequireNetns(t)
	b := make([]byte, 4)
	rand.Read(b)
	name = "hfs-" + hex.EncodeToString(b)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v %s", name, err, out)
	}
	defer func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v %s", name, err, out)
		}
	}()
	// Loopback up: the daemon's 9P and tests may use 127.0.0.1.
	exec.Command("ip", "-n", name, "link", "set", "lo", "up").Run()
	args := []string{"--net=/run/netns/" + name, "--", os.Args[0], "-test.v", "-test.count=1"}
	if _, isB := t.(*testing.B); isB {
		args = append(args, "-test.run=^$", "-test.bench="+anchored(t.Name()), "-test.benchtime=1x")
	} else {
		args = append(args, "-test.run="+anchored(t.Name()))
	}
	cmd := exec.Command("nsenter", args...)
	cmd.Env = append(os.Environ(), NetnsEnv+"="+name)
	out, err := cmd.CombinedOutput()
	os.Stdout.Write(benchLines(out))
	if err != nil || strings.Contains(string(out), "--- FAIL") {
		t.Fatalf("in network namespace %s: %v\n%s", name, err, out)
	}
	if strings.Contains(string(out), "--- SKIP") {
		t.Skipf("in network namespace %s:\n%s", name, out)
	}
	t.Logf("in network namespace %s:\n%s", name, out)
	return name, false
}

// NewDaemonNet mounts with guest networking on. It is allowed only inside
// a namespace made by Netns.
func NewDaemonNet(t TB, args ...string) *Daemon {
	t.Helper()
	if os.Getenv(NetnsEnv) == "" {
		t.Fatal("NewDaemonNet outside a test network namespace: call testenv.Netns first")
	}
	return NewDaemonWith(t, append([]string{"--network", "on"}, args...)...)
}

func anchored(name string) string {
	parts := strings.Split(name, "/")
	for k, p := range parts {
		parts[k] = "^" + regexp.QuoteMeta(p) + "$"
	}
	return strings.Join(parts, "/")
}

// benchLines picks the BENCH lines of a child's output, so that make
// bench sees them on the parent's stdout.
func benchLines(out []byte) []byte {
	var b []byte
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "BENCH ") {
			b = append(b, l+"\n"...)
		}
	}
	return b
}

// currentNetns is the name under /run/netns whose inode is this
// process's network namespace, or "".
func currentNetns() string {
	var self, st syscallStat
	if statIno("/proc/self/ns/net", &self) != nil {
		return ""
	}
	ents, _ := os.ReadDir("/run/netns")
	for _, e := range ents {
		if statIno("/run/netns/"+e.Name(), &st) == nil && st == self {
			return e.Name()
		}
	}
	return ""
}

type syscallStat struct{ dev, ino uint64 }

func statIno(p string, s *syscallStat) error {
	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil {
		return err
	}
	*s = syscallStat{uint64(st.Dev), st.Ino}
	return nil
}
