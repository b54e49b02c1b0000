package instance

import (
	"strings"
	"testing"
)

// What "network" means follows the daemon's network mode.
func TestNetworkPolicy(t *testing.T) {
	for _, tc := range []struct {
		on      bool
		off, in string
		want    bool
		refusal string
	}{
		{true, "", `{}`, true, ""},
		{true, "", `{"network":false}`, false, ""},
		{true, "", `{"network":true}`, true, ""},
		{false, "hypefs lacks CAP_NET_ADMIN (run it as root)", `{}`, false, ""},
		{false, "hypefs lacks CAP_NET_ADMIN (run it as root)", `{"network":false}`, false, ""},
		{false, "hypefs lacks CAP_NET_ADMIN (run it as root)", `{"network":true}`, false, `config key "network": guest networking is off in this daemon: hypefs lacks CAP_NET_ADMIN`},
		{false, "hypefs was started with --network off", `{"network":true}`, false, "--network off; use false or leave it out"},
	} {
		c, err := ParseConfig([]byte(tc.in), NetworkPolicy{On: tc.on, Off: tc.off})
		switch {
		case tc.refusal != "":
			if err == nil || !strings.Contains(err.Error(), tc.refusal) {
				t.Errorf("on=%v %s: %v, want %q", tc.on, tc.in, err, tc.refusal)
			}
		case err != nil || c.Network != tc.want:
			t.Errorf("on=%v %s: network %v, %v; want %v", tc.on, tc.in, c.Network, err, tc.want)
		}
	}
}
