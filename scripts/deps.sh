#!/bin/sh
# Installs what hypefs needs on Debian/Ubuntu, idempotently: Debian packages
# that are missing, then the guest kernel into the kernel cache. Safe to
# run again; it does nothing when everything is there.
set -eu

KERNELS="${HYPEFS_KERNELS:-/var/lib/hypefs/kernels}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
	SUDO="sudo"
fi

case "$(uname -m)" in
x86_64) qemu_pkg=qemu-system-x86; qemu_bin=qemu-system-x86_64 ;;
aarch64) qemu_pkg=qemu-system-arm; qemu_bin=qemu-system-aarch64 ;;
*) echo "deps: unsupported machine $(uname -m)" >&2; exit 1 ;;
esac

# package:command-or-file that proves it is installed
need="$qemu_pkg:$qemu_bin busybox-static:/bin/busybox fuse3:fusermount3 inotify-tools:inotifywait libglib2.0-bin:gio e2fsprogs:mkfs.ext4 erofs-utils:mkfs.erofs iproute2:ip ca-certificates:/etc/ssl/certs/ca-certificates.crt"
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
if ! ls "$KERNELS"/*/vmlinux >/dev/null 2>&1 && ! ls "$KERNELS"/*/Image >/dev/null 2>&1; then
	echo "deps: fetching the guest kernel into $KERNELS"
	$SUDO mkdir -p "$KERNELS"
	$SUDO env HYPEFS_KERNELS="$KERNELS" go run ./cmd/hypefs kernel fetch
fi
echo "deps: ok"
