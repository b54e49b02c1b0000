package provider

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// Config is the part of an instance's config (docs/filesystem.md) that a
// Pod sets. Read back from the tree it is the normalized config, whose
// defaults Same fills in before comparing.
type Config struct {
	Image      string            `json:"image"`
	CPUs       int               `json:"cpus,omitempty"`
	Memory     string            `json:"memory,omitempty"` // "<n>M"
	Disk       string            `json:"disk,omitempty"`   // "<n>M"
	Entrypoint []string          `json:"entrypoint,omitempty"`
	Cmd        []string          `json:"cmd,omitempty"`
	Env        map[string]string `json:"env,omitempty"`
	Workdir    string            `json:"workdir,omitempty"`
}

// The daemon's defaults for the keys a Pod may leave out.
const (
	defaultCPUs   = 1
	defaultMemory = "256M"
	defaultDisk   = "1G"
	minMemoryMiB  = 64
	minDiskMiB    = 16
)

// JSON is the document written to config.
func (c Config) JSON() []byte {
	b, _ := json.Marshal(c)
	return b
}

// Same says whether two configs ask for the same VM, defaults filled in.
func (c Config) Same(o Config) bool {
	a, b := c.filled(), o.filled()
	return a.Image == b.Image && a.CPUs == b.CPUs && a.Memory == b.Memory && sameSize(a.Disk, b.Disk) &&
		slices.Equal(a.Entrypoint, b.Entrypoint) && slices.Equal(a.Cmd, b.Cmd) &&
		maps.Equal(a.Env, b.Env) && a.Workdir == b.Workdir
}

func (c Config) filled() Config {
	if c.CPUs == 0 {
		c.CPUs = defaultCPUs
	}
	if c.Memory == "" {
		c.Memory = defaultMemory
	}
	if c.Disk == "" {
		c.Disk = defaultDisk
	}
	if c.Env == nil {
		c.Env = map[string]string{}
	}
	return c
}

// sameSize compares sizes written as "<n>M" or "<n>G".
func sameSize(a, b string) bool { return sizeMiB(a) == sizeMiB(b) }

func sizeMiB(s string) int64 {
	mult := int64(1)
	switch {
	case strings.HasSuffix(s, "G"):
		mult, s = 1024, strings.TrimSuffix(s, "G")
	case strings.HasSuffix(s, "M"):
		s = strings.TrimSuffix(s, "M")
	}
	n, _ := strconv.ParseInt(s, 10, 64)
	return n * mult
}

// ConfigFor maps a Pod's one container to an instance config: image,
// command (entrypoint), args (cmd), env, workingDir (workdir), and the
// resources (limits, else requests): cpu rounds up to whole vCPUs,
// memory up to whole MiB (at least 64M), ephemeral-storage to the
// writable layer (disk). $(VAR) in command and args is expanded from the
// container's environment, as the kubelet does. The Pod must have passed
// Check.
func ConfigFor(pod *corev1.Pod) Config {
	ctr := &pod.Spec.Containers[0]
	c := Config{Image: ctr.Image, Workdir: ctr.WorkingDir}
	env := map[string]string{}
	for _, e := range ctr.Env {
		env[e.Name] = e.Value
	}
	if len(env) > 0 {
		c.Env = env
	}
	if len(ctr.Command) > 0 {
		c.Entrypoint = expandAll(ctr.Command, env)
		// The kubelet's rule, and the config's: an entrypoint drops the
		// image's cmd, so args alone are the cmd.
	}
	if len(ctr.Args) > 0 {
		c.Cmd = expandAll(ctr.Args, env)
	}
	if q, ok := resourceOf(ctr, corev1.ResourceCPU); ok {
		c.CPUs = max(1, int((q.MilliValue()+999)/1000))
	}
	if q, ok := resourceOf(ctr, corev1.ResourceMemory); ok {
		c.Memory = strconv.FormatInt(max(minMemoryMiB, ceilMiB(q)), 10) + "M"
	}
	if q, ok := resourceOf(ctr, corev1.ResourceEphemeralStorage); ok {
		c.Disk = strconv.FormatInt(max(minDiskMiB, ceilMiB(q)), 10) + "M"
	}
	return c
}

func ceilMiB(q resource.Quantity) int64 {
	const mib = 1 << 20
	return (q.Value() + mib - 1) / mib
}

// resourceOf is the container's limit of a resource, else its request.
func resourceOf(ctr *corev1.Container, name corev1.ResourceName) (resource.Quantity, bool) {
	if q, ok := ctr.Resources.Limits[name]; ok && !q.IsZero() {
		return q, true
	}
	if q, ok := ctr.Resources.Requests[name]; ok && !q.IsZero() {
		return q, true
	}
	return resource.Quantity{}, false
}

func expandAll(in []string, env map[string]string) []string {
	out := make([]string, len(in))
	for i, s := range in {
		out[i] = expand(s, env)
	}
	return out
}

// expand replaces $(NAME) with the variable's value when it is defined
// and $$ with $; anything else, an undefined $(NAME) included, stays as
// written (the kubelet's rules for command and args).
func expand(s string, env map[string]string) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteByte('$')
				continue
			}
			name := s[i+2 : i+2+end]
			if v, ok := env[name]; ok {
				b.WriteString(v)
			} else {
				b.WriteString(s[i : i+3+end])
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}

// Refusal is why a Pod cannot run here, for its status.
type Refusal struct{ Message string }

func (r *Refusal) Error() string { return r.Message }

// The reason a refused Pod's status carries.
const ReasonUnsupported = "UnsupportedPod"

// Check refuses what hypefs cannot give a Pod, with a sentence that says
// so: more than one container, init containers, volumes other than the
// service account token Kubernetes adds to every Pod, the host's
// namespaces, a user to run as, and resources other than cpu, memory and
// ephemeral-storage. nil means the Pod can run.
func Check(pod *corev1.Pod) *Refusal {
	s := &pod.Spec
	var why []string
	if n := len(s.Containers); n != 1 {
		why = append(why, fmt.Sprintf("hypefs runs one container per Pod as its VM's program, and this Pod has %d (%s)",
			n, strings.Join(containerNames(s.Containers), ", ")))
	}
	if len(s.InitContainers) > 0 {
		why = append(why, fmt.Sprintf("init containers (%s) are not supported: a VM runs one program",
			strings.Join(containerNames(s.InitContainers), ", ")))
	}
	if vols := unsupportedVolumes(s.Volumes); len(vols) > 0 {
		why = append(why, fmt.Sprintf("volumes %s cannot be given to a VM (only the service account token volume is accepted, and not mounted)",
			strings.Join(vols, ", ")))
	}
	for _, ns := range []struct {
		on   bool
		what string
	}{{s.HostNetwork, "hostNetwork"}, {s.HostPID, "hostPID"}, {s.HostIPC, "hostIPC"}} {
		if ns.on {
			why = append(why, ns.what+" is not supported: a VM cannot share the host's namespaces")
		}
	}
	if u := userSettings(pod); len(u) > 0 {
		why = append(why, fmt.Sprintf("securityContext %s cannot be applied: the program runs as the image's USER (hint: set USER in the image)",
			strings.Join(u, ", ")))
	}
	for _, c := range s.Containers {
		for _, r := range unsupportedResources(&c) {
			why = append(why, fmt.Sprintf("container %s asks for %s, which hypefs cannot give (cpu, memory and ephemeral-storage only)", c.Name, r))
		}
		if len(c.VolumeDevices) > 0 {
			why = append(why, fmt.Sprintf("container %s asks for volume devices, which hypefs cannot give", c.Name))
		}
	}
	if len(why) == 0 {
		return nil
	}
	return &Refusal{Message: "refused by hypefs: " + strings.Join(why, "; ")}
}

func containerNames(cs []corev1.Container) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.Name
	}
	return out
}

// unsupportedVolumes names every volume but the projected service
// account token (kube-api-access-*), which the ServiceAccount admission
// adds to nearly every Pod; it is accepted and not mounted.
func unsupportedVolumes(vols []corev1.Volume) []string {
	var out []string
	for _, v := range vols {
		if !serviceAccountVolume(v) {
			out = append(out, fmt.Sprintf("%s (%s)", v.Name, volumeKind(v)))
		}
	}
	return out
}

func serviceAccountVolume(v corev1.Volume) bool {
	p := v.Projected
	if p == nil || !strings.HasPrefix(v.Name, "kube-api-access-") {
		return false
	}
	token := false
	for _, src := range p.Sources {
		switch {
		case src.ServiceAccountToken != nil:
			token = true
		case src.ConfigMap != nil && src.ConfigMap.Name == "kube-root-ca.crt", src.DownwardAPI != nil:
		default:
			return false
		}
	}
	return token
}

func volumeKind(v corev1.Volume) string {
	switch {
	case v.EmptyDir != nil:
		return "emptyDir"
	case v.HostPath != nil:
		return "hostPath"
	case v.ConfigMap != nil:
		return "configMap"
	case v.Secret != nil:
		return "secret"
	case v.PersistentVolumeClaim != nil:
		return "persistentVolumeClaim"
	case v.Projected != nil:
		return "projected"
	case v.DownwardAPI != nil:
		return "downwardAPI"
	case v.Ephemeral != nil:
		return "ephemeral"
	case v.CSI != nil:
		return "csi"
	case v.NFS != nil:
		return "nfs"
	case v.Image != nil:
		return "image"
	}
	return "volume"
}

func userSettings(pod *corev1.Pod) []string {
	var out []string
	add := func(where string, sc interface {
		user() *int64
		group() *int64
		nonRoot() *bool
	}) {
		if sc.user() != nil {
			out = append(out, where+"runAsUser")
		}
		if sc.group() != nil {
			out = append(out, where+"runAsGroup")
		}
		if sc.nonRoot() != nil && *sc.nonRoot() {
			out = append(out, where+"runAsNonRoot")
		}
	}
	if psc := pod.Spec.SecurityContext; psc != nil {
		add("", podSC{psc})
	}
	for _, c := range pod.Spec.Containers {
		if c.SecurityContext != nil {
			add(c.Name+": ", ctrSC{c.SecurityContext})
		}
	}
	return out
}

type podSC struct{ *corev1.PodSecurityContext }

func (s podSC) user() *int64   { return s.RunAsUser }
func (s podSC) group() *int64  { return s.RunAsGroup }
func (s podSC) nonRoot() *bool { return s.RunAsNonRoot }

type ctrSC struct{ *corev1.SecurityContext }

func (s ctrSC) user() *int64   { return s.RunAsUser }
func (s ctrSC) group() *int64  { return s.RunAsGroup }
func (s ctrSC) nonRoot() *bool { return s.RunAsNonRoot }

func unsupportedResources(c *corev1.Container) []string {
	seen := map[corev1.ResourceName]bool{}
	var out []string
	for _, rl := range []corev1.ResourceList{c.Resources.Limits, c.Resources.Requests} {
		for name := range rl {
			switch name {
			case corev1.ResourceCPU, corev1.ResourceMemory, corev1.ResourceEphemeralStorage:
				continue
			}
			if !seen[name] {
				seen[name] = true
				out = append(out, string(name))
			}
		}
	}
	slices.Sort(out)
	return out
}
