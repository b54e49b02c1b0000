package main

import (
	"slices"
	"strings"
	"testing"
)

// summary reduces errors to "dir/file: message" without line numbers.
func summary(errs []string) []string {
	var out []string
	for _, e := range errs {
		i := strings.Index(e, "testdata/fixture/")
		if i < 0 {
			out = append(out, e)
			continue
		}
		rest := e[i+len("testdata/fixture/"):]
		file, msg, _ := strings.Cut(rest, ": ")
		file, _, _ = strings.Cut(file, ":")
		out = append(out, file+": "+msg)
	}
	slices.Sort(out)
	return out
}

func TestFixture(t *testing.T) {
	cases := []struct {
		arch  string
		tests bool
		want  []string
	}{
		{"arm64", false, []string{
			`broken/broken_darwin.go: cannot use "darwin only" (untyped string constant) as int value in variable declaration`,
		}},
		{"amd64", false, []string{
			`amd64only/a_darwin_amd64.go: undefined: undefinedOnIntelMacs`,
			`broken/broken_darwin.go: cannot use "darwin only" (untyped string constant) as int value in variable declaration`,
		}},
		{"arm64", true, []string{
			`broken/broken_darwin.go: cannot use "darwin only" (untyped string constant) as int value in variable declaration`,
			`testerr/t_test.go: cannot use "test only" (untyped string constant) as int value in variable declaration`,
		}},
	}
	for _, c := range cases {
		// ./... leaves out packages with no darwin files; a package named
		// explicitly is listed with an error that Check turns into a skip.
		res, err := Check(Options{Dir: "testdata/fixture", GOOS: "darwin", GOARCH: c.arch, Tests: c.tests,
			Patterns: []string{"./...", "./linuxonly"}})
		if err != nil {
			t.Fatal(err)
		}
		if got := summary(res.Errors); !slices.Equal(got, c.want) {
			t.Errorf("%s tests=%v: errors\n got %q\nwant %q", c.arch, c.tests, got, c.want)
		}
		if !slices.Contains(res.Skipped, "fixture/linuxonly") {
			t.Errorf("%s: linux-only package not skipped: %v", c.arch, res.Skipped)
		}
	}
}

// TestRepositoryForDarwin is the project's darwin type check: every
// package, its tests included, must type-check for both Mac
// architectures, so a darwin-only type error (or a test that calls
// something Linux-only without a build constraint) fails the test run on
// Linux.
func TestRepositoryForDarwin(t *testing.T) {
	if testing.Short() {
		t.Skip("type-checks the whole repository twice")
	}
	for _, arch := range []string{"arm64", "amd64"} {
		res, err := Check(Options{Dir: "../..", GOOS: "darwin", GOARCH: arch, Tests: true})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range res.Errors {
			t.Errorf("darwin/%s: %s", arch, e)
		}
		if res.Packages < 10 {
			t.Errorf("darwin/%s: only %d packages checked", arch, res.Packages)
		}
	}
}
