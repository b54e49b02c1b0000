package ninep

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"hypefs/internal/testenv"
)

// The Linux kernel's own 9P client (v9fs in the guest kernel; this host's
// kernel has none) mounts the host's export over TCP on the bridge, inside
// a network namespace of the test's own.
func TestGuestKernelMounts9P(t *testing.T) {
	if _, inside := testenv.Netns(t); !inside {
		return
	}
	// The bridge appears with the first VM, so listen on every address:
	// inside this namespace that is the bridge and loopback only.
	d := testenv.NewDaemonNet(t, "--9p", "tcp:0.0.0.0:5640", "--9p-allow-remote")
	const n = "g"
	d.Boot(n, "{}")
	d.WaitLog(n, "hypefs: guest ready", 1, 60*time.Second)
	var gw string
	for _, l := range strings.Split(d.Read(d.Path("host")), "\n") {
		if v, ok := strings.CutPrefix(l, "bridge_ip "); ok {
			gw = v
		}
	}
	if gw == "" {
		gw = "10.197.0.1" // the first address of the default subnet
	}
	script := strings.Join([]string{
		"mkdir -p /n/vmhost",
		"mount -t 9p -o trans=tcp,port=5640,version=9p2000.L " + gw + " /n/vmhost && echo mounted-$((40+2))",
		"ls /n/vmhost/instances | sed 's/^/ls: /'",
		"echo st: $(cat /n/vmhost/instances/" + n + "/status)",
		"grep -c 'hypefs: guest ready' /n/vmhost/instances/" + n + "/log | sed 's/^/ready-lines: /'",
		"mkdir /n/vmhost/instances/Bad_Name 2>&1 | sed 's/^/mkdir-err: /'",
		"rm /n/vmhost/version 2>&1 | sed 's/^/rm-err: /'",
		// A follow file through v9fs: cat of events sees an instance
		// made over 9P by this guest, and ends when killed.
		"cat /n/vmhost/events > /tmp/ev & sleep 1",
		"mkdir /n/vmhost/instances/made-in-guest; sleep 2; kill $!; wait",
		"sed 's/^/ev: /' /tmp/ev",
		"rmdir /n/vmhost/instances/made-in-guest && echo rmdir-$((1+1))",
		"echo done-$((6*7))",
	}, "\n") + "\n"
	if _, err := testenv.Shell("cat > " + d.Inst(n, "console") + " <<'EOF'\n" + script + "EOF"); err != nil {
		t.Fatal(err)
	}
	d.WaitLog(n, "done-42", 1, 60*time.Second)
	log := d.Read(d.Inst(n, "log"))
	for _, want := range []string{"mounted-42", "ls: " + n, "st: running",
		"mkdir-err: mkdir: can't create directory '/n/vmhost/instances/Bad_Name': Invalid argument",
		"rm-err: rm: can't remove '/n/vmhost/version': Operation not permitted", "rmdir-2"} {
		if !strings.Contains(log, want) {
			t.Errorf("guest console lacks %q", want)
		}
	}
	// (The console echoes the commands typed, so match what only output has.)
	for _, re := range []string{`ready-lines: [1-9]`, `ev: \S+ made-in-guest new`} {
		if !regexp.MustCompile(re).MatchString(log) {
			t.Errorf("guest console lacks a match for %s", re)
		}
	}
	if t.Failed() {
		t.Fatalf("guest console:\n%s", log[max(0, len(log)-3000):])
	}
}
