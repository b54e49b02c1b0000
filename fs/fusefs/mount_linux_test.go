package fusefs

import "testing"

// mountinfo escapes spaces and the like in mount points as octal.
func TestUnescapeMount(t *testing.T) {
	for in, want := range map[string]string{
		`/tmp/mnt`:       "/tmp/mnt",
		`/tmp/my\040vms`: "/tmp/my vms",
		`/a\011b\134c`:   "/a\tb\\c",
		`/trailing\04`:   `/trailing\04`,
		`/not\999octal`:  `/not\999octal`,
	} {
		if got := unescapeMount(in); got != want {
			t.Errorf("unescapeMount(%q) = %q, want %q", in, got, want)
		}
	}
	if _, mounted := topFuseMount(t.TempDir()); mounted {
		t.Error("a fresh directory shows a FUSE mount")
	}
}
