package instance

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"unicode/utf8"

	"github.com/google/go-containerregistry/pkg/name"

	"hypefs/backend/host"
	"hypefs/internal/errno"
)

// Config is an instance's normalized configuration (DESIGN §2.1). Reading
// the config file returns it with every default filled in.
type Config struct {
	Image      string            `json:"image"`
	CPUs       int               `json:"cpus"`
	Memory     string            `json:"memory"` // normalized "<n>M"
	Disk       string            `json:"disk"`
	Entrypoint []string          `json:"entrypoint"`
	Cmd        []string          `json:"cmd"`
	Env        map[string]string `json:"env"`
	Workdir    string            `json:"workdir"`
	Network    bool              `json:"network"`
	Accel      string            `json:"accel"`
	Hypervisor string            `json:"hypervisor"`
}

// MemoryMiB is the guest RAM in MiB.
func (c *Config) MemoryMiB() int {
	n, _ := strconv.Atoi(strings.TrimSuffix(c.Memory, "M"))
	return n
}

// Limits of what a config may ask for.
const (
	MinMemoryMiB = 64
	MaxCPUs      = 64
	MaxConfig    = 1 << 20 // bytes a config write may hold
)

// DefaultConfig is what {} means.
func DefaultConfig() Config {
	return Config{CPUs: 1, Memory: "256M", Disk: "1G", Accel: "auto", Hypervisor: "auto", Env: map[string]string{}}
}

// NetworkPolicy is what "network" means in one daemon: On is its default
// (true where guest networking works); when Off is not empty, "network":
// true is refused with Off as the reason. The zero value is networking
// off by default and never refused.
type NetworkPolicy struct {
	On  bool
	Off string
}

// ParseConfig validates raw JSON and returns the normalized config. Every
// refusal is an *errno.Error with EINVAL whose sentence names the key and the problem.
func ParseConfig(raw []byte, net NetworkPolicy) (Config, error) {
	c := DefaultConfig()
	c.Network = net.On
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return c, errno.Errorf(syscall.EINVAL, `config is empty: write a JSON object, e.g. {} or {"memory":"512M"}`)
	}
	if !utf8.Valid(raw) {
		return c, errno.Errorf(syscall.EINVAL, "config is not valid UTF-8 text")
	}
	var obj map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&obj); err != nil {
		return c, errno.Errorf(syscall.EINVAL, "config is not a JSON object: %s", jsonProblem(err))
	}
	if obj == nil {
		return c, errno.Errorf(syscall.EINVAL, "config must be a JSON object, not null")
	}
	if dec.More() {
		return c, errno.Errorf(syscall.EINVAL, "config holds more than one JSON value: write a single object")
	}
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if err := c.set(k, obj[k], net); err != nil {
			return DefaultConfig(), err
		}
	}
	return c, nil
}

// set validates one key's value and stores it.
func (c *Config) set(key string, v json.RawMessage, net NetworkPolicy) error {
	setter, ok := setters[key]
	if !ok {
		return errno.Errorf(syscall.EINVAL, "config key %q is unknown (known keys: %s)", key, strings.Join(knownKeys(), ", "))
	}
	problem := setter(c, v)
	if problem == nil && key == "network" && c.Network && net.Off != "" {
		problem = fmt.Errorf("guest networking is off in this daemon: %s; use false or leave it out", net.Off)
	}
	if problem != nil {
		return errno.Errorf(syscall.EINVAL, "config key %q: %s", key, problem)
	}
	return nil
}

// setters validate and store each key. A setter's error is the problem
// with the value, as a sentence fragment: set names the key before it.
var setters = map[string]func(c *Config, v json.RawMessage) error{
	"image":      setImage,
	"cpus":       setCPUs,
	"memory":     setMemory,
	"disk":       setDisk,
	"entrypoint": func(c *Config, v json.RawMessage) error { return setArgs(&c.Entrypoint, v) },
	"cmd":        func(c *Config, v json.RawMessage) error { return setArgs(&c.Cmd, v) },
	"env":        setEnv,
	"workdir":    setWorkdir,
	"network":    setNetwork,
	"accel":      setAccel,
	"hypervisor": setHypervisor,
}

func knownKeys() []string {
	keys := make([]string, 0, len(setters))
	for k := range setters {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func setImage(c *Config, v json.RawMessage) error {
	if err := json.Unmarshal(v, &c.Image); err != nil {
		return fmt.Errorf("must be a string (an OCI reference such as \"alpine:3.20\"), got %s", kind(v))
	}
	if c.Image != "" {
		if _, err := name.ParseReference(c.Image); err != nil {
			return fmt.Errorf("%q is not a valid image reference (%v); write it as e.g. \"alpine:3.20\" or \"registry.example.com/team/app:v1\"", c.Image, err)
		}
	}
	return nil
}

func setCPUs(c *Config, v json.RawMessage) error {
	var n json.Number
	if kind(v) != "a number" || json.Unmarshal(v, &n) != nil {
		return fmt.Errorf("must be a whole number, got %s", kind(v))
	}
	i, err := strconv.Atoi(n.String())
	if err != nil {
		return fmt.Errorf("must be a whole number, got %s", n)
	}
	limit := min(MaxCPUs, max(host.Probe().CPUs, 1))
	if i < 1 || i > limit {
		return fmt.Errorf("must be between 1 and %d (this host's CPUs), got %d", limit, i)
	}
	c.CPUs = i
	return nil
}

func setMemory(c *Config, v json.RawMessage) error {
	mib, err := parseSize(v, "M")
	if err != nil {
		return err
	}
	limit := int64(host.Probe().MemoryBytes >> 20)
	if mib < MinMemoryMiB {
		return fmt.Errorf("must be at least %dM, got %dM", MinMemoryMiB, mib)
	}
	if limit > 0 && mib > limit {
		return fmt.Errorf("must be at most %dM (this host's memory), got %dM", limit, mib)
	}
	c.Memory = strconv.FormatInt(mib, 10) + "M"
	return nil
}

func setDisk(c *Config, v json.RawMessage) error {
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return fmt.Errorf("must be a size string such as \"1G\", got %s", kind(v))
	}
	mib, err := parseSize(v, "M")
	if err != nil {
		return err
	}
	if mib < 16 {
		return fmt.Errorf("must be at least 16M, got %s", s)
	}
	c.Disk = s
	return nil
}

func setArgs(dst *[]string, v json.RawMessage) error {
	var a []string
	if err := json.Unmarshal(v, &a); err != nil {
		return fmt.Errorf("must be an array of strings, got %s", kind(v))
	}
	*dst = a
	return nil
}

func setEnv(c *Config, v json.RawMessage) error {
	var m map[string]string
	if err := json.Unmarshal(v, &m); err != nil {
		return fmt.Errorf("must be an object of string values, got %s", kind(v))
	}
	for k := range m {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return fmt.Errorf("variable name %q is not valid", k)
		}
	}
	if m == nil {
		m = map[string]string{}
	}
	c.Env = m
	return nil
}

func setWorkdir(c *Config, v json.RawMessage) error {
	if err := json.Unmarshal(v, &c.Workdir); err != nil {
		return fmt.Errorf("must be a string, got %s", kind(v))
	}
	if c.Workdir != "" && !strings.HasPrefix(c.Workdir, "/") {
		return fmt.Errorf("must be an absolute path, got %q", c.Workdir)
	}
	return nil
}

func setNetwork(c *Config, v json.RawMessage) error {
	if err := json.Unmarshal(v, &c.Network); err != nil {
		return fmt.Errorf("must be true or false, got %s", kind(v))
	}
	return nil
}

func setAccel(c *Config, v json.RawMessage) error {
	if err := json.Unmarshal(v, &c.Accel); err != nil {
		return fmt.Errorf("must be a string, got %s", kind(v))
	}
	if _, err := host.ResolveAccel(c.Accel); err != nil {
		return err
	}
	return nil
}

func setHypervisor(c *Config, v json.RawMessage) error {
	if err := json.Unmarshal(v, &c.Hypervisor); err != nil {
		return fmt.Errorf("must be a string, got %s", kind(v))
	}
	switch c.Hypervisor {
	case "auto", host.DefaultHypervisor():
		return nil
	case "qemu", "vz":
		return fmt.Errorf("%q is not available on this host (it uses %q)", c.Hypervisor, host.DefaultHypervisor())
	}
	return fmt.Errorf("must be \"auto\", \"qemu\" or \"vz\", got %q", c.Hypervisor)
}

// parseSize reads a size as an int (in unit) or a string "512M", "1G",
// "1.5G", "2048" (unit), and returns MiB.
func parseSize(v json.RawMessage, unit string) (int64, error) {
	var n json.Number
	if kind(v) == "a number" && json.Unmarshal(v, &n) == nil {
		i, err := strconv.ParseInt(n.String(), 10, 64)
		if err != nil || i <= 0 {
			return 0, fmt.Errorf("must be a positive whole number of MiB or a string such as \"512M\", got %s", n)
		}
		return i, nil
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return 0, fmt.Errorf("must be a number of MiB or a string such as \"512M\", got %s", kind(v))
	}
	return SizeMiB(s)
}

// SizeMiB reads a size string ("512M", "1G", "1.5G", "2048K", "512MiB")
// as MiB; it must come to a whole, positive number of MiB.
func SizeMiB(s string) (int64, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	t = strings.TrimSuffix(strings.TrimSuffix(t, "B"), "I")
	mult := 1.0
	switch {
	case strings.HasSuffix(t, "K"):
		mult, t = 1.0/1024, t[:len(t)-1]
	case strings.HasSuffix(t, "M"):
		t = t[:len(t)-1]
	case strings.HasSuffix(t, "G"):
		mult, t = 1024, t[:len(t)-1]
	case strings.HasSuffix(t, "T"):
		mult, t = 1024*1024, t[:len(t)-1]
	}
	f, err := strconv.ParseFloat(t, 64)
	if err != nil || f <= 0 || f > 1<<40 {
		return 0, fmt.Errorf("%q is not a size (use e.g. \"512M\" or \"2G\")", s)
	}
	mib := f * mult
	if mib != float64(int64(mib)) {
		return 0, fmt.Errorf("%q is not a whole number of MiB", s)
	}
	return int64(mib), nil
}

func kind(v json.RawMessage) string {
	v = bytes.TrimSpace(v)
	if len(v) == 0 {
		return "nothing"
	}
	switch v[0] {
	case '"':
		return "a string"
	case '{':
		return "an object"
	case '[':
		return "an array"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}

func jsonProblem(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("%s at byte %d", se.Error(), se.Offset)
	case errors.As(err, &te):
		return fmt.Sprintf("found %s", te.Value)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "it ends too early (unbalanced braces or quotes?)"
	}
	return err.Error()
}
