#!/bin/sh
# go vet for macOS (darwin/arm64), tests included, on every package that
# builds without cgo. A package that links Virtualization.framework
# (github.com/Code-Hex/vz), itself or through its tests, needs Apple's SDK
# to build; tools/darwincheck type-checks those instead.
set -eu
cd "$(dirname "$0")/.."
GO=${GO:-go}
export GOOS=darwin GOARCH=arm64
pkgs=$(CGO_ENABLED=1 "$GO" list -test -f '{{.ImportPath}}{{range .Deps}} {{.}}{{end}}' ./... | awk '
	{ p = $1; sub(/(\.test|_test)$/, "", p) }
	/ github\.com\/Code-Hex\/vz\/v3( |$)/ { skip[p] = 1; next }
	{ all[p] = 1 }
	END { for (p in all) if (!(p in skip)) print p }' | sort)
exec "$GO" vet $pkgs
