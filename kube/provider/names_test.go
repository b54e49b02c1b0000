package provider

import (
	"regexp"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/types"
)

var hypefsName = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,62}$`)

// Instance names fit hypefs' rule whatever the namespace and name (up to
// Kubernetes' limits: 63 and 253 characters), are told apart by the UID
// and by the parts that were cut, and are recognised as the provider's.
func TestInstanceName(t *testing.T) {
	ns63 := strings.Repeat("n", 63)
	name253 := strings.Repeat("a", 100) + "." + strings.Repeat("b", 152)
	cases := []struct {
		ns, name string
		uid      types.UID
		want     string // "" when only the shape is checked
	}{
		{"default", "web", "0b3f", "default_web_"},
		{"kube-system", "coredns-5d78c9869d-abcde", "u1", "kube-system_coredns-5d78c9869d-abcde_"},
		{ns63, "web", "u", ""},
		{"default", name253, "u", ""},
		{ns63, name253, "u", ""},
		{"a", "b", "u", "a_b_"},
	}
	seen := map[string]bool{}
	for _, c := range cases {
		n := InstanceName(c.ns, c.name, c.uid)
		if !hypefsName.MatchString(n) || len(n) > 63 {
			t.Errorf("InstanceName(%q, %q) = %q: not a valid instance name", c.ns, c.name, n)
		}
		if c.want != "" && !strings.HasPrefix(n, c.want) {
			t.Errorf("InstanceName(%q, %q) = %q, want prefix %q", c.ns, c.name, n, c.want)
		}
		if !Owned(n) {
			t.Errorf("Owned(%q) = false", n)
		}
		if seen[n] {
			t.Errorf("InstanceName(%q, %q) = %q twice", c.ns, c.name, n)
		}
		seen[n] = true
		if n != InstanceName(c.ns, c.name, c.uid) {
			t.Errorf("InstanceName is not stable for %q/%q", c.ns, c.name)
		}
	}
	// The same Pod made again (a new UID) gets a new instance; names that
	// differ only past the cut still differ.
	if InstanceName("default", "web", "uid-1") == InstanceName("default", "web", "uid-2") {
		t.Error("a new UID kept the instance name")
	}
	if InstanceName("default", name253+"x", "u") == InstanceName("default", name253+"y", "u") {
		t.Error("names that differ past the cut collide")
	}
	for _, n := range []string{"hello", "web-1", "my_vm", "default_web", "a_b_c_0123abcd", "default_web_0123ABCD", "_web_01234567"} {
		if Owned(n) {
			t.Errorf("Owned(%q) = true: a name people give would be taken for the provider's", n)
		}
	}
}
