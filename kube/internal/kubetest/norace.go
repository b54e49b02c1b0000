//go:build !race

package kubetest

const raceBuild = false
