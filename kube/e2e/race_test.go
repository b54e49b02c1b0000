//go:build race

package e2e

// raceBuild: the test binary runs under the race detector, and so does the
// hypefs-kubelet it builds.
const raceBuild = true
