package guest

import (
	"bytes"
	"debug/elf"
	"fmt"
	"path"
	"strings"
)

// modInfo is what we need from a kernel module's .modinfo section.
// Debian's linux-image package ships no modules.dep (depmod runs in its
// postinst), so dependencies come from the modules themselves.
type modInfo struct {
	Name    string   // module name, with '_' (as the kernel spells it)
	Depends []string // hard dependencies (depends=), normalised names
	Softdep string   // raw softdep= value; recorded, not followed
}

// modName normalises a module or file name the way the kernel does:
// "crc32c-intel.ko" and "crc32c_intel" are the same module.
func modName(s string) string {
	s = path.Base(s)
	s = strings.TrimSuffix(s, ".ko")
	return strings.ReplaceAll(s, "-", "_")
}

// parseModinfo splits a .modinfo section (NUL-separated key=value
// strings) into a modInfo. fallback names the module if the section
// has no name= entry.
func parseModinfo(sec []byte, fallback string) modInfo {
	mi := modInfo{Name: modName(fallback)}
	for _, kv := range bytes.Split(sec, []byte{0}) {
		k, v, ok := strings.Cut(string(kv), "=")
		if !ok {
			continue
		}
		switch k {
		case "name":
			if v != "" {
				mi.Name = modName(v)
			}
		case "depends":
			for _, d := range strings.Split(v, ",") {
				if d = strings.TrimSpace(d); d != "" {
					mi.Depends = append(mi.Depends, modName(d))
				}
			}
		case "softdep":
			mi.Softdep = v
		}
	}
	return mi
}

// readModinfo parses the .modinfo section of the module file ko.
func readModinfo(ko []byte, file string) (modInfo, error) {
	f, err := elf.NewFile(bytes.NewReader(ko))
	if err != nil {
		return modInfo{}, fmt.Errorf("module %s: %w", file, err)
	}
	defer f.Close()
	s := f.Section(".modinfo")
	if s == nil {
		return modInfo{Name: modName(file)}, nil
	}
	b, err := s.Data()
	if err != nil {
		return modInfo{}, fmt.Errorf("module %s modinfo: %w", file, err)
	}
	return parseModinfo(b, file), nil
}
