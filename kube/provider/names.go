package provider

import (
	"crypto/sha256"
	"encoding/hex"
	"regexp"

	"k8s.io/apimachinery/pkg/types"
)

// Instance names: hypefs allows [a-z0-9][a-z0-9_.-]{0,62}. A Pod's
// instance is NAMESPACE_NAME_HASH, where HASH is 8 hex digits of the
// SHA-256 of namespace, name and UID. Namespaces and Pod names never hold
// an underscore, so the underscores mark the provider's instances and
// cannot be confused with the parts. When namespace and name are too long,
// both are cut (the namespace to 26 characters, the name to what is left)
// and the hash, over the full values, keeps the names apart. The UID in the
// hash gives a Pod deleted and made again under the same name a new VM.
const (
	maxInstanceName = 63
	hashLen         = 8
	maxNamespaceCut = 26
)

// InstanceName is the instance of a Pod.
func InstanceName(namespace, name string, uid types.UID) string {
	sum := sha256.Sum256([]byte(namespace + "/" + name + "/" + string(uid)))
	h := hex.EncodeToString(sum[:])[:hashLen]
	room := maxInstanceName - 2 - hashLen // two underscores
	if len(namespace)+len(name) > room {
		if len(namespace) > maxNamespaceCut {
			namespace = namespace[:maxNamespaceCut]
		}
		if len(name) > room-len(namespace) {
			name = name[:room-len(namespace)]
		}
	}
	return namespace + "_" + name + "_" + h
}

var ownedName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*_[a-z0-9][a-z0-9.-]*_[0-9a-f]{8}$`)

// Owned says whether an instance name has the shape of the provider's
// instances (see InstanceName). Instances named otherwise are never
// touched.
func Owned(instance string) bool {
	return len(instance) <= maxInstanceName && ownedName.MatchString(instance)
}

// ContainerID is the containerID a Pod's status carries: the instance,
// recorded in the API so that `kubectl get pod -o yaml` names it.
func ContainerID(instance string) string { return "hypefs://" + instance }
