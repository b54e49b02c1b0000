package guest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"os"
	"runtime"
	"strings"
	"testing"
)

// fakeImage is an arm64 Image header followed by body.
func fakeImage(body string) []byte {
	b := make([]byte, arm64HdrLen)
	copy(b, "MZ")
	copy(b[arm64MagicOff:], arm64Magic)
	return append(b, body...)
}

func TestUnpackArm64(t *testing.T) {
	img := fakeImage("kernel text")
	gz := func(b []byte) []byte {
		var z bytes.Buffer
		zw := gzip.NewWriter(&z)
		zw.Write(b)
		zw.Close()
		return z.Bytes()
	}
	// An EFI zboot program: header, then the gzipped Image, then the
	// 4-byte size trailer the payload size leaves out.
	zboot := func(comp string, payload []byte) []byte {
		h := make([]byte, 128)
		copy(h, "MZ\x00\x00zimg")
		binary.LittleEndian.PutUint32(h[8:], uint32(len(h)))
		binary.LittleEndian.PutUint32(h[12:], uint32(len(payload)))
		copy(h[24:], comp+"\x00")
		return append(append(h, payload...), 1, 2, 3, 4)
	}
	for _, tc := range []struct {
		name    string
		vmlinuz []byte
		wantErr string
	}{
		{"raw Image (Debian 12)", img, ""},
		{"gzipped Image", gz(img), ""},
		{"EFI zboot gzip", zboot("gzip", gz(img)), ""},
		{"EFI zboot zstd", zboot("zstd", []byte("x")), `compressed with "zstd"`},
	} {
		var out bytes.Buffer
		err := unpackKernel(tc.vmlinuz, &out)
		switch {
		case tc.wantErr != "":
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%s: error %v; want %q", tc.name, err, tc.wantErr)
			}
		case err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case !bytes.Equal(out.Bytes(), img):
			t.Errorf("%s: got %q; want the Image", tc.name, out.Bytes())
		default:
			if err := checkArm64Image(bytes.NewReader(out.Bytes())); err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
		}
	}
	if err := checkArm64Image(bytes.NewReader(make([]byte, 100))); err == nil {
		t.Error("checkArm64Image(zeros) succeeded; want error")
	}
	be := fakeImage("")
	be[arm64FlagsOff] = 1
	if err := checkArm64Image(bytes.NewReader(be)); err == nil {
		t.Error("checkArm64Image(big-endian) succeeded; want error")
	}
}

func TestPrivateAptConfig(t *testing.T) {
	dump := []byte(`APT::Update::Post-Invoke:: "rm -f /var/cache/apt/archives/*.deb";
Acquire::http::Proxy "http://proxy:3128";
Acquire::Check-Valid-Until "false";
Acquire::IndexTargets::deb::DEP-11 "";
Acquire::Changelogs::URI "";
APT::Architecture "amd64";
`)
	conf := privateAptConfig("/tmp/p", "arm64", dump, true)
	for _, want := range []string{
		`Acquire::http::Proxy "http://proxy:3128";`,
		`Acquire::Check-Valid-Until "false";`,
		`Dir::State "/tmp/p/state";`,
		`Dir::State::status "/tmp/p/state/status";`,
		`Dir::Etc::Parts "/tmp/p/etc/apt.conf.d";`,
		`APT::Architecture "arm64";`,
		`APT::Architectures { "arm64"; };`,
		`APT::Sandbox::User "root";`,
	} {
		if !strings.Contains(conf, want+"\n") {
			t.Errorf("config lacks %s:\n%s", want, conf)
		}
	}
	for _, bad := range []string{"Post-Invoke", "IndexTargets", "Changelogs", `"amd64"`} {
		if strings.Contains(conf, bad) {
			t.Errorf("config has %s:\n%s", bad, conf)
		}
	}
	if strings.Contains(privateAptConfig("/tmp/p", "arm64", nil, false), "Sandbox") {
		t.Error("non-root config sets the sandbox user")
	}
}

func TestFindBusybox(t *testing.T) {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, f := range []struct{ name, body string }{{"./usr/share/doc/busybox-static/copyright", "c"}, {"./bin/busybox", "ELF"}} {
		tw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o755, Size: int64(len(f.body)), Typeflag: tar.TypeReg})
		tw.Write([]byte(f.body))
	}
	tw.Close()
	got, err := findBusybox(bytes.NewReader(b.Bytes()))
	if err != nil || string(got) != "ELF" {
		t.Errorf("findBusybox = %q, %v; want ELF", got, err)
	}
	if _, err := findBusybox(bytes.NewReader(nil)); err == nil {
		t.Error("findBusybox(empty) succeeded; want error")
	}
}

// TestArm64Defaults: without a fetched busybox the error says how to get
// one; with KERNELS/busybox-<arch> present, Prepare uses it.
func TestArm64Defaults(t *testing.T) {
	if got := rootsFor("arm64"); got[len(got)-1] != "gpio_keys" || len(got) != len(guestModules)+1 {
		t.Errorf("rootsFor(arm64) = %v", got)
	}
	if got := rootsFor("amd64"); len(got) != len(guestModules) {
		t.Errorf("rootsFor(amd64) = %v", got)
	}
	dir := t.TempDir()
	if runtime.GOARCH != "arm64" {
		_, err := Prepare(context.Background(), Options{KernelsDir: dir, Arch: "arm64", Init: "/bin/busybox"})
		if err == nil || !strings.Contains(err.Error(), `hint: run "hypefs kernel fetch --arch arm64"`) {
			t.Errorf("Prepare(no arm64 kernel) error = %v; want a kernel fetch --arch arm64 hint", err)
		}
		fakeKernel(t, dir, "6.1.0-9-arm64", "arm64")
		_, err = Prepare(context.Background(), Options{KernelsDir: dir, Arch: "arm64", Init: "/bin/busybox"})
		if err == nil || !strings.Contains(err.Error(), BusyboxPath(dir, "arm64")) || !strings.Contains(err.Error(), "--arch arm64") {
			t.Errorf("Prepare(no arm64 busybox) error = %v; want it to name %s", err, BusyboxPath(dir, "arm64"))
		}
	}
	if got := withDefaults(Options{KernelsDir: dir, Arch: "amd64"}).Busybox; runtime.GOOS == "linux" && runtime.GOARCH == "amd64" && got != "/bin/busybox" {
		t.Errorf("default amd64 busybox without a fetched one = %s; want /bin/busybox", got)
	}
	bb := BusyboxPath(dir, "amd64")
	if err := os.WriteFile(bb, []byte("x"), 0o755); err != nil {
		t.Fatal(err)
	}
	if got := withDefaults(Options{KernelsDir: dir, Arch: "amd64"}).Busybox; got != bb {
		t.Errorf("default busybox = %s; want the fetched %s", got, bb)
	}
	if got := withDefaults(Options{KernelsDir: dir, Arch: "amd64", Busybox: "/x"}).Busybox; got != "/x" {
		t.Errorf("Options.Busybox not kept: %s", got)
	}
}
