//go:build race

package kubetest

// raceBuild: this binary runs under the race detector, and so does the
// hypefs-kubelet it builds.
const raceBuild = true
