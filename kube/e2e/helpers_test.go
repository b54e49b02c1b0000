// Package e2e runs hypefs as a Kubernetes node the way users do: a real
// control plane (etcd, kube-apiserver, kube-scheduler from make deps), a
// real hypefs daemon on a real FUSE mount, `hypefs kubelet` as a process,
// images from an in-process registry on loopback, real VMs under QEMU.
package e2e

import (
	"os"
	"sync"
	"testing"

	"hypefs/kube/internal/kubetest"
)

var (
	clusterOnce sync.Once
	shared      *kubetest.Cluster
	clusterErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if shared != nil {
		shared.Stop()
	}
	os.Exit(code)
}

// cluster is the control plane the package's tests share (each test has
// its own namespace and nodes); it skips where it cannot run.
func cluster(t testing.TB) *kubetest.Cluster {
	t.Helper()
	if m := kubetest.Missing(); m != "" {
		t.Skip(m)
	}
	clusterOnce.Do(func() {
		shared, clusterErr = kubetest.Start()
		if clusterErr == nil {
			clusterErr = shared.StartScheduler()
		}
	})
	if clusterErr != nil {
		t.Fatalf("control plane: %v", clusterErr)
	}
	return shared
}

// The helpers live in kubetest, shared with the benchmarks.
type Kubelet = kubetest.Kubelet

var (
	StartKubelet = kubetest.StartKubelet
	busybox      = kubetest.Busybox
	podSpec      = kubetest.PodSpec
	createPod    = kubetest.CreatePod
	getPod       = kubetest.GetPod
	waitPod      = kubetest.WaitPod
	waitGone     = kubetest.WaitGone
	running      = kubetest.Running
	describe     = kubetest.Describe
	instanceOf   = kubetest.InstanceOf
)
