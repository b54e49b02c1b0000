#!/bin/sh
# Builds the Kubernetes control plane the kube tests start on loopback
# (kube-apiserver, kube-scheduler, etcd) from the Go module proxy, once, into
# a cache outside the tree whose path names the versions. Safe to run again:
# it does nothing when the three binaries are there. The first build takes
# about 5-8 minutes on 2 cores (under 2.5 GB of memory); the tools module
# tools/kube pins the versions.
set -eu

cd "$(dirname "$0")/../tools/kube"
KUBE_VERSION=v1.37.2
ETCD_VERSION=v3.7.0
ROOT="${HYPEFS_KUBE_CACHE:-/var/lib/hypefs/kube}"
DIR="$ROOT/kubernetes-$KUBE_VERSION-etcd-$ETCD_VERSION"

if [ -x "$DIR/kube-apiserver" ] && [ -x "$DIR/kube-scheduler" ] && [ -x "$DIR/etcd" ]; then
	exit 0
fi
echo "deps: building kube-apiserver, kube-scheduler and etcd into $DIR (once; about 5-8 minutes)"
mkdir -p "$ROOT"
chmod 0755 "$ROOT"
tmp=$(mktemp -d "$ROOT/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
ver="k8s.io/component-base/version"
ldflags="-s -w -X $ver.gitVersion=$KUBE_VERSION -X $ver.gitMajor=1 -X $ver.gitMinor=37 -X $ver.gitTreeState=clean"
# CGO off: static binaries that need nothing of the host.
export CGO_ENABLED=0
nice -n 10 go build -trimpath -ldflags "$ldflags" -o "$tmp/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
nice -n 10 go build -trimpath -ldflags "$ldflags" -o "$tmp/kube-scheduler" k8s.io/kubernetes/cmd/kube-scheduler
nice -n 10 go build -trimpath -ldflags "-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3
chmod 0755 "$tmp" "$tmp"/*
rm -rf "$DIR"
mv "$tmp" "$DIR"
trap - EXIT
echo "deps: control plane ready in $DIR"
