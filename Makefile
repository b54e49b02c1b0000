# hypefs: virtual machines as files.
#   make run    install what is missing, build, mount the tree at ./mnt
#   make test   install what is missing, build, run every test
#   make bench  the benchmarks, ending with one BENCH line per figure
#
# kube/ (hypefs kubelet, the Kubernetes node) is a Go module of its own, so
# that the Kubernetes client stays out of the daemon's build: each target
# runs in both modules.

GO      ?= go
BIN     := $(CURDIR)/bin
MNT     ?= $(CURDIR)/mnt
VERSION := $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.Version=$(VERSION)
export HYPEFS_KERNELS ?= /var/lib/hypefs/kernels

.PHONY: all deps build run test unit bench vet clean

all: build

deps:
	@./scripts/deps.sh

build:
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/hypefs-init ./cmd/hypefs-init
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/hypefs ./cmd/hypefs
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/hypefs-shim ./cmd/hypefs-shim
	cd kube && $(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/hypefs-kubelet ./cmd/hypefs-kubelet

run: deps build
	@mkdir -p $(MNT)
	@echo
	@echo "hypefs is mounting at $(MNT). In another shell, try:"
	@echo "  mkdir $(MNT)/instances/hello"
	@echo "  echo '{}' > $(MNT)/instances/hello/config"
	@echo "  cat $(MNT)/instances/hello/status"
	@echo "  tail -f $(MNT)/instances/hello/log"
	@echo "  echo 'uname -a' > $(MNT)/instances/hello/console"
	@echo "  echo kill > $(MNT)/instances/hello/ctl && rmdir $(MNT)/instances/hello"
	@echo "Ctrl-C unmounts (VMs keep running; mount again to find them)."
	@echo "Root and the members of the group hypefs may use it (groupadd hypefs; usermod -aG hypefs USER)."
	@echo
	$(BIN)/hypefs mount --data $${HYPEFS_DATA:-/var/lib/hypefs} --run $${HYPEFS_RUN:-/run/hypefs} $(MNT)

# go vet runs for macOS too (scripts/vet-darwin.sh): every package that
# builds without cgo, tests included.
vet:
	$(GO) vet ./...
	GO=$(GO) ./scripts/vet-darwin.sh
	cd kube && $(GO) vet ./...

test: deps build vet
	$(GO) test -race -count=1 -timeout 25m ./...
	cd kube && $(GO) test -race -count=1 -timeout 15m ./...

bench: deps build
	$(GO) test -run '^$$' -bench . -benchtime 1x -count 1 -timeout 30m ./bench/ | tee bench.out
	cd kube && $(GO) test -run '^$$' -bench . -benchtime 1x -count 1 -timeout 20m ./bench/ | tee -a ../bench.out
	@grep '^BENCH ' bench.out || true

clean:
	rm -rf $(BIN) bench.out

-include darwin.mk
