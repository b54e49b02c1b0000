package provider

import "testing"

// /host's key-value lines; missing numbers are an error, not zeros.
func TestParseHost(t *testing.T) {
	h, err := parseHost("os linux\narch amd64\ncpus 2\nmemory 25165824000\naccel tcg\naccel_reason no vmx\nhypervisor qemu\nbridge hypefs0\n")
	if err != nil || h.CPUs != 2 || h.MemoryBytes != 25165824000 || h.Arch != "amd64" || h.Accel != "tcg" {
		t.Errorf("parseHost = %+v, %v", h, err)
	}
	if _, err := parseHost("os linux\ncpus two\n"); err == nil {
		t.Error("host facts without numbers were accepted")
	}
}
