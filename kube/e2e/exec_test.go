package e2e

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/remotecommand"
	utilexec "k8s.io/utils/exec"

	"hypefs/internal/testenv"
	"hypefs/kube/internal/kubetest"
)

const noJobs = "needs exec jobs: instances/NAME/exec does not exist in this hypefs"

// hasJobs says whether the daemon's instances have exec jobs (an
// instance directory with an exec entry).
func hasJobs(t *testing.T, d *testenv.Daemon) bool {
	t.Helper()
	probe := d.Path("instances", "exec-probe")
	if err := os.Mkdir(probe, 0o755); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(probe)
	_, err := os.Stat(d.Inst("exec-probe", "exec"))
	return err == nil
}

// kubectlExec runs `kubectl exec [-i] [-t] POD -- cmd` through the API
// server (SPDY, as kubectl does) and returns stdout and stderr.
func kubectlExec(c *kubetest.Cluster, ns, pod string, cmd []string, stdin string, tty bool) (string, string, error) {
	req := c.Client.CoreV1().RESTClient().Post().Resource("pods").Namespace(ns).Name(pod).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{Command: cmd, Stdin: stdin != "", Stdout: true, Stderr: !tty, TTY: tty},
			scheme.ParameterCodec)
	ex, err := remotecommand.NewSPDYExecutor(c.Config, "POST", req.URL())
	if err != nil {
		return "", "", err
	}
	var out, errOut bytes.Buffer
	opts := remotecommand.StreamOptions{Stdout: &out, Tty: tty}
	if !tty {
		opts.Stderr = &errOut
	}
	if stdin != "" {
		opts.Stdin = strings.NewReader(stdin)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err = ex.StreamWithContext(ctx, opts)
	return out.String(), errOut.String(), err
}

// attachSees runs `kubectl attach POD` (stdout only) until the program's
// output, read from the VM's console, shows want.
func attachSees(t *testing.T, c *kubetest.Cluster, ns, pod, want string) {
	t.Helper()
	req := c.Client.CoreV1().RESTClient().Post().Resource("pods").Namespace(ns).Name(pod).SubResource("attach").
		VersionedParams(&corev1.PodAttachOptions{Stdout: true}, scheme.ParameterCodec)
	ex, err := remotecommand.NewSPDYExecutor(c.Config, "POST", req.URL())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: pw}))
	}()
	var seen bytes.Buffer
	buf := make([]byte, 4096)
	for !strings.Contains(seen.String(), want) {
		n, err := pr.Read(buf)
		seen.Write(buf[:n])
		if err != nil {
			t.Fatalf("kubectl attach: %v after %q", err, seen.String())
		}
	}
	cancel()
	pr.Close()
}

// kubectl exec through exec jobs: output on stdout and stderr apart, the
// exit code passed on, stdin with its end, a tty; no job is left behind.
func TestExec(t *testing.T) {
	d := testenv.NewDaemon(t)
	if !hasJobs(t, d) {
		t.Skip(noJobs)
	}
	c := cluster(t)
	ref := busybox(t)
	ns := c.Namespace(t, "exec")
	k := StartKubelet(t, c, d, "hfs-exec")
	createPod(t, c, podSpec(ns, "shell", k.Node, ref, "sleep 3600"))
	inst := instanceOf(t, waitPod(t, c, ns, "shell", 2*time.Minute, "Running", running))

	if out, _, err := kubectlExec(c, ns, "shell", []string{"uname", "-a"}, "", false); err != nil || !strings.HasPrefix(out, "Linux") {
		t.Errorf("exec uname -a: %q, %v", out, err)
	}
	out, errOut, err := kubectlExec(c, ns, "shell", []string{"sh", "-c", "echo out; echo err >&2; exit 3"}, "", false)
	var code utilexec.ExitError
	if out != "out\n" || errOut != "err\n" || !errors.As(err, &code) || code.ExitStatus() != 3 {
		t.Errorf("exec exit 3: stdout %q stderr %q err %v", out, errOut, err)
	}
	if out, _, err := kubectlExec(c, ns, "shell", []string{"wc", "-l"}, "a\nb\n", false); err != nil || strings.TrimSpace(out) != "2" {
		t.Errorf("exec -i wc -l: %q, %v", out, err)
	}
	if out, _, err := kubectlExec(c, ns, "shell", []string{"tty"}, "", true); err != nil || !strings.HasPrefix(strings.TrimSpace(out), "/dev/") {
		t.Errorf("exec -t tty: %q, %v", out, err)
	}
	if jobs, err := os.ReadDir(d.Inst(inst, "exec")); err != nil || len(jobs) != 0 {
		t.Errorf("jobs left behind: %v %v", jobs, err)
	}
}
