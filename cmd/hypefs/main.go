// Command hypefs manages virtual machines through a filesystem.
//
//	hypefs mount [flags] MOUNTPOINT   serve the tree over FUSE (foreground)
//	hypefs serve --9p ADDR [flags]    serve the tree over 9P only (foreground)
//	hypefs kernel fetch [flags]       download the guest kernel into the cache
//	hypefs kubelet --mount DIR [...]  be a Kubernetes node (runs hypefs-kubelet)
//	hypefs version
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"

	"hypefs/backend/guest"
	"hypefs/backend/image"
	"hypefs/backend/instance"
	"hypefs/backend/layout"
	hfs "hypefs/fs"
	"hypefs/fs/fusefs"
)

// Version is set at build time (-ldflags "-X main.Version=...").
var Version = "dev"

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	switch os.Args[1] {
	case "mount":
		mount(os.Args[2:], false)
	case "serve":
		mount(os.Args[2:], true)
	case "kernel":
		kernel(os.Args[2:])
	case "kubelet":
		kubelet(os.Args[2:])
	case "version", "--version", "-v":
		fmt.Println("hypefs", Version)
	default:
		usage()
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, `usage:
  hypefs mount [--data DIR] [--run DIR] [--kernels DIR] [--bin DIR] [--9p ADDR [--9p-allow-remote]]
               [--network auto|on|off] [--bridge NAME] [--subnet CIDR] [--group NAME] [--qemu-user USER]
               [--image-max-bytes SIZE] [--max-pulls N] [--max-disk SIZE] [--log-max SIZE]
               [--follow-memory SIZE] MOUNTPOINT
  hypefs serve --9p ADDR [--9p-allow-remote] [--data DIR] [--run DIR] [--kernels DIR] [--bin DIR] [...]
  hypefs kernel fetch [--kernels DIR] [--arch amd64|arm64] [--deb FILE]
  hypefs kubelet --mount DIR [--kubeconfig FILE] [--node-name NAME] [...]   (see docs/kubernetes.md)
  hypefs version`)
	os.Exit(2)
}

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func layoutFlags(fs *flag.FlagSet) *layout.Layout {
	l := &layout.Layout{}
	fs.StringVar(&l.Data, "data", env("HYPEFS_DATA", "/var/lib/hypefs"), "persistent state (env HYPEFS_DATA)")
	fs.StringVar(&l.Run, "run", env("HYPEFS_RUN", "/run/hypefs"), "sockets and pid files (env HYPEFS_RUN)")
	fs.StringVar(&l.Kernels, "kernels", env("HYPEFS_KERNELS", "/var/lib/hypefs/kernels"), "guest kernel cache (env HYPEFS_KERNELS)")
	return l
}

func selfDir() string {
	exe, err := os.Executable()
	if err != nil {
		return "."
	}
	return filepath.Dir(exe)
}

// mount runs the daemon: the tree over FUSE at MOUNTPOINT, or, for
// `hypefs serve` (serveOnly), over 9P alone.
func mount(args []string, serveOnly bool) {
	fl := flag.NewFlagSet("mount", flag.ExitOnError)
	lay := layoutFlags(fl)
	bin := fl.String("bin", selfDir(), "directory holding hypefs-shim and hypefs-init")
	debug := fl.Bool("debug", false, "log every FUSE request")
	netf := addNetworkFlags(fl)
	nine := ninePFlags(fl)
	limf := addLimitFlags(fl)
	fl.Parse(args)
	if !serveOnly && fl.NArg() != 1 || serveOnly && (fl.NArg() != 0 || nine.addr == "") {
		usage()
	}
	mnt, _ := filepath.Abs(fl.Arg(0))
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	// Signals first: a Ctrl-C at any moment must unmount, never leave a
	// dead mount. And a daemon whose output pipe is gone (make run | tee,
	// then Ctrl-C, which ends tee too) must not die of SIGPIPE on its
	// next log line before it has unmounted: its writes just fail.
	signal.Ignore(syscall.SIGPIPE)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	lim, err := limf.parse()
	if err != nil {
		fatal(err)
	}
	hvUser, err := limf.hypervisorUser(log)
	if err != nil {
		fatal(err)
	}
	if err := lockData(*lay); err != nil {
		fatal(err)
	}
	hfs.SetFollowMemory(int(lim.followMem))

	if !serveOnly {
		// Before anything starts: dead mounts of a crash go, and a live
		// hypefs on this mountpoint is refused.
		if err := fusefs.ClearStale(mnt); err != nil {
			fatal(err)
		}
	}
	var tree *hfs.Tree
	var treeRef atomic.Pointer[hfs.Tree] // events before the tree exists are dropped
	onEvent := func(ev instance.Event) {
		if t := treeRef.Load(); t != nil {
			t.Event(ev)
		}
	}
	netPart, netPolicy, err := netf.open(*lay, log)
	if err != nil {
		fatal(err)
	}
	images, err := image.Open(image.Options{Dir: lay.ImagesDir(), Log: log, InstanceDir: lay.InstanceDir,
		MaxBytes: lim.imageMax, MaxPulls: limf.maxPulls})
	if err != nil {
		fatal(err)
	}
	m, err := instance.Open(instance.Options{Layout: *lay, BinDir: *bin, Log: log, OnEvent: onEvent,
		Parts: []instance.Part{images.Part(), netPart}, Network: netPolicy,
		Limits: instance.Limits{MaxDiskMiB: lim.maxDiskMiB}, HypervisorUser: hvUser, LogMax: lim.logMax})
	if err != nil {
		fatal(err)
	}
	tree = hfs.New(m, Version)
	if gid, ok := limf.groupID(log); ok {
		tree.ShareWith(gid)
	}
	tree.AddHostFacts(netPart.HostFacts)
	tree.AddRoot("images", hfs.NewImagesDir(images))
	treeRef.Store(tree)
	stop9p, err := nine.start(tree, log)
	if err != nil {
		m.Close()
		fatal(err)
	}
	if serveOnly {
		s := <-sig
		stop9p()
		log.Info("signal: stopped serving 9P; VMs keep running", "signal", s.String())
		m.Close()
		return
	}
	srv, err := fusefs.Mount(mnt, tree, *debug)
	if err != nil {
		stop9p()
		m.Close()
		fatal(err)
	}
	waker := srv.StartWaker()
	log.Info("hypefs mounted", "mountpoint", mnt, "data", lay.Data, "run", lay.Run, "instances", len(m.Names()))

	done := make(chan struct{})
	go func() { srv.Wait(); close(done) }()
	// Unmount first, then say so: the log line may be the write that
	// fails.
	select {
	case s := <-sig:
		stop9p()
		waker.Stop()
		unmount(srv.Unmount, mnt, log)
		log.Info("signal: unmounted; VMs keep running", "signal", s.String())
	case <-done:
		stop9p()
		waker.Stop()
		log.Info("unmounted from outside; exiting; VMs keep running")
	}
	m.Close()
}

// unmount tries a clean unmount, and falls back to a lazy (Linux) or
// forced (macOS) one when files are still open or a shell sits inside
// (EBUSY).
func unmount(clean func() error, mnt string, log *slog.Logger) {
	for k := 0; k < 5; k++ {
		if err := clean(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := fusefs.ForceUnmount(mnt); err != nil {
		log.Warn("forced unmount failed", "err", err)
	}
}

func kernel(args []string) {
	if len(args) < 1 || args[0] != "fetch" {
		usage()
	}
	fl := flag.NewFlagSet("kernel fetch", flag.ExitOnError)
	lay := layoutFlags(fl)
	deb := fl.String("deb", "", "use this linux-image .deb instead of downloading one")
	arch := fl.String("arch", runtime.GOARCH, "guest architecture: amd64 or arm64 (arm64 also serves macOS hosts)")
	fl.Parse(args[1:])
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	var v string
	var err error
	if *deb != "" {
		v, err = guest.FetchDeb(ctx, lay.Kernels, *deb)
	} else {
		v, err = guest.Fetch(ctx, lay.Kernels, *arch)
	}
	if err != nil {
		fatal(err)
	}
	fmt.Printf("guest kernel %s in %s\n", v, lay.Kernels)
	if *deb == "" {
		fmt.Printf("guest busybox %s\n", guest.BusyboxPath(lay.Kernels, *arch))
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "hypefs:", err)
	os.Exit(1)
}
