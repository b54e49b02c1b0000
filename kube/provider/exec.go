package provider

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/virtual-kubelet/virtual-kubelet/errdefs"
	"github.com/virtual-kubelet/virtual-kubelet/node/api"
	statsv1alpha1 "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
	utilexec "k8s.io/utils/exec"
)

// jobConfig is an exec job's config (instances/NAME/exec/JOB/config).
type jobConfig struct {
	Cmd     []string          `json:"cmd"`
	Env     map[string]string `json:"env,omitempty"`
	Workdir string            `json:"workdir,omitempty"`
	User    string            `json:"user,omitempty"`
	TTY     bool              `json:"tty"`
	Stdin   bool              `json:"stdin"`
}

// ErrNoJobs is returned by exec when the tree has no exec jobs.
var ErrNoJobs = errors.New("exec jobs are not available: instances/NAME/exec does not exist in this hypefs")

// outputPoll is how often a job's stdout and stderr, growing regular
// files, are checked for more while the job runs (as tail -f does).
const outputPoll = 20 * time.Millisecond

// RunInContainer serves `kubectl exec` with an exec job in the Pod's VM:
// mkdir instances/NAME/exec/JOB, its config written, stdin copied to its
// stdin file (closed at the end of the input), stdout and stderr followed
// until the job's wait file says it ended, and the job removed. A
// command's exit code other than 0 is passed on. When the client goes
// away, the job is killed.
func (p *Provider) RunInContainer(ctx context.Context, namespace, podName, container string, cmd []string, attach api.AttachIO) error {
	inst, err := p.runningInstance(namespace, podName, container)
	if err != nil {
		return err
	}
	execDir := p.tree.Inst(inst, "exec")
	if _, err := os.Stat(execDir); errors.Is(err, fs.ErrNotExist) {
		return errdefs.AsNotFound(fmt.Errorf("%w (instance %s)", ErrNoJobs, inst))
	}
	j, err := startJob(execDir, jobConfig{Cmd: cmd, TTY: attach.TTY(), Stdin: attach.Stdin() != nil})
	if err != nil {
		return err
	}
	defer j.remove()
	go drainResize(ctx, attach.Resize())
	if in := attach.Stdin(); in != nil {
		go j.feed(in)
	}
	done := make(chan struct{})
	var outs sync.WaitGroup
	for _, o := range []struct {
		file string
		w    io.WriteCloser
	}{{"stdout", attach.Stdout()}, {"stderr", attach.Stderr()}} {
		if o.w == nil {
			continue
		}
		outs.Add(1)
		go func() {
			defer outs.Done()
			followOutput(filepath.Join(j.dir, o.file), o.w, done)
		}()
	}
	code, err := j.wait(ctx)
	close(done)
	outs.Wait()
	if err != nil {
		return err
	}
	if code != 0 {
		return utilexec.CodeExitError{Err: fmt.Errorf("command terminated with exit code %d", code), Code: code}
	}
	return nil
}

func (p *Provider) runningInstance(namespace, podName, container string) (string, error) {
	ps := p.lookup(namespace, podName)
	if ps == nil {
		return "", errdefs.NotFoundf("pod %s/%s is not on this node", namespace, podName)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if ps.inst == "" {
		return "", errdefs.NotFoundf("pod %s/%s has no VM: it was refused", namespace, podName)
	}
	if name := ps.pod.Spec.Containers[0].Name; container != "" && container != name {
		return "", errdefs.NotFoundf("pod %s/%s has no container %q (its container is %q)", namespace, podName, container, name)
	}
	if ps.snap.State != stRunning {
		return "", errdefs.InvalidInputf("pod %s/%s: its VM is %s, not running", namespace, podName, ps.snap.State)
	}
	return ps.inst, nil
}

// job is one exec job directory.
type job struct{ dir string }

func startJob(execDir string, cfg jobConfig) (*job, error) {
	b := make([]byte, 4)
	rand.Read(b)
	j := &job{dir: filepath.Join(execDir, "k8s-"+hex.EncodeToString(b))}
	if err := os.Mkdir(j.dir, 0o755); err != nil {
		return nil, fmt.Errorf("make exec job: %w", err)
	}
	doc, _ := json.Marshal(cfg)
	if err := os.WriteFile(filepath.Join(j.dir, "config"), doc, 0o644); err != nil {
		msg := j.errorText()
		j.remove()
		if msg != "" {
			return nil, fmt.Errorf("exec job config: %s", msg)
		}
		return nil, fmt.Errorf("exec job config: %w", err)
	}
	return j, nil
}

func (j *job) errorText() string {
	b, _ := os.ReadFile(filepath.Join(j.dir, "error"))
	return strings.TrimSpace(string(b))
}

// feed copies the client's input to the job's stdin; closing it sends EOF.
func (j *job) feed(in io.Reader) {
	f, err := os.OpenFile(filepath.Join(j.dir, "stdin"), os.O_WRONLY, 0)
	if err != nil {
		return
	}
	io.Copy(f, in)
	f.Close()
}

// wait reads the job's wait file, which blocks until the job ends and then
// holds its exit code. If ctx ends first the job is killed.
func (j *job) wait(ctx context.Context) (int, error) {
	type result struct {
		b   []byte
		err error
	}
	ch := make(chan result, 1)
	go func() {
		b, err := os.ReadFile(filepath.Join(j.dir, "wait"))
		ch <- result{b, err}
	}()
	var r result
	select {
	case r = <-ch:
	case <-ctx.Done():
		os.WriteFile(filepath.Join(j.dir, "ctl"), []byte("kill\n"), 0o644)
		select {
		case r = <-ch:
		case <-time.After(10 * time.Second):
			return 0, fmt.Errorf("exec job %s did not end after kill", filepath.Base(j.dir))
		}
	}
	s := strings.TrimSpace(string(r.b))
	if r.err != nil || s == "" {
		b, _ := os.ReadFile(filepath.Join(j.dir, "exit"))
		s = strings.TrimSpace(string(b))
	}
	code, err := strconv.Atoi(s)
	if err != nil {
		if msg := j.errorText(); msg != "" {
			return 0, fmt.Errorf("exec job: %s", msg)
		}
		return 0, fmt.Errorf("exec job %s ended without an exit code: %v", filepath.Base(j.dir), r.err)
	}
	return code, nil
}

// remove deletes the job (it has ended, or was killed).
func (j *job) remove() {
	if err := os.Remove(j.dir); err != nil {
		os.WriteFile(filepath.Join(j.dir, "ctl"), []byte("kill\n"), 0o644)
		for i := 0; i < 50 && os.Remove(j.dir) != nil; i++ {
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// followOutput copies a growing file to w until done is closed and the
// file has been read to its end, then closes w.
func followOutput(path string, w io.WriteCloser, done <-chan struct{}) {
	defer w.Close()
	f, err := os.Open(path)
	if err != nil {
		return
	}
	defer f.Close()
	buf := make([]byte, 32<<10)
	finished := false
	for {
		n, err := f.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
			continue
		}
		if err != nil && !errors.Is(err, io.EOF) || finished {
			return
		}
		select {
		case <-done:
			finished = true // one more read to the end
		case <-time.After(outputPoll):
		}
	}
}

func drainResize(ctx context.Context, ch <-chan api.TermSize) {
	if ch == nil {
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-ch:
			if !ok {
				return
			}
		}
	}
}

// AttachToContainer serves `kubectl attach`: the program's stdin and
// stdout are the VM's console, so the console is followed to the client
// and the client's input is typed into it.
func (p *Provider) AttachToContainer(ctx context.Context, namespace, podName, container string, attach api.AttachIO) error {
	inst, err := p.runningInstance(namespace, podName, container)
	if err != nil {
		return err
	}
	con := p.tree.Inst(inst, "console")
	go drainResize(ctx, attach.Resize())
	if in := attach.Stdin(); in != nil {
		go func() {
			f, err := os.OpenFile(con, os.O_WRONLY, 0)
			if err != nil {
				return
			}
			defer f.Close()
			io.Copy(f, in)
		}()
	}
	out := attach.Stdout()
	if out == nil {
		<-ctx.Done()
		return nil
	}
	defer out.Close()
	f, err := os.Open(con)
	if err != nil {
		return fmt.Errorf("open console of instance %s: %w", inst, err)
	}
	go func() { <-ctx.Done(); f.Close() }()
	_, err = io.Copy(out, f)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// GetStatsSummary is not served: hypefs keeps no usage figures yet.
func (p *Provider) GetStatsSummary(context.Context) (*statsv1alpha1.Summary, error) {
	return nil, errdefs.NotFound("hypefs keeps no usage statistics")
}

// GetMetricsResource is not served: hypefs keeps no usage figures yet.
func (p *Provider) GetMetricsResource(context.Context) ([]*dto.MetricFamily, error) {
	return nil, errdefs.NotFound("hypefs keeps no usage metrics")
}

// PortForward is refused: ports are not published yet.
func (p *Provider) PortForward(_ context.Context, namespace, pod string, port int32, _ io.ReadWriteCloser) error {
	return errdefs.InvalidInputf("port forwarding to pod %s/%s port %d is not supported by hypefs", namespace, pod, port)
}
