package instance

import (
	"errors"
	"strings"
	"syscall"
	"testing"

	"hypefs/internal/errno"
)

func TestParseConfigDefaults(t *testing.T) {
	c, err := ParseConfig([]byte("{}\n"), NetworkPolicy{})
	if err != nil {
		t.Fatal(err)
	}
	if c.CPUs != 1 || c.Memory != "256M" || c.MemoryMiB() != 256 || c.Accel != "auto" || c.Hypervisor != "auto" || c.Disk != "1G" || c.Network {
		t.Fatalf("defaults = %+v", c)
	}
}

func TestParseConfigSizes(t *testing.T) {
	for in, want := range map[string]int{
		`{"memory":512}`:      512,
		`{"memory":"512M"}`:   512,
		`{"memory":"512MiB"}`: 512,
		`{"memory":"1G"}`:     1024,
		`{"memory":"1.5g"}`:   1536,
		`{"memory":"65536K"}`: 64,
	} {
		c, err := ParseConfig([]byte(in), NetworkPolicy{})
		if err != nil || c.MemoryMiB() != want {
			t.Errorf("%s: %d, %v; want %d", in, c.MemoryMiB(), err, want)
		}
	}
}

func TestParseConfigRefusals(t *testing.T) {
	cases := map[string]string{ // input -> word the sentence must hold
		``:                       "empty",
		`   `:                    "empty",
		`null`:                   "null",
		`[]`:                     "object",
		`"x"`:                    "object",
		`{`:                      "ends too early",
		`{"cpus":1}{}`:           "more than one",
		`{"cpus":1,}`:            "JSON",
		"\xff\xfe":               "UTF-8",
		`{"nope":1}`:             `"nope"`,
		`{"cpus":"1"}`:           `"cpus"`,
		`{"cpus":1.5}`:           `"cpus"`,
		`{"cpus":-1}`:            `"cpus"`,
		`{"cpus":9999}`:          `"cpus"`,
		`{"memory":true}`:        `"memory"`,
		`{"memory":"12Q"}`:       `"memory"`,
		`{"memory":"0.5M"}`:      `"memory"`,
		`{"memory":1}`:           `"memory"`,
		`{"memory":"1P"}`:        `"memory"`,
		`{"disk":5}`:             `"disk"`,
		`{"disk":"1M"}`:          `"disk"`,
		`{"entrypoint":"sh"}`:    `"entrypoint"`,
		`{"cmd":[1,2]}`:          `"cmd"`,
		`{"env":{"A":1}}`:        `"env"`,
		`{"env":{"A=B":"1"}}`:    `"env"`,
		`{"workdir":"rel/path"}`: `"workdir"`,
		`{"network":"yes"}`:      `"network"`,
		`{"accel":"warp"}`:       `"accel"`,
		`{"accel":7}`:            `"accel"`,
		`{"hypervisor":"xen"}`:   `"hypervisor"`,
		`{"image":5}`:            `"image"`,
	}
	for in, word := range cases {
		_, err := ParseConfig([]byte(in), NetworkPolicy{})
		if err == nil {
			t.Errorf("%q accepted", in)
			continue
		}
		if !errors.Is(err, syscall.EINVAL) {
			t.Errorf("%q: errno %v, want EINVAL", in, errno.Of(err))
		}
		if !strings.Contains(err.Error(), word) {
			t.Errorf("%q: %q does not mention %s", in, err, word)
		}
	}
}

func TestValidCommandsByState(t *testing.T) {
	i := &Instance{}
	for state, want := range map[string]string{
		New: "shutdown kill", Created: "start shutdown kill", Running: "shutdown kill pause reboot",
		Paused: "shutdown kill resume", Stopped: "start shutdown kill", Stopping: "shutdown kill",
	} {
		i.rec.State = state
		if got := strings.Join(i.ValidCommands(), " "); got != want {
			t.Errorf("%s: %q, want %q", state, got, want)
		}
	}
}
