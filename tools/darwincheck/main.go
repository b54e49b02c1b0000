// Command darwincheck type-checks the project's Go packages for macOS
// (darwin/arm64 and darwin/amd64) on any host, without a C toolchain or
// the macOS SDK.
//
// The vz engine needs cgo and Apple's SDK, so Linux cannot compile it; a
// type error in darwin-only files would otherwise surface only on a Mac.
// darwincheck asks `go list -deps` which files make up each package for
// the target platform (with CGO_ENABLED=1, so cgo files count, but never
// -compiled, so cgo never runs), parses them, and type-checks every
// package in dependency order with go/types in FakeImportC mode: `import
// "C"` is accepted and C.name expressions are left untyped. Dependencies
// (the standard library, vz, x/sys) are checked without function bodies and
// their errors are ignored; errors in the project's own packages are
// printed and make the command exit 1.
//
// Usage, from the repository root:
//
//	go run ./tools/darwincheck [-targets darwin/arm64,darwin/amd64] [-tags t] [-test] [-v] [packages]
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
)

func main() {
	targets := flag.String("targets", "darwin/arm64,darwin/amd64", "comma-separated GOOS/GOARCH pairs")
	tags := flag.String("tags", "", "comma-separated build tags")
	tests := flag.Bool("test", false, "also check _test.go files")
	verbose := flag.Bool("v", false, "also print skipped packages and errors in dependencies")
	flag.Parse()
	patterns := flag.Args()
	if len(patterns) == 0 {
		patterns = []string{"./..."}
	}

	failed := false
	for _, t := range strings.Split(*targets, ",") {
		goos, goarch, ok := strings.Cut(strings.TrimSpace(t), "/")
		if !ok {
			fmt.Fprintf(os.Stderr, "darwincheck: target %q is not GOOS/GOARCH\n", t)
			os.Exit(2)
		}
		res, err := Check(Options{GOOS: goos, GOARCH: goarch, Tags: *tags, Tests: *tests, Patterns: patterns})
		if err != nil {
			fmt.Fprintf(os.Stderr, "darwincheck: %s/%s: %v\n", goos, goarch, err)
			os.Exit(2)
		}
		for _, e := range res.Errors {
			fmt.Printf("%s/%s: %s\n", goos, goarch, e)
		}
		if *verbose {
			for _, s := range res.Skipped {
				fmt.Printf("%s/%s: skipped: %s\n", goos, goarch, s)
			}
			for _, e := range res.DepErrors {
				fmt.Printf("%s/%s: dependency: %s\n", goos, goarch, e)
			}
		}
		fmt.Fprintf(os.Stderr, "darwincheck: %s/%s: %d packages checked, %d errors (%d in dependencies, ignored)\n",
			goos, goarch, res.Packages, len(res.Errors), len(res.DepErrors))
		failed = failed || len(res.Errors) > 0
	}
	if failed {
		os.Exit(1)
	}
}
