// Package kube pins the Kubernetes control plane that the kube tests and
// benchmarks run: kube-apiserver and kube-scheduler of k8s.io/kubernetes
// v1.37.2 (its staging modules, v0.0.0 in its go.mod, replaced by their
// published v0.37.2) and etcd v3.7.0, as the tools of this module.
// scripts/kube-tools.sh builds them once into a cache outside the tree.
// It is a module of its own so that none of this reaches hypefs' go.sum.
package kube
