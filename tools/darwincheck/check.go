package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"go/types"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Options select what Check type-checks.
type Options struct {
	Dir      string // where go list runs (the module root); "" is the current directory
	GOOS     string
	GOARCH   string
	Tags     string   // comma-separated build tags
	Tests    bool     // include _test.go files
	Patterns []string // package patterns; empty means ./...
}

// Result is what Check found.
type Result struct {
	Packages  int      // packages type-checked, dependencies included
	Errors    []string // errors in the named packages
	DepErrors []string // errors in dependencies (ignored: their bodies are skipped)
	Skipped   []string // named packages with no files for the target
}

// listed is the subset of `go list -json` that Check reads.
type listed struct {
	ImportPath string
	Name       string
	Dir        string
	GoFiles    []string
	CgoFiles   []string
	ImportMap  map[string]string
	DepOnly    bool
	Module     *struct{ GoVersion string }
	Error      *struct{ Err string }
}

// Check lists the packages for the target platform and type-checks them.
func Check(o Options) (Result, error) {
	pkgs, err := list(o)
	if err != nil {
		return Result{}, err
	}
	var res Result
	fset := token.NewFileSet()
	checked := map[string]*types.Package{"unsafe": types.Unsafe}
	sizes := types.SizesFor("gc", o.GOARCH)
	if sizes == nil {
		return Result{}, fmt.Errorf("GOARCH %q is unknown to go/types", o.GOARCH)
	}
	for _, p := range pkgs {
		if p.ImportPath == "unsafe" {
			continue
		}
		// `go list -test` also lists the generated test main ("x.test"),
		// whose source lives in the build cache.
		if o.Tests && p.Name == "main" && strings.HasSuffix(p.ImportPath, ".test") {
			continue
		}
		own := !p.DepOnly
		report := func(msg string) {
			if own {
				res.Errors = append(res.Errors, msg)
			} else {
				res.DepErrors = append(res.DepErrors, msg)
			}
		}
		if p.Error != nil {
			msg := strings.TrimSpace(p.Error.Err)
			// A package written for other platforms only (a Linux-only
			// command) has nothing to check here; that is not an error.
			if own && strings.Contains(msg, "build constraints exclude all Go files") {
				res.Skipped = append(res.Skipped, p.ImportPath)
				continue
			}
			report(p.ImportPath + ": " + msg)
		}
		files := parseFiles(fset, p, own, report)
		conf := types.Config{
			FakeImportC:      true,
			IgnoreFuncBodies: !own,
			Sizes:            sizes,
			Importer:         mapImporter{pkgs: checked, importMap: p.ImportMap},
			Error:            func(err error) { report(err.Error()) },
		}
		if p.Module != nil && p.Module.GoVersion != "" {
			conf.GoVersion = "go" + p.Module.GoVersion
		}
		tp, _ := conf.Check(p.ImportPath, fset, files, nil)
		checked[p.ImportPath] = tp
		res.Packages++
	}
	return res, nil
}

// list runs `go list -e -deps`, which prints every package after its
// dependencies: the order Check type-checks them in.
func list(o Options) ([]listed, error) {
	args := []string{"list", "-e", "-deps",
		"-json=ImportPath,Name,Dir,GoFiles,CgoFiles,ImportMap,DepOnly,Module,Error"}
	if o.Tags != "" {
		args = append(args, "-tags", o.Tags)
	}
	if o.Tests {
		args = append(args, "-test")
	}
	patterns := o.Patterns
	if len(patterns) == 0 {
		patterns = []string{"./..."}
	}
	args = append(append(args, "--"), patterns...)
	cmd := exec.Command("go", args...)
	cmd.Dir = o.Dir
	cmd.Env = append(os.Environ(), "GOOS="+o.GOOS, "GOARCH="+o.GOARCH, "CGO_ENABLED=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go list: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	var pkgs []listed
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p listed
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			return pkgs, nil
		} else if err != nil {
			return nil, fmt.Errorf("decode go list output: %w", err)
		}
		pkgs = append(pkgs, p)
	}
}

func parseFiles(fset *token.FileSet, p listed, own bool, report func(string)) []*ast.File {
	mode := parser.SkipObjectResolution
	if own {
		mode |= parser.ParseComments // keeps //go: directives visible to the checker
	}
	var files []*ast.File
	for _, name := range append(append([]string(nil), p.GoFiles...), p.CgoFiles...) {
		f, err := parser.ParseFile(fset, filepath.Join(p.Dir, name), nil, mode)
		if err != nil {
			report(err.Error())
		}
		if f != nil {
			files = append(files, f)
		}
	}
	return files
}

// mapImporter resolves imports to packages already checked, through the
// package's ImportMap (vendoring, test variants).
type mapImporter struct {
	pkgs      map[string]*types.Package
	importMap map[string]string
}

func (m mapImporter) Import(path string) (*types.Package, error) {
	if to, ok := m.importMap[path]; ok {
		path = to
	}
	if p := m.pkgs[path]; p != nil {
		return p, nil
	}
	return nil, fmt.Errorf("package %q was not listed before its importer", path)
}
