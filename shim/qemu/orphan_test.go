//go:build linux

package qemu

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"hypefs/shim/engine"
)

// shimChildEnv makes the test binary act as a shim: boot a VM, print
// QEMU's pid, keep the Go runtime busy (so idle threads come and go) and
// wait to be killed.
const shimChildEnv = "QEMU_TEST_SHIM_CHILD"

func runShimChild() {
	spec := engine.Spec{
		Name: "orphan", RunDir: os.Getenv("QEMU_TEST_RUN"), Kernel: os.Getenv("QEMU_TEST_KERNEL"),
		Initramfs: os.Getenv("QEMU_TEST_INITRD"), Cmdline: os.Getenv("QEMU_TEST_CMDLINE"),
		MemoryMiB: 128, Accel: "tcg", User: testUser(),
	}
	m, err := New().Boot(context.Background(), spec, nil)
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	fmt.Println("pid", m.PID())
	for {
		done := make(chan bool)
		for range 8 {
			go func() { runtime.Gosched(); done <- true }()
		}
		for range 8 {
			<-done
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A shim killed with SIGKILL takes its QEMU with it (Pdeathsig), even
// though the Go runtime started QEMU from some thread of its own.
func TestShimKilledTakesQEMU(t *testing.T) {
	if skipReason != "" {
		t.Skip(skipReason)
	}
	t.Parallel()
	run, err := os.MkdirTemp("", "q")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(run)
	child := exec.Command(os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), shimChildEnv+"=1", "QEMU_TEST_RUN="+run,
		"QEMU_TEST_KERNEL="+kit.Kernel, "QEMU_TEST_INITRD="+kit.Initramfs, "QEMU_TEST_CMDLINE="+kit.Cmdline)
	out, _ := child.StdoutPipe()
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(out).ReadString('\n')
	pid, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "pid ")))
	if err != nil {
		child.Process.Kill()
		child.Wait()
		t.Fatalf("child said %q", line)
	}
	time.Sleep(500 * time.Millisecond)
	child.Process.Kill()
	child.Wait()
	deadline := time.Now().Add(5 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("qemu %d outlived its killed shim", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// alive reports whether pid runs (a zombie waiting for init does not).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || (s[i+2] != 'Z' && s[i+2] != 'X')
}
