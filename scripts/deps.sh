#!/bin/sh
# Installs what hypefs needs on Debian/Ubuntu, idempotently: Debian packages
# that are missing, the guest kernel into the kernel cache, and the
# Kubernetes control plane the kube tests run (built once, about 5-8
# minutes the first time). Safe to run again; it does nothing when
# everything is there.
set -eu

KERNELS="${HYPEFS_KERNELS:-/var/lib/hypefs/kernels}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
	SUDO="sudo"
fi

case "$(uname -m)" in
x86_64) qemu_pkg=qemu-system-x86; qemu_bin=qemu-system-x86_64; kernel_file=vmlinux ;;
aarch64) qemu_pkg=qemu-system-arm; qemu_bin=qemu-system-aarch64; kernel_file=Image ;;
*) echo "deps: unsupported machine $(uname -m)" >&2; exit 1 ;;
esac

# package:command-or-file that proves it is installed
need="$qemu_pkg:$qemu_bin busybox-static:/bin/busybox fuse3:fusermount3 inotify-tools:inotifywait libglib2.0-bin:gio e2fsprogs:mkfs.ext4 erofs-utils:mkfs.erofs iproute2:ip ca-certificates:/etc/ssl/certs/ca-certificates.crt"
# The programs the habits tests (e2e) drive against the tree, as users do.
need="$need tar:tar zip:zip rsync:rsync vim:vim ed:ed sed:sed python3:python3 jq:jq mc:mc bsdutils:script"
missing=""
for pair in $need; do
	pkg=${pair%%:*}
	probe=${pair#*:}
	case "$probe" in
	/*) [ -e "$probe" ] && continue ;;
	*) command -v "$probe" >/dev/null 2>&1 && continue ;;
	esac
	missing="$missing $pkg"
done
# Optional: on x86-64, qemu-system-arm lets "make test" boot the arm64 guest
# (the one macOS hosts run) under TCG, about 15 s in backend/guest. Set
# HYPEFS_DEPS_ARM64=0 to skip it; the test then skips and says why.
if [ "$(uname -m)" = x86_64 ] && [ "${HYPEFS_DEPS_ARM64:-1}" != 0 ] && ! command -v qemu-system-aarch64 >/dev/null 2>&1; then
	missing="$missing qemu-system-arm"
fi
# busybox-static provides /bin/busybox, but so does the dynamic busybox:
# the guest needs the static one.
if [ -e /bin/busybox ] && ! dpkg -s busybox-static >/dev/null 2>&1; then
	missing="$missing busybox-static"
fi
if [ -n "$missing" ]; then
	echo "deps: installing$missing"
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
fi

if ! command -v go >/dev/null 2>&1; then
	echo "deps: Go 1.26 or newer is needed (https://go.dev/dl/); put it on PATH and run again" >&2
	exit 1
fi

# The guest kernel: taken from Debian's linux-image package, never installed on the host.
# (An arm64 Image fetched for tests or a Mac does not count on x86-64.)
if ! ls "$KERNELS"/*/"$kernel_file" >/dev/null 2>&1; then
	echo "deps: fetching the guest kernel into $KERNELS"
	$SUDO mkdir -p "$KERNELS"
	$SUDO env HYPEFS_KERNELS="$KERNELS" go run ./cmd/hypefs kernel fetch
fi
# The arm64 guest (what macOS hosts run), for the tests that boot it under
# qemu-system-aarch64: fetched here, so that tests never download.
if [ "$(uname -m)" = x86_64 ] && [ "${HYPEFS_DEPS_ARM64:-1}" != 0 ] && command -v qemu-system-aarch64 >/dev/null 2>&1 &&
	! ls "$KERNELS"/*/Image >/dev/null 2>&1; then
	echo "deps: fetching the arm64 guest kernel into $KERNELS"
	$SUDO env HYPEFS_KERNELS="$KERNELS" go run ./cmd/hypefs kernel fetch --arch arm64
fi
# The Kubernetes control plane for the kube tests and benchmarks (kube/),
# built once from the Go module proxy into a cache named after its versions.
# Set HYPEFS_DEPS_KUBE=0 to skip it; those tests then skip and say why.
if [ "${HYPEFS_DEPS_KUBE:-1}" != 0 ]; then
	"$(dirname "$0")/kube-tools.sh"
fi
echo "deps: ok"
