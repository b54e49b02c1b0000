# macOS targets, included by the Makefile. Run them on a Mac: the shim links
# Virtualization.framework through cgo and needs Xcode's command line tools.
#
#   make build-darwin   build bin/hypefs, bin/hypefs-shim (signed) and the
#                       arm64 guest init bin/hypefs-init
#   make sign           re-apply vz.entitlements to bin/hypefs-shim; every
#                       build drops the signature, and an unsigned shim cannot
#                       create VMs
#   make darwincheck    type-check every package for darwin/arm64 and
#                       darwin/amd64; runs anywhere (no cgo, no SDK)

DARWIN_BIN ?= bin
DARWIN_GO ?= go
DARWIN_ENTITLEMENTS ?= vz.entitlements

.PHONY: build-darwin sign darwincheck

build-darwin:
	@test "$$(uname -s)" = Darwin || { echo "build-darwin: run this on a Mac (use 'make darwincheck' elsewhere)" >&2; exit 1; }
	mkdir -p $(DARWIN_BIN)
	CGO_ENABLED=1 $(DARWIN_GO) build -o $(DARWIN_BIN)/hypefs ./cmd/hypefs
	CGO_ENABLED=1 $(DARWIN_GO) build -o $(DARWIN_BIN)/hypefs-shim ./cmd/hypefs-shim
	GOOS=linux GOARCH=arm64 CGO_ENABLED=0 $(DARWIN_GO) build -o $(DARWIN_BIN)/hypefs-init ./cmd/hypefs-init
	$(MAKE) sign

sign:
	codesign --force --entitlements $(DARWIN_ENTITLEMENTS) -s - $(DARWIN_BIN)/hypefs-shim
	codesign --display --entitlements - $(DARWIN_BIN)/hypefs-shim

darwincheck:
	$(DARWIN_GO) run ./tools/darwincheck
