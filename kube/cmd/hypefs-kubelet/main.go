// Command hypefs-kubelet makes a hypefs host a Kubernetes node: Pods bound
// to it run as VMs, one instance of the mounted tree per Pod. It drives
// hypefs only through the tree (--mount). `hypefs kubelet ...` runs it.
//
//	hypefs-kubelet --kubeconfig FILE --node-name NAME --mount DIR [flags]
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	vklog "github.com/virtual-kubelet/virtual-kubelet/log"
	vkslog "github.com/virtual-kubelet/virtual-kubelet/log/slog"
	"github.com/virtual-kubelet/virtual-kubelet/node"
	"github.com/virtual-kubelet/virtual-kubelet/node/nodeutil"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"hypefs/kube/provider"
)

// Version is set at build time (-ldflags "-X main.Version=...").
var Version = "dev"

type options struct {
	kubeconfig, nodeName, mount, listen, nodeIP string
	tlsCert, tlsKey, clientCA                   string
	maxPods                                     int
	debug                                       bool
}

func main() {
	o := parseFlags(os.Args[1:])
	level := slog.LevelInfo
	if o.debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	vklog.L = vkslog.FromSlog(log)
	if err := run(o, log); err != nil {
		fmt.Fprintln(os.Stderr, "hypefs-kubelet:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string) options {
	var o options
	host, _ := os.Hostname()
	fl := flag.NewFlagSet("hypefs-kubelet", flag.ExitOnError)
	fl.StringVar(&o.kubeconfig, "kubeconfig", defaultKubeconfig(), "kubeconfig of the cluster to join (env KUBECONFIG)")
	fl.StringVar(&o.nodeName, "node-name", host, "the node's name")
	fl.StringVar(&o.mount, "mount", os.Getenv("HYPEFS_MOUNT"), "where the hypefs tree is mounted (env HYPEFS_MOUNT)")
	fl.StringVar(&o.listen, "listen", ":10250", "address of the kubelet API (logs, exec, attach)")
	fl.StringVar(&o.nodeIP, "node-ip", "", "the node's InternalIP, where the API server reaches the kubelet API (default: the address this host uses towards the API server)")
	fl.StringVar(&o.tlsCert, "tls-cert", "", "serving certificate of the kubelet API (default: a self-signed one, made at start)")
	fl.StringVar(&o.tlsKey, "tls-key", "", "key of --tls-cert")
	fl.StringVar(&o.clientCA, "client-ca", "", "CA that signs the API server's kubelet client certificate (default: the kubeconfig's CA)")
	fl.IntVar(&o.maxPods, "max-pods", 110, "Pods this node takes")
	fl.BoolVar(&o.debug, "debug", false, "log more")
	version := fl.Bool("version", false, "print the version and exit")
	fl.Parse(args)
	if *version {
		fmt.Println("hypefs-kubelet", Version)
		os.Exit(0)
	}
	if o.mount == "" || fl.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: hypefs kubelet --mount DIR [--kubeconfig FILE] [--node-name NAME] [--listen ADDR] [--node-ip IP]\n"+
			"                     [--tls-cert FILE --tls-key FILE] [--client-ca FILE] [--max-pods N]")
		os.Exit(2)
	}
	return o
}

func defaultKubeconfig() string {
	if k := os.Getenv("KUBECONFIG"); k != "" {
		return k
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".kube", "config")
}

// run joins the cluster and serves until SIGINT or SIGTERM. VMs are never
// stopped on the way out: the next start finds them.
func run(o options, log *slog.Logger) error {
	restCfg, err := clientcmd.BuildConfigFromFlags("", o.kubeconfig)
	if err != nil {
		return fmt.Errorf("read kubeconfig %s: %w (hint: pass --kubeconfig)", o.kubeconfig, err)
	}
	client, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return fmt.Errorf("make API client: %w", err)
	}
	_, portStr, err := net.SplitHostPort(o.listen)
	if err != nil {
		return fmt.Errorf("--listen %q: %w", o.listen, err)
	}
	port, _ := strconv.Atoi(portStr)
	if o.nodeIP == "" {
		if o.nodeIP, err = addressTowards(restCfg.Host); err != nil {
			return err
		}
	}
	mount, _ := filepath.Abs(o.mount)
	tlsOpts, err := servingTLS(o, restCfg.CAData, restCfg.CAFile)
	if err != nil {
		return err
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	p := provider.New(provider.Options{
		Tree: provider.Tree{Root: mount}, NodeName: o.nodeName, NodeIP: o.nodeIP, Log: log, Context: ctx,
		Remove: func(ctx context.Context, namespace, name string, uid types.UID) error {
			zero := int64(0)
			return client.CoreV1().Pods(namespace).Delete(ctx, name, metav1.DeleteOptions{
				GracePeriodSeconds: &zero, Preconditions: &metav1.Preconditions{UID: &uid}})
		},
	})
	if err := (provider.Tree{Root: mount}).Alive(); err != nil {
		log.Warn("starting NotReady until the tree answers", "err", err)
	}
	auth, err := nodeutil.WebhookAuth(client, o.nodeName, clientCertAuth(tlsOpts.clientCA))
	if err != nil {
		return fmt.Errorf("kubelet API authentication: %w", err)
	}
	// nodeutil.NewNode makes a client of its own from $KUBECONFIG before
	// taking ours; point it at the same file.
	os.Setenv("KUBECONFIG", o.kubeconfig)
	mux := http.NewServeMux()
	n, err := nodeutil.NewNode(o.nodeName,
		func(pc nodeutil.ProviderConfig) (nodeutil.Provider, node.NodeProvider, error) {
			p.SetPods(pc.Pods)
			*pc.Node = *p.Node(provider.NodeConfig{Name: o.nodeName, IP: o.nodeIP, Port: int32(port),
				MaxPods: o.maxPods, Version: Version})
			return p, p.NodeProvider(pc.Node), nil
		},
		nodeutil.WithClient(client),
		func(c *nodeutil.NodeConfig) error {
			c.HTTPListenAddr = o.listen
			c.Handler = nodeutil.WithAuth(auth, mux)
			c.InformerResyncPeriod = 10 * time.Minute
			return nil
		},
		nodeutil.AttachProviderRoutes(mux),
		nodeutil.WithTLSConfig(tlsOpts.opts...),
	)
	if err != nil {
		return fmt.Errorf("set up node %s: %w", o.nodeName, err)
	}
	go p.Run()
	log.Info("joining the cluster", "node", o.nodeName, "mount", mount, "listen", o.listen, "node-ip", o.nodeIP)
	go func() {
		if err := n.WaitReady(ctx, 0); err == nil {
			log.Info("node registered", "node", o.nodeName)
		}
	}()
	err = n.Run(ctx)
	if ctx.Err() != nil {
		log.Info("stopping; VMs keep running")
		return nil
	}
	return err
}

// addressTowards is this host's address on the route to the API server
// (a UDP "connection" sends nothing).
func addressTowards(apiURL string) (string, error) {
	host := apiURL
	if u, err := url.Parse(apiURL); err == nil && u.Hostname() != "" {
		host = u.Hostname()
	}
	c, err := net.Dial("udp", net.JoinHostPort(host, "443"))
	if err != nil {
		return "", fmt.Errorf("find this host's address towards %s: %w (hint: pass --node-ip)", apiURL, err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).IP.String(), nil
}
