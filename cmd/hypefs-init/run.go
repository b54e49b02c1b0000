//go:build linux

package main

import (
	"fmt"
	"os"
	"syscall"
)

// runMain starts what the guest is for and returns a channel that says
// how it ended. Today that is the built-in shell; running an image's
// entrypoint from a root disk is meant to become another case here.
func runMain(cfg config, r *reaper) (<-chan string, error) {
	switch cfg.run {
	case "shell":
		pid, err := startShell()
		if err != nil {
			return nil, fmt.Errorf("shell: %w", err)
		}
		return prefix("shell exited: ", r.wait(pid)), nil
	case "image":
		ch, err := runImage(r)
		if err != nil {
			return nil, fmt.Errorf("image: %w", err)
		}
		return ch, nil
	case "poweroff":
		ch := make(chan string, 1)
		ch <- "hypefs.run=poweroff"
		return ch, nil
	default:
		return nil, fmt.Errorf("unknown hypefs.run=%s", cfg.run)
	}
}

func prefix(p string, in <-chan string) <-chan string {
	out := make(chan string, 1)
	go func() { out <- p + <-in }()
	return out
}

// shellEnv is the environment of the console shell.
var shellEnv = []string{
	"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	"HOME=/root", "USER=root", "LOGNAME=root", "SHELL=/bin/sh", "TERM=linux",
	`PS1=hypefs:\w# `,
}

// startShell runs busybox sh on the console's tty in a new session with
// that tty as its controlling terminal, so job control and Ctrl-C work
// (a shell on /dev/console itself cannot have a controlling tty).
func startShell() (int, error) {
	tty, err := os.OpenFile(consoleTTY(), os.O_RDWR, 0)
	if err != nil {
		return 0, err
	}
	defer tty.Close()
	p, err := os.StartProcess("/bin/sh", []string{"-sh"}, &os.ProcAttr{
		Dir:   "/root",
		Env:   shellEnv,
		Files: []*os.File{tty, tty, tty},
		Sys:   &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0},
	})
	if err != nil {
		return 0, err
	}
	pid := p.Pid
	p.Release() // the reaper waits for it
	return pid, nil
}
