// Package kubetest starts a real Kubernetes control plane for tests and
// benchmarks: etcd, kube-apiserver and, when asked, kube-scheduler, built
// from the Go module proxy by `make deps` (scripts/kube-tools.sh) into a
// cache outside the tree, run on loopback ports in a private directory.
// There is no controller-manager: the `default` ServiceAccount of each
// namespace is made by Namespace.
package kubetest

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Versions of the control plane; scripts/kube-tools.sh builds these.
const (
	KubeVersion = "v1.37.2"
	EtcdVersion = "v3.7.0"
)

// BinDir is where make deps put the control plane: $HYPEFS_KUBE_BIN, else
// $HYPEFS_KUBE_CACHE (default /var/lib/hypefs/kube) and a directory named
// after the versions.
func BinDir() string {
	if d := os.Getenv("HYPEFS_KUBE_BIN"); d != "" {
		return d
	}
	root := os.Getenv("HYPEFS_KUBE_CACHE")
	if root == "" {
		root = "/var/lib/hypefs/kube"
	}
	return filepath.Join(root, "kubernetes-"+KubeVersion+"-etcd-"+EtcdVersion)
}

// Missing says what is missing to run a control plane here, or "".
func Missing() string {
	for _, b := range []string{"etcd", "kube-apiserver", "kube-scheduler"} {
		if _, err := os.Stat(filepath.Join(BinDir(), b)); err != nil {
			return fmt.Sprintf("needs %s in %s (run \"make deps\": its first run builds the control plane, about 5-8 minutes)", b, BinDir())
		}
	}
	return ""
}

// Cluster is a running control plane.
type Cluster struct {
	Dir        string // private directory: certificates, data, logs
	Kubeconfig string // an administrator's (system:masters)
	Config     *rest.Config
	Client     kubernetes.Interface
	CA         []byte // the cluster CA (PEM): signs serving and client certificates
	procs      []*exec.Cmd
}

// Start runs etcd and kube-apiserver on loopback and waits until the API
// is ready. Stop ends them and removes Dir.
func Start() (c *Cluster, err error) {
	if m := Missing(); m != "" {
		return nil, fmt.Errorf("%s", m)
	}
	dir, err := os.MkdirTemp("", "hfs-kube")
	if err != nil {
		return nil, err
	}
	c = &Cluster{Dir: dir}
	defer func() {
		if err != nil {
			err = fmt.Errorf("%w\n%s", err, c.logTails())
			c.Stop()
		}
	}()
	certs, err := writeCerts(dir)
	if err != nil {
		return c, err
	}
	c.CA = certs.caPEM
	ports, err := freePorts(3)
	if err != nil {
		return c, err
	}
	if err := c.startEtcd(ports[0], ports[1]); err != nil {
		return c, err
	}
	apiURL := "https://127.0.0.1:" + strconv.Itoa(ports[2])
	if err := c.startAPIServer(ports[0], ports[2]); err != nil {
		return c, err
	}
	c.Kubeconfig = filepath.Join(dir, "admin.kubeconfig")
	if err := writeKubeconfig(c.Kubeconfig, apiURL, certs); err != nil {
		return c, err
	}
	if c.Config, err = clientcmd.BuildConfigFromFlags("", c.Kubeconfig); err != nil {
		return c, err
	}
	c.Config.QPS, c.Config.Burst = 100, 200
	if c.Client, err = kubernetes.NewForConfig(c.Config); err != nil {
		return c, err
	}
	if err := c.waitReady(90 * time.Second); err != nil {
		return c, err
	}
	return c, nil
}

func (c *Cluster) startEtcd(clientPort, peerPort int) error {
	client := "http://127.0.0.1:" + strconv.Itoa(clientPort)
	peer := "http://127.0.0.1:" + strconv.Itoa(peerPort)
	if err := c.run("etcd", "--name", "default", "--data-dir", filepath.Join(c.Dir, "etcd"),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "default="+peer, "--unsafe-no-fsync", "--log-level", "warn"); err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(client + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("etcd did not answer within 30 s: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startAPIServer runs kube-apiserver against etcd. The advertise address
// is loopback, which the endpoint reconciler refuses, hence "none"; the
// service range is only an allocator's (nothing is ever sent to it).
// TaintNodesByCondition is off: it gives every new node the not-ready
// taint, which the node lifecycle controller (of the controller-manager
// this control plane lacks) lifts once the node is Ready.
func (c *Cluster) startAPIServer(etcdPort, port int) error {
	f := func(name string) string { return filepath.Join(c.Dir, name) }
	return c.run("kube-apiserver",
		"--etcd-servers", "http://127.0.0.1:"+strconv.Itoa(etcdPort),
		"--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
		"--secure-port", strconv.Itoa(port), "--endpoint-reconciler-type", "none",
		"--cert-dir", f("apiserver-certs"),
		"--tls-cert-file", f("apiserver.crt"), "--tls-private-key-file", f("apiserver.key"),
		"--client-ca-file", f("ca.crt"),
		"--service-account-key-file", f("sa.key"), "--service-account-signing-key-file", f("sa.key"),
		"--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
		"--service-cluster-ip-range", "10.96.0.0/24",
		"--authorization-mode", "Node,RBAC",
		"--kubelet-client-certificate", f("kubelet-client.crt"), "--kubelet-client-key", f("kubelet-client.key"),
		"--kubelet-preferred-address-types", "InternalIP",
		"--disable-admission-plugins", "TaintNodesByCondition",
		"--enable-priority-and-fairness=false", "--profiling=false", "--v=0")
}

// StartScheduler runs kube-scheduler (without leader election, serving
// nothing) until Stop.
func (c *Cluster) StartScheduler() error {
	return c.run("kube-scheduler", "--kubeconfig", c.Kubeconfig, "--leader-elect=false",
		"--secure-port=0", "--profiling=false", "--v=0")
}

// run starts one of the control plane's binaries, its output in a log
// file of its name; it dies with the test process.
func (c *Cluster) run(name string, args ...string) error {
	logf, err := os.Create(filepath.Join(c.Dir, name+".log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(filepath.Join(BinDir(), name), args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	c.procs = append(c.procs, cmd)
	go cmd.Wait()
	return nil
}

func (c *Cluster) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		body, err := c.Client.CoreV1().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		cancel()
		if err == nil {
			return c.ensureServiceAccount("default")
		}
		last = fmt.Errorf("%v: %s", err, body)
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("kube-apiserver not ready within %s: %v", timeout, last)
}

// ensureServiceAccount makes the namespace's default ServiceAccount (the
// controller-manager's job), without which Pods are not admitted.
func (c *Cluster) ensureServiceAccount(ns string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var err error
	for ctx.Err() == nil {
		_, err = c.Client.CoreV1().ServiceAccounts(ns).Create(ctx,
			&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{})
		if err == nil || apierrors.IsAlreadyExists(err) {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("make ServiceAccount %s/default: %w", ns, err)
}

// Namespace makes a namespace for one test, with its default
// ServiceAccount. Namespaces are never deleted (there is no namespace
// controller); the whole cluster goes with Stop.
func (c *Cluster) Namespace(t testing.TB, name string) string {
	t.Helper()
	_, err := c.Client.CoreV1().Namespaces().Create(context.Background(),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("make namespace %s: %v", name, err)
	}
	if err := c.ensureServiceAccount(name); err != nil {
		t.Fatal(err)
	}
	return name
}

// Stop ends the control plane and removes its directory.
func (c *Cluster) Stop() {
	for i := len(c.procs) - 1; i >= 0; i-- {
		if p := c.procs[i].Process; p != nil {
			syscall.Kill(-p.Pid, syscall.SIGKILL)
		}
	}
	c.procs = nil
	time.Sleep(100 * time.Millisecond)
	os.RemoveAll(c.Dir)
}

// logTails is the end of each component's log, for failures.
func (c *Cluster) logTails() string {
	var b strings.Builder
	for _, n := range []string{"etcd", "kube-apiserver", "kube-scheduler"} {
		data, err := os.ReadFile(filepath.Join(c.Dir, n+".log"))
		if err != nil {
			continue
		}
		if len(data) > 3000 {
			data = data[len(data)-3000:]
		}
		fmt.Fprintf(&b, "--- %s.log (end)\n%s\n", n, data)
	}
	return b.String()
}

// Logs is the end of each component's log.
func (c *Cluster) Logs() string { return c.logTails() }

// freePorts finds n free loopback TCP ports.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var out []int
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}

// FreePort is one free loopback TCP port.
func FreePort() (int, error) {
	p, err := freePorts(1)
	if err != nil {
		return 0, err
	}
	return p[0], nil
}
