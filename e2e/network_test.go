//go:build linux

package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"

	"hypefs/backend/layout"
	"hypefs/backend/network"
	"hypefs/internal/testenv"
)

// Guest networking, end to end, inside a network namespace of its own:
// nothing here sends a packet to any address outside it.
func TestNetwork(t *testing.T) {
	if _, inside := testenv.Netns(t); !inside {
		return
	}
	d := testenv.NewDaemonNet(t)
	host := d.Read(d.Path("host"))
	if !strings.Contains(host, "bridge hypefs0\n") || !strings.Contains(host, "subnet "+network.DefaultSubnet+"\n") {
		t.Fatalf("/host lacks the bridge and subnet:\n%s", host)
	}

	// Two VMs at once: {} means a network here; so does an explicit true.
	for name, cfg := range map[string]string{"a": "{}", "b": `{"network":true}`} {
		if err := os.Mkdir(d.Path("instances", name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(d.Inst(name, "config"), []byte(cfg), 0o644); err != nil {
			t.Fatalf("%s: write config: %v (error: %s)", name, err, d.Read(d.Inst(name, "error")))
		}
	}
	for _, name := range []string{"a", "b"} {
		d.WaitStatus(name, "running", 90*time.Second)
		d.WaitLog(name, "hypefs: guest ready", 1, 60*time.Second)
	}
	var cfg map[string]any
	json.Unmarshal([]byte(d.Read(d.Inst("a", "config"))), &cfg)
	if cfg["network"] != true {
		t.Fatalf("normalized {} does not show network true: %v", cfg)
	}
	info := func(name string) map[string]any {
		var m map[string]any
		if err := json.Unmarshal([]byte(d.Read(d.Inst(name, "info"))), &m); err != nil {
			t.Fatalf("%s: info: %v", name, err)
		}
		return m
	}
	ia, ib := info("a"), info("b")
	ipA, ipB := ia["ip"].(string), ib["ip"].(string)
	if ipA == "" || ipB == "" || ipA == ipB || ia["mac"] == ib["mac"] || ia["tap"] != "hf-a" || ib["tap"] != "hf-b" {
		t.Fatalf("info a: ip %v mac %v tap %v; b: ip %v mac %v tap %v", ia["ip"], ia["mac"], ia["tap"], ib["ip"], ib["mac"], ib["tap"])
	}
	if ia["mac"] != network.MAC("a") {
		t.Fatalf("a's MAC %v is not the one derived from its name", ia["mac"])
	}

	// The host pings each guest.
	for _, ip := range []string{ipA, ipB} {
		if out, err := exec.Command("/bin/busybox", "ping", "-c", "1", "-W", "10", ip).CombinedOutput(); err != nil {
			t.Fatalf("host ping %s: %v\n%s", ip, err, out)
		}
	}
	// a pings b, typed into its console.
	if _, err := testenv.Shell("echo 'ping -c1 -W10 " + ipB + " && echo ping-ok-$((40+2))' > " + d.Inst("a", "console")); err != nil {
		t.Fatal(err)
	}
	d.WaitLog("a", "ping-ok-42", 1, 30*time.Second)

	// NAT rules exist while VMs run.
	if ok, err := natExists(); err != nil || !ok {
		t.Fatalf("nftables table hypefs while VMs run: %v %v", ok, err)
	}

	// The daemon dies and comes back: addresses are kept, TAPs of live
	// VMs stay, and a new VM gets an address nobody holds.
	d.Kill()
	exec.Command("fusermount3", "-uz", d.Mnt).Run()
	d.Start()
	for _, name := range []string{"a", "b"} {
		d.WaitStatus(name, "running", 30*time.Second)
	}
	if info("a")["ip"] != ipA || info("b")["ip"] != ipB {
		t.Fatalf("addresses changed across a daemon restart: a %v b %v", info("a")["ip"], info("b")["ip"])
	}
	for _, tap := range []string{"hf-a", "hf-b"} {
		if _, err := netlink.LinkByName(tap); err != nil {
			t.Fatalf("TAP %s of a live VM is gone after the restart: %v", tap, err)
		}
	}
	d.Boot("c", "{}")
	ipC, _ := info("c")["ip"].(string)
	if ipC == "" || ipC == ipA || ipC == ipB {
		t.Fatalf("c got %q after the restart (a %s, b %s)", ipC, ipA, ipB)
	}
	d.WaitLog("c", "hypefs: guest ready", 1, 60*time.Second)
	if out, err := exec.Command("/bin/busybox", "ping", "-c", "1", "-W", "10", ipC).CombinedOutput(); err != nil {
		t.Fatalf("host ping %s: %v\n%s", ipC, err, out)
	}

	// A crash (the shim killed) leaves no TAP behind.
	if pid, _ := info("c")["shim_pid"].(float64); pid > 0 {
		syscall.Kill(int(pid), syscall.SIGKILL)
	}
	d.WaitStatus("c", "crashed", 30*time.Second)
	if _, err := netlink.LinkByName("hf-c"); err == nil {
		t.Fatal("TAP hf-c is left after its shim was killed")
	}

	// Everything goes: no TAP, bridge, rule or lease is left.
	for _, name := range []string{"a", "b"} {
		testenv.Shell("echo kill > " + d.Inst(name, "ctl"))
		d.WaitStatus(name, "stopped", 30*time.Second)
	}
	for _, name := range []string{"a", "b", "c"} {
		if err := syscall.Rmdir(d.Path("instances", name)); err != nil {
			t.Fatalf("rmdir %s: %v", name, err)
		}
	}
	links, _ := netlink.LinkList()
	for _, l := range links {
		if n := l.Attrs().Name; strings.HasPrefix(n, "hf") || n == network.DefaultBridge {
			t.Errorf("interface %s is left after every instance was deleted", n)
		}
	}
	if ok, _ := natExists(); ok {
		t.Error("nftables table hypefs is left after every instance was deleted")
	}
	var leases struct{ Leases map[string]string }
	b, _ := os.ReadFile(filepath.Join(d.Data, layout.NetworkDir, layout.Leases))
	json.Unmarshal(b, &leases)
	if len(leases.Leases) != 0 {
		t.Errorf("leases left: %v", leases.Leases)
	}
}

// With networking off (every other test's daemon), {} has no NIC and
// asking for a network is refused with a sentence.
func TestNetworkOff(t *testing.T) {
	d := testenv.NewDaemon(t)
	if host := d.Read(d.Path("host")); !strings.Contains(host, "network off\n") {
		t.Fatalf("/host does not say network off:\n%s", host)
	}
	os.Mkdir(d.Path("instances", "n"), 0o755)
	err := os.WriteFile(d.Inst("n", "config"), []byte(`{"network":true}`), 0o644)
	if !errorsIs(err, syscall.EINVAL) {
		t.Fatalf(`{"network":true} with networking off: %v, want EINVAL`, err)
	}
	if e := d.Read(d.Inst("n", "error")); !strings.Contains(e, "--network off") {
		t.Fatalf("error = %q", e)
	}
}

func errorsIs(err error, target syscall.Errno) bool {
	var pe *os.PathError
	if e, ok := err.(*os.PathError); ok {
		pe = e
	}
	return pe != nil && pe.Err == target
}

// natExists reports whether the daemon's nftables table is in this
// network namespace.
func natExists() (bool, error) {
	c, err := nftables.New()
	if err != nil {
		return false, err
	}
	ts, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return false, err
	}
	for _, t := range ts {
		if t.Name == network.TableName {
			return true, nil
		}
	}
	return false, nil
}

// A boot that fails half-way (here: QEMU is missing, after networking made
// the VM's TAP) releases what it took: the TAP goes.
func TestFailedBootReleasesTap(t *testing.T) {
	if _, inside := testenv.Netns(t); !inside {
		return
	}
	d := testenv.NewDaemonNet(t)
	d.Stop()
	bin := t.TempDir()
	fm, err := exec.LookPath("fusermount3")
	if err != nil {
		t.Skip("no fusermount3")
	}
	os.Symlink(fm, filepath.Join(bin, "fusermount3"))
	d.SetEnv("PATH=" + bin)
	d.Start()
	if err := os.Mkdir(d.Path("instances", "half"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(d.Inst("half", "config"), []byte(`{"network":true}`), 0o644); err != nil {
		t.Fatalf("config: %v (error: %s)", err, d.Read(d.Inst("half", "error")))
	}
	d.WaitStatus("half", "error", 60*time.Second)
	if msg := d.Read(d.Inst("half", "error")); !strings.Contains(msg, "qemu") {
		t.Fatalf("error = %q; want QEMU named", msg)
	}
	if l, err := netlink.LinkByName(network.TapName("half")); err == nil {
		t.Errorf("the failed boot left its TAP %s", l.Attrs().Name)
	}
	if _, err := os.Stat(d.RunDir("half")); !os.IsNotExist(err) {
		t.Errorf("the failed boot left its run directory: %v", err)
	}
}
