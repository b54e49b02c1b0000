package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"hypefs/backend/instance"
	"hypefs/backend/network"
	"hypefs/internal/testenv"
	"hypefs/shim"
)

// BenchmarkNetBootToPing: config write until the guest answers a ping
// from the host, against config write until "hypefs: guest ready" of a
// VM without network, both on one daemon inside a network namespace of
// the benchmark's own. Runs alternate.
func BenchmarkNetBootToPing(b *testing.B) {
	if _, inside := testenv.Netns(b); !inside {
		return
	}
	d := testenv.NewDaemonNet(b)
	var withNet, readyNet, without []time.Duration
	for k := 0; k < 7; k++ {
		for _, netw := range []bool{k%2 == 0, k%2 == 1} {
			name := fmt.Sprintf("n%d-%v", k, netw)
			if err := os.Mkdir(d.Path("instances", name), 0o755); err != nil {
				b.Fatal(err)
			}
			cfg := fmt.Sprintf(`{"network":%v}`, netw)
			start := time.Now()
			if err := os.WriteFile(d.Inst(name, "config"), []byte(cfg), 0o644); err != nil {
				b.Fatal(err)
			}
			if netw {
				var ip string
				testenv.WaitFor(time.Minute, func() bool {
					ip = infoIP(d.Read(d.Inst(name, "info")))
					return ip != ""
				})
				if ip == "" {
					b.Fatalf("%s has no ip in info; error: %s", name, d.Read(d.Inst(name, "error")))
				}
				// The ping is answered independently of the ready line
				// (the init configures the NIC before printing it).
				type answer struct {
					at  time.Duration
					err error
				}
				pinged := make(chan answer, 1)
				go func() {
					err := pingUntil(netip.MustParseAddr(ip), 2*time.Minute)
					pinged <- answer{time.Since(start), err}
				}()
				log := d.Inst(name, "log")
				testenv.WaitFor(2*time.Minute, func() bool { return fileHas(log, shim.ReadyMarker) })
				readyNet = append(readyNet, time.Since(start))
				a := <-pinged
				if a.err != nil {
					b.Fatalf("%s: %v; log:\n%s", name, a.err, d.Read(log))
				}
				withNet = append(withNet, a.at)
			} else {
				log := d.Inst(name, "log")
				if !testenv.WaitFor(2*time.Minute, func() bool { return fileHas(log, shim.ReadyMarker) }) {
					b.Fatalf("%s never became ready", name)
				}
				without = append(without, time.Since(start))
				if spec := loadShimConfig(b, filepath.Join(d.RunDir(name), "shim-config.json")); len(spec.Engine.NICs) != 0 {
					b.Fatalf(`{"network":false} booted with NICs %+v`, spec.Engine.NICs)
				}
			}
			testenv.Shell("echo kill > " + d.Inst(name, "ctl") + " && rmdir " + d.Path("instances", name))
		}
	}
	b.Logf("with network: ready %v, ping %v; without: ready %v", readyNet, withNet, without)
	report(b, "net-boot-to-ping", median(withNet), median(without), "s", "<=1.05", 0)
}

func infoIP(info string) string {
	var v struct{ IP string }
	json.Unmarshal([]byte(info), &v)
	return v.IP
}

// pingUntil sends an ICMP echo request every 20 ms until one is answered.
func pingUntil(ip netip.Addr, timeout time.Duration) error {
	c, err := net.ListenPacket("ip4:icmp", "0.0.0.0")
	if err != nil {
		return fmt.Errorf("icmp socket: %w", err)
	}
	defer c.Close()
	dst := &net.IPAddr{IP: ip.AsSlice()}
	id := os.Getpid() & 0xffff
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 1500)
	for seq := 1; time.Now().Before(deadline); seq++ {
		msg := []byte{8, 0, 0, 0, byte(id >> 8), byte(id), byte(seq >> 8), byte(seq), 'h', 'f'}
		cs := checksum(msg)
		msg[2], msg[3] = byte(cs>>8), byte(cs)
		if _, err := c.WriteTo(msg, dst); err != nil {
			time.Sleep(20 * time.Millisecond) // no route or neighbour yet
			continue
		}
		c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				break
			}
			// Raw ICMP sockets deliver the ICMP message without the IP header.
			if n >= 8 && buf[0] == 0 && from.String() == ip.String() && int(buf[4])<<8|int(buf[5]) == id {
				return nil
			}
		}
	}
	return fmt.Errorf("%s did not answer a ping within %s", ip, timeout)
}

func checksum(b []byte) uint16 {
	var s uint32
	for k := 0; k+1 < len(b); k += 2 {
		s += uint32(b[k])<<8 | uint32(b[k+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

// BenchmarkTapSetup: what the networking part does per VM (make the TAP,
// name it, put it in the bridge, bring it up, lease the address), against
// the same by hand: `ip tuntap add` + `ip link set master` + `ip link set
// up`. bridge-setup is the first VM's cost, which also makes the bridge,
// its address and the NAT table, against `ip link add type bridge` +
// `ip addr add` + `ip link set up` and the same three TAP commands.
func BenchmarkTapSetup(b *testing.B) {
	if _, inside := testenv.Netns(b); !inside {
		return
	}
	const n = 20
	prep := func(nw *network.Network, inst string) time.Duration {
		plan := &instance.Plan{Facts: map[string]string{}}
		start := time.Now()
		if err := nw.Prepare(context.Background(), inst, instance.Config{Network: true}, plan); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	ip := func(args ...string) {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			b.Fatalf("ip %v: %v %s", args, err, out)
		}
	}
	var bridgeMine, bridgeRaw, tapMine, tapRaw []time.Duration
	for k := 0; k < 5; k++ {
		nw, err := network.New(network.Options{Dir: b.TempDir(), Log: slog.New(slog.DiscardHandler)})
		if err != nil {
			b.Fatal(err)
		}
		nw.Reconcile(nil)
		bridgeMine = append(bridgeMine, prep(nw, "first"))
		for j := 0; j < n/5; j++ {
			inst := fmt.Sprintf("t%d", j)
			tapMine = append(tapMine, prep(nw, inst))
			nw.Deleted(inst)
		}
		nw.Deleted("first")

		start := time.Now()
		ip("link", "add", "rawbr", "type", "bridge")
		ip("addr", "add", "10.197.0.1/24", "dev", "rawbr")
		ip("link", "set", "rawbr", "up")
		ip("tuntap", "add", "dev", "rawtap", "mode", "tap")
		ip("link", "set", "rawtap", "master", "rawbr")
		ip("link", "set", "rawtap", "up")
		bridgeRaw = append(bridgeRaw, time.Since(start))
		for j := 0; j < n/5; j++ {
			start := time.Now()
			ip("tuntap", "add", "dev", "rawt", "mode", "tap")
			ip("link", "set", "rawt", "master", "rawbr")
			ip("link", "set", "rawt", "up")
			tapRaw = append(tapRaw, time.Since(start))
			ip("link", "del", "rawt")
		}
		ip("link", "del", "rawtap")
		ip("link", "del", "rawbr")
	}
	report(b, "tap-setup", median(tapMine), median(tapRaw), "ms", "<=", 10*time.Millisecond)
	report(b, "bridge-setup", median(bridgeMine), median(bridgeRaw), "ms", "<=", 50*time.Millisecond)
}
