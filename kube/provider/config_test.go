package provider

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

func onePod(c corev1.Container) *corev1.Pod {
	if c.Name == "" {
		c.Name = "main"
	}
	return &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{c}}}
}

func res(kv ...string) corev1.ResourceList {
	rl := corev1.ResourceList{}
	for i := 0; i+1 < len(kv); i += 2 {
		rl[corev1.ResourceName(kv[i])] = resource.MustParse(kv[i+1])
	}
	return rl
}

// A container maps onto the config's keys: command is the entrypoint,
// args the cmd, $(VAR) expanded from env, limits before requests, cpu
// rounded up to whole vCPUs, memory up to whole MiB (64M at least),
// ephemeral-storage the writable layer.
func TestConfigFor(t *testing.T) {
	cases := []struct {
		name string
		c    corev1.Container
		want Config
	}{
		{"image only", corev1.Container{Image: "busybox:1.36"}, Config{Image: "busybox:1.36"}},
		{"command, args, env, workdir", corev1.Container{Image: "app:v1",
			Command: []string{"/bin/sh", "-c"}, Args: []string{"echo $(GREETING) $$(date) $(MISSING) $(X"},
			Env: []corev1.EnvVar{{Name: "GREETING", Value: "hi"}}, WorkingDir: "/srv"},
			Config{Image: "app:v1", Entrypoint: []string{"/bin/sh", "-c"}, Cmd: []string{"echo hi $(date) $(MISSING) $(X"},
				Env: map[string]string{"GREETING": "hi"}, Workdir: "/srv"}},
		{"args alone", corev1.Container{Image: "app", Args: []string{"--port", "80"}},
			Config{Image: "app", Cmd: []string{"--port", "80"}}},
		{"limits win", corev1.Container{Image: "app", Resources: corev1.ResourceRequirements{
			Limits: res("cpu", "1500m", "memory", "1Gi"), Requests: res("cpu", "100m", "memory", "64Mi")}},
			Config{Image: "app", CPUs: 2, Memory: "1024M"}},
		{"requests when no limits", corev1.Container{Image: "app", Resources: corev1.ResourceRequirements{
			Requests: res("cpu", "250m", "memory", "300M", "ephemeral-storage", "2Gi")}},
			Config{Image: "app", CPUs: 1, Memory: "287M", Disk: "2048M"}},
		{"small memory and disk are raised", corev1.Container{Image: "app", Resources: corev1.ResourceRequirements{
			Limits: res("memory", "16Mi", "ephemeral-storage", "1Mi")}},
			Config{Image: "app", Memory: "64M", Disk: "16M"}},
	}
	for _, c := range cases {
		got := ConfigFor(onePod(c.c))
		if !got.Same(c.want) || got.Memory != c.want.Memory || got.CPUs != c.want.CPUs || got.Disk != c.want.Disk {
			t.Errorf("%s: ConfigFor = %+v, want %+v", c.name, got, c.want)
		}
		var back map[string]any
		if err := json.Unmarshal(got.JSON(), &back); err != nil || back["image"] != c.want.Image {
			t.Errorf("%s: JSON %s does not read back (%v)", c.name, got.JSON(), err)
		}
	}
}

// What the daemon reads back (every default filled in) is the same VM as
// what was written; any difference in what runs is not.
func TestConfigSame(t *testing.T) {
	written := Config{Image: "app:v1", Cmd: []string{"a"}, Env: map[string]string{"A": "1"}}
	normalized := Config{Image: "app:v1", CPUs: 1, Memory: "256M", Disk: "1G", Cmd: []string{"a"}, Env: map[string]string{"A": "1"}}
	if !written.Same(normalized) {
		t.Error("a config and its normalized form differ")
	}
	for _, o := range []Config{
		{Image: "app:v2", Cmd: []string{"a"}, Env: map[string]string{"A": "1"}},
		{Image: "app:v1", Cmd: []string{"b"}, Env: map[string]string{"A": "1"}},
		{Image: "app:v1", Cmd: []string{"a"}, Env: map[string]string{"A": "2"}},
		{Image: "app:v1", Cmd: []string{"a"}, Env: map[string]string{"A": "1"}, Memory: "512M"},
		{Image: "app:v1", Cmd: []string{"a"}, Env: map[string]string{"A": "1"}, Disk: "2G"},
	} {
		if written.Same(o) {
			t.Errorf("%+v and %+v count as the same VM", written, o)
		}
	}
	if !(Config{Disk: "1024M"}).Same(Config{Disk: "1G"}) {
		t.Error("1024M and 1G differ")
	}
}

// Pods hypefs cannot give what they ask for are refused with a sentence
// naming each reason; the volume the ServiceAccount admission adds is not
// one of them.
func TestCheck(t *testing.T) {
	token := corev1.Volume{Name: "kube-api-access-x7k2p", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
		Sources: []corev1.VolumeProjection{
			{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token"}},
			{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "kube-root-ca.crt"}}},
			{DownwardAPI: &corev1.DownwardAPIProjection{}},
		}}}}
	ok := onePod(corev1.Container{Image: "app", Ports: []corev1.ContainerPort{{ContainerPort: 80}},
		Resources: corev1.ResourceRequirements{Limits: res("cpu", "1", "memory", "1Gi", "ephemeral-storage", "1Gi")}})
	ok.Spec.Volumes = []corev1.Volume{token}
	if r := Check(ok); r != nil {
		t.Fatalf("an ordinary Pod was refused: %s", r.Message)
	}
	uid := int64(0)
	yes := true
	cases := []struct {
		name  string
		edit  func(*corev1.Pod)
		wants []string
	}{
		{"no containers", func(p *corev1.Pod) { p.Spec.Containers = nil }, []string{"has 0 ()"}},
		{"init", func(p *corev1.Pod) { p.Spec.InitContainers = []corev1.Container{{Name: "a"}, {Name: "b"}} }, []string{"init containers (a, b)"}},
		{"secret", func(p *corev1.Pod) {
			p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "creds", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{}}})
		}, []string{"creds (secret)"}},
		{"projected secret passed off as a token", func(p *corev1.Pod) {
			v := token
			v.Projected = &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{{Secret: &corev1.SecretProjection{}}}}
			p.Spec.Volumes = []corev1.Volume{v}
		}, []string{"kube-api-access-x7k2p (projected)"}},
		{"host pid and ipc", func(p *corev1.Pod) { p.Spec.HostPID, p.Spec.HostIPC = true, true }, []string{"hostPID", "hostIPC"}},
		{"container user", func(p *corev1.Pod) {
			p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{RunAsGroup: &uid, RunAsNonRoot: &yes}
		}, []string{"runAsGroup", "runAsNonRoot", "main"}},
		{"hugepages", func(p *corev1.Pod) {
			p.Spec.Containers[0].Resources.Limits["hugepages-2Mi"] = resource.MustParse("2Mi")
		}, []string{"hugepages-2Mi"}},
	}
	for _, c := range cases {
		p := ok.DeepCopy()
		c.edit(p)
		r := Check(p)
		if r == nil {
			t.Errorf("%s: not refused", c.name)
			continue
		}
		for _, w := range c.wants {
			if !strings.Contains(r.Message, w) {
				t.Errorf("%s: %q lacks %q", c.name, r.Message, w)
			}
		}
	}
	two := ok.DeepCopy()
	two.Spec.Containers = append(two.Spec.Containers, corev1.Container{Name: "side"})
	two.Spec.HostNetwork = true
	r := Check(two)
	if r == nil || !strings.Contains(r.Message, "has 2 (main, side)") || !strings.Contains(r.Message, "; hostNetwork") {
		t.Errorf("every reason should be named, in order: %v", r)
	}
	if got := unsupportedResources(&two.Spec.Containers[0]); !slices.Equal(got, nil) {
		t.Errorf("cpu, memory and ephemeral-storage count as unsupported: %v", got)
	}
}
