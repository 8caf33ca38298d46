package deploy_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	syaml "sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "regenerate k8s/components/monitoring/prometheusrule.yaml from prometheus/alerts.yaml")

// TestAlertRules checks the alerting rules and runs their unit tests with
// promtool (Debian: apt-get install prometheus).
func TestAlertRules(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not found on PATH: install it (Debian: apt-get install prometheus; .ci/run does) to check and unit-test the alerting rules")
	}
	for _, args := range [][]string{
		{"check", "rules", "alerts.yaml"},
		{"test", "rules", "alerts_test.yaml"},
	} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = "prometheus"
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	// Every rule has at least one promtool case.
	rules := alertGroups(t)
	tests, err := os.ReadFile(filepath.Join("prometheus", "alerts_test.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range rules {
		for _, r := range g.Rules {
			if !strings.Contains(string(tests), "alertname: "+r.Alert+"\n") {
				t.Errorf("alert %s has no promtool test case", r.Alert)
			}
		}
	}
}

func alertGroups(t *testing.T) []monitoringv1.RuleGroup {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("prometheus", "alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Groups []monitoringv1.RuleGroup `json:"groups"`
	}
	if err := syaml.UnmarshalStrict(b, &f); err != nil {
		t.Fatalf("alerts.yaml: %v", err)
	}
	if len(f.Groups) == 0 {
		t.Fatal("alerts.yaml has no groups")
	}
	return f.Groups
}

// TestPrometheusRule checks that the monitoring component's PrometheusRule
// carries exactly the rules of prometheus/alerts.yaml.
func TestPrometheusRule(t *testing.T) {
	groups := alertGroups(t)
	path := filepath.Join("k8s", "components", "monitoring", "prometheusrule.yaml")
	if *update {
		pr := monitoringv1.PrometheusRule{
			TypeMeta:   metav1.TypeMeta{APIVersion: "monitoring.coreos.com/v1", Kind: "PrometheusRule"},
			ObjectMeta: metav1.ObjectMeta{Name: "chat", Namespace: "chat", Labels: map[string]string{"app.kubernetes.io/name": "chat"}},
			Spec:       monitoringv1.PrometheusRuleSpec{Groups: groups},
		}
		b, err := syaml.Marshal(pr)
		if err != nil {
			t.Fatal(err)
		}
		b = bytes.Replace(b, []byte("  creationTimestamp: null\n"), nil, 1)
		head := "# Generated from deploy/prometheus/alerts.yaml: go test ./deploy -run TestPrometheusRule -update\n"
		if err := os.WriteFile(path, append([]byte(head), b...), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	obj := decodeStrict(t, path, b)
	pr, ok := obj.(*monitoringv1.PrometheusRule)
	if !ok {
		t.Fatalf("%s is a %T", path, obj)
	}
	if !reflect.DeepEqual(pr.Spec.Groups, groups) {
		t.Fatalf("%s differs from prometheus/alerts.yaml: go test ./deploy -run TestPrometheusRule -update", path)
	}
}

var strictScheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		panic(err)
	}
	if err := monitoringv1.AddToScheme(s); err != nil {
		panic(err)
	}
	return s
}()

// decodeStrict decodes one object with the real API types, refusing
// unknown and duplicate fields.
func decodeStrict(t *testing.T, what string, doc []byte) runtime.Object {
	t.Helper()
	obj, gvk, err := serializer.NewCodecFactory(strictScheme, serializer.EnableStrict).UniversalDeserializer().Decode(doc, nil, nil)
	if err != nil {
		t.Fatalf("%s (%v): %v", what, gvk, err)
	}
	return obj
}

// kustomizeBuild runs kustomize (its library, as kubectl apply -k does) on
// dir and decodes every object strictly.
func kustomizeBuild(t *testing.T, dir string) []runtime.Object {
	t.Helper()
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	var objs []runtime.Object
	for _, r := range m.Resources() {
		y, err := r.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		objs = append(objs, decodeStrict(t, r.CurId().String(), y))
	}
	return objs
}

// overlay writes an overlay of the base with the given components.
func overlay(t *testing.T, components ...string) string {
	t.Helper()
	dir := t.TempDir()
	rel := func(p string) string { // kustomize wants relative paths
		abs, _ := filepath.Abs(p)
		r, err := filepath.Rel(dir, abs)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - %s\ncomponents:\n", rel("k8s"))
	for _, c := range components {
		fmt.Fprintf(&b, "  - %s\n", rel(filepath.Join("k8s", "components", c)))
	}
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// podTemplate is a workload's pod template with its name.
type podTemplate struct {
	name string
	spec corev1.PodTemplateSpec
}

type cluster struct {
	config     map[string]string // chat-config and the secrets' string data
	deploys    map[string]*appsv1.Deployment
	pods       []podTemplate // deployments, the CronJob's and the Job's
	hpas       []*autoscalingv2.HorizontalPodAutoscaler
	policies   []*networkingv1.NetworkPolicy
	jobs       map[string]*batchv1.Job
	podMonitor []*monitoringv1.PodMonitor
	rules      []*monitoringv1.PrometheusRule
	services   map[string]*corev1.Service
	ingresses  []*networkingv1.Ingress
}

func sortObjects(objs []runtime.Object) *cluster {
	c := &cluster{config: map[string]string{}, deploys: map[string]*appsv1.Deployment{}, jobs: map[string]*batchv1.Job{}, services: map[string]*corev1.Service{}}
	for _, obj := range objs {
		switch o := obj.(type) {
		case *corev1.ConfigMap:
			for k, v := range o.Data {
				c.config[k] = v
			}
		case *corev1.Secret:
			for k, v := range o.StringData {
				c.config[k] = v
			}
		case *appsv1.Deployment:
			c.deploys[o.Name] = o
			c.pods = append(c.pods, podTemplate{o.Name, o.Spec.Template})
		case *batchv1.CronJob:
			c.pods = append(c.pods, podTemplate{o.Name, o.Spec.JobTemplate.Spec.Template})
		case *batchv1.Job:
			c.jobs[o.Name] = o
			c.pods = append(c.pods, podTemplate{o.Name, o.Spec.Template})
		case *autoscalingv2.HorizontalPodAutoscaler:
			c.hpas = append(c.hpas, o)
		case *networkingv1.NetworkPolicy:
			c.policies = append(c.policies, o)
		case *monitoringv1.PodMonitor:
			c.podMonitor = append(c.podMonitor, o)
		case *monitoringv1.PrometheusRule:
			c.rules = append(c.rules, o)
		case *corev1.Service:
			c.services[o.Name] = o
		case *networkingv1.Ingress:
			c.ingresses = append(c.ingresses, o)
		}
	}
	return c
}

// TestKustomize builds the base and the base with each optional component
// (monitoring, ingress) with kustomize's library, decodes every object
// strictly, and checks the autoscaler, the network policies, the topics
// Job, the monitoring objects and the Ingress against the workloads and
// Services.
func TestKustomize(t *testing.T) {
	base := sortObjects(kustomizeBuild(t, "k8s"))
	if len(base.podMonitor) != 0 || len(base.rules) != 0 {
		t.Fatal("the base has Prometheus Operator objects: they belong in components/monitoring (not every cluster has the CRDs)")
	}
	withMon := sortObjects(kustomizeBuild(t, overlay(t, "monitoring")))
	if len(withMon.podMonitor) != 1 || len(withMon.rules) != 1 {
		t.Fatalf("with the monitoring component: %d PodMonitors, %d PrometheusRules; want 1 and 1", len(withMon.podMonitor), len(withMon.rules))
	}

	t.Run("edge autoscaler", func(t *testing.T) { checkHPA(t, base) })
	t.Run("network policies", func(t *testing.T) { checkNetworkPolicies(t, base) })
	t.Run("topics job", func(t *testing.T) { checkTopicsJob(t, base) })
	t.Run("pod monitor", func(t *testing.T) { checkPodMonitor(t, withMon) })
	t.Run("ingress", func(t *testing.T) {
		if len(base.ingresses) != 0 {
			t.Fatal("the base has an Ingress: it belongs in components/ingress (it needs the user's host and certificate)")
		}
		checkIngress(t, sortObjects(kustomizeBuild(t, overlay(t, "ingress"))))
	})
}

func checkHPA(t *testing.T, c *cluster) {
	if len(c.hpas) != 1 {
		t.Fatalf("%d HorizontalPodAutoscalers, want 1 (edges)", len(c.hpas))
	}
	h := c.hpas[0]
	edge := c.deploys["edge"]
	if h.Spec.ScaleTargetRef.Kind != "Deployment" || h.Spec.ScaleTargetRef.Name != "edge" || edge == nil {
		t.Fatalf("the autoscaler scales %v, want Deployment edge", h.Spec.ScaleTargetRef)
	}
	if edge.Spec.Replicas != nil {
		t.Error("Deployment edge sets replicas: every kubectl apply would reset what the autoscaler chose")
	}
	if h.Spec.MinReplicas == nil || *h.Spec.MinReplicas < 2 {
		t.Error("the autoscaler may go below 2 edges: one drain would leave no edge")
	}
	cpu := false
	for _, m := range h.Spec.Metrics {
		cpu = cpu || (m.Resource != nil && m.Resource.Name == corev1.ResourceCPU)
	}
	if !cpu {
		t.Error("the autoscaler does not scale on CPU")
	}
	for _, ctr := range edge.Spec.Template.Spec.Containers {
		if ctr.Resources.Requests.Cpu().IsZero() {
			t.Errorf("edge container %s has no CPU request: CPU utilization is undefined", ctr.Name)
		}
	}
	// Scale-down waits longer than a whole drain, and removes one pod at a time.
	sd := h.Spec.Behavior.ScaleDown
	if sd == nil || sd.StabilizationWindowSeconds == nil {
		t.Fatal("no scale-down stabilization window")
	}
	drain := parseDur(t, c.config["CHAT_SHUTDOWN_DELAY"]) + parseDur(t, c.config["CHAT_EDGE_DRAIN_DURATION"])
	grace := time.Duration(*edge.Spec.Template.Spec.TerminationGracePeriodSeconds) * time.Second
	window := time.Duration(*sd.StabilizationWindowSeconds) * time.Second
	if window <= grace || window <= drain {
		t.Errorf("scale-down stabilization %v is not longer than a drain (%v; grace period %v)", window, drain, grace)
	}
	if drain >= grace {
		t.Errorf("shutdown delay + drain (%v) do not fit in the edge's grace period %v", drain, grace)
	}
	for _, p := range sd.Policies {
		if p.Type != autoscalingv2.PodsScalingPolicy || p.Value != 1 || time.Duration(p.PeriodSeconds)*time.Second < drain {
			t.Errorf("scale-down policy %+v: want one pod per period of at least a drain (%v)", p, drain)
		}
	}
	if len(sd.Policies) == 0 {
		t.Error("no scale-down policy: the autoscaler may drain many edges at once")
	}
}

func parseDur(t *testing.T, s string) time.Duration {
	t.Helper()
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatalf("duration %q: %v", s, err)
	}
	return d
}

// portMatches reports whether a policy port admits the container port.
func portMatches(pp networkingv1.NetworkPolicyPort, port corev1.ContainerPort) bool {
	if pp.Protocol != nil && *pp.Protocol != corev1.ProtocolTCP {
		return false
	}
	if pp.Port == nil {
		return true
	}
	if pp.Port.StrVal != "" {
		return pp.Port.StrVal == port.Name
	}
	return int32(pp.Port.IntValue()) == port.ContainerPort
}

func selects(t *testing.T, sel metav1.LabelSelector, l map[string]string) bool {
	s, err := metav1.LabelSelectorAsSelector(&sel)
	if err != nil {
		t.Fatal(err)
	}
	return s.Matches(labels.Set(l))
}

func hasType(np *networkingv1.NetworkPolicy, typ networkingv1.PolicyType) bool {
	return slices.Contains(np.Spec.PolicyTypes, typ)
}

// ingressFromAnywhere: some policy admits TCP traffic from any source to
// the pod's port; isolated: some policy selects the pod for ingress.
func ingressFromAnywhere(t *testing.T, c *cluster, pod podTemplate, port corev1.ContainerPort) (allowed, isolated bool) {
	for _, np := range c.policies {
		if !hasType(np, networkingv1.PolicyTypeIngress) || !selects(t, np.Spec.PodSelector, pod.spec.Labels) {
			continue
		}
		isolated = true
		for _, r := range np.Spec.Ingress {
			if len(r.From) != 0 {
				continue
			}
			if len(r.Ports) == 0 {
				allowed = true
			}
			for _, pp := range r.Ports {
				allowed = allowed || portMatches(pp, port)
			}
		}
	}
	return allowed, isolated
}

// egressTo: some policy admits TCP (or UDP for DNS) from the pod to port of
// the namespace named ns; isolated: some policy selects it for egress.
func egressTo(t *testing.T, c *cluster, pod podTemplate, ns string, port int, proto corev1.Protocol) (allowed, isolated bool) {
	nsLabels := map[string]string{"kubernetes.io/metadata.name": ns}
	for _, np := range c.policies {
		if !hasType(np, networkingv1.PolicyTypeEgress) || !selects(t, np.Spec.PodSelector, pod.spec.Labels) {
			continue
		}
		isolated = true
		for _, r := range np.Spec.Egress {
			peer := len(r.To) == 0
			for _, to := range r.To {
				peer = peer || (to.IPBlock == nil && to.PodSelector == nil && to.NamespaceSelector != nil && selects(t, *to.NamespaceSelector, nsLabels))
			}
			if !peer {
				continue
			}
			if len(r.Ports) == 0 {
				allowed = true
			}
			for _, pp := range r.Ports {
				p := corev1.ProtocolTCP
				if pp.Protocol != nil {
					p = *pp.Protocol
				}
				allowed = allowed || (p == proto && (pp.Port == nil || pp.Port.IntValue() == port))
			}
		}
	}
	return allowed, isolated
}

// hostNamespacePort reads "name.namespace.svc[...]:port".
func hostNamespacePort(t *testing.T, hostport string) (string, int) {
	t.Helper()
	host, port, ok := strings.Cut(hostport, ":")
	parts := strings.Split(host, ".")
	n, err := strconv.Atoi(port)
	if !ok || len(parts) < 3 || parts[2] != "svc" || err != nil {
		t.Fatalf("%q is not service.namespace.svc:port", hostport)
	}
	return parts[1], n
}

func checkNetworkPolicies(t *testing.T, c *cluster) {
	kafkaNS, kafkaPort := hostNamespacePort(t, strings.Split(c.config["CHAT_KAFKA_BROKERS"], ",")[0])
	u, err := url.Parse(c.config["CHAT_DATABASE_URL"])
	if err != nil {
		t.Fatal(err)
	}
	pgNS, pgPort := hostNamespacePort(t, u.Host)
	serving := map[string]bool{"edge": true, "history": true, "router": true}
	database := map[string]bool{"history": true, "analytics": true}
	if len(c.pods) < 5 {
		t.Fatalf("%d pod templates, want edge, history, router, analytics, topics", len(c.pods))
	}
	for _, pod := range c.pods {
		comp := pod.spec.Labels["app.kubernetes.io/component"]
		if comp != pod.name {
			t.Errorf("%s: pod label app.kubernetes.io/component = %q, want %q (the policies select on it)", pod.name, comp, pod.name)
		}
		var ports []corev1.ContainerPort
		for _, ctr := range pod.spec.Spec.Containers {
			ports = append(ports, ctr.Ports...)
		}
		if serving[pod.name] {
			if len(ports) == 0 {
				t.Errorf("%s: no container port", pod.name)
			}
			for _, p := range ports {
				if ok, _ := ingressFromAnywhere(t, c, pod, p); !ok {
					t.Errorf("%s: port %s (%d) does not accept ingress", pod.name, p.Name, p.ContainerPort)
				}
			}
		}
		if ok, isolated := ingressFromAnywhere(t, c, pod, corev1.ContainerPort{Name: "http", ContainerPort: 8080}); !isolated || (ok && !serving[pod.name]) {
			t.Errorf("%s: accepts ingress (isolated %v, open %v); only edges, history and router may", pod.name, isolated, ok)
		}
		for _, e := range []struct {
			what  string
			ns    string
			port  int
			proto corev1.Protocol
			want  bool
		}{
			{"DNS", "kube-system", 53, corev1.ProtocolUDP, true},
			{"Kafka", kafkaNS, kafkaPort, corev1.ProtocolTCP, true},
			{"PostgreSQL", pgNS, pgPort, corev1.ProtocolTCP, database[pod.name]},
		} {
			ok, isolated := egressTo(t, c, pod, e.ns, e.port, e.proto)
			if !isolated {
				t.Errorf("%s: egress is not restricted", pod.name)
			}
			if ok != e.want {
				t.Errorf("%s: egress to %s (%s:%d) allowed = %v, want %v", pod.name, e.what, e.ns, e.port, ok, e.want)
			}
		}
	}
}

func checkTopicsJob(t *testing.T, c *cluster) {
	job := c.jobs["topics"]
	if job == nil {
		t.Fatal("no Job topics")
	}
	if len(job.Spec.Template.Spec.Containers) != 1 {
		t.Fatal("the topics Job has not one container")
	}
	ctr := job.Spec.Template.Spec.Containers[0]
	script := strings.Join(append(slices.Clone(ctr.Command), ctr.Args...), " ")
	if !strings.Contains(script, "--create --if-not-exists") {
		t.Error("the topics Job does not create with --if-not-exists: it is not idempotent")
	}
	env := map[string]string{}
	for k, v := range c.config {
		env[k] = v
	}
	for _, e := range ctr.Env {
		env[e.Name] = e.Value
	}
	// Retention as the services would create the topics.
	if want := strconv.FormatInt(parseDur(t, env["CHAT_KAFKA_RETENTION"]).Milliseconds(), 10); env["TOPIC_RETENTION_MS"] != want {
		t.Errorf("TOPIC_RETENTION_MS = %q, want %s (CHAT_KAFKA_RETENTION %s)", env["TOPIC_RETENTION_MS"], want, env["CHAT_KAFKA_RETENTION"])
	}
	if !strings.Contains(script, `--replication-factor "$CHAT_KAFKA_REPLICATION_FACTOR"`) || !strings.Contains(script, `retention.ms=$TOPIC_RETENTION_MS`) {
		t.Error("the topics Job does not use the configured replication factor and retention")
	}
	// The topics and partition counts are the chat's.
	cfg := map[string]string{}
	for _, line := range strings.Split(checkArgs(t, nil, map[string]string{}), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			cfg[k] = v
		}
	}
	want := map[string]string{
		cfg["kafka.topic-rooms"]:                   "$CHAT_KAFKA_ROOMS_PARTITIONS",
		cfg["kafka.topic-direct"]:                  "$CHAT_KAFKA_DIRECT_PARTITIONS",
		cfg["kafka.topic-presence"]:                "$CHAT_KAFKA_PRESENCE_PARTITIONS",
		cfg["kafka.topic-deliveries"]:              "$CHAT_KAFKA_PRESENCE_PARTITIONS",
		cfg["kafka.topic-presence"] + ".snapshots": "1", // the router's snapshots
		cfg["kafka.topic-acl"]:                     "1",
		cfg["kafka.topic-typing"]:                  "$CHAT_KAFKA_PRESENCE_PARTITIONS",
	}
	got := map[string]string{}
	for _, m := range regexp.MustCompile(`(?m)^\s*create (\S+) "?([^"\s]+)"?(?:\s+\S+=\S+)*\s*(?:#.*)?$`).FindAllStringSubmatch(script, -1) {
		got[m[1]] = m[2]
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("the topics Job creates %v, want %v", got, want)
	}
	for _, v := range want {
		if name, ok := strings.CutPrefix(v, "$"); ok {
			if _, err := strconv.Atoi(env[name]); err != nil {
				t.Errorf("%s = %q in chat-config: not a partition count", name, env[name])
			}
		}
	}
}

func checkPodMonitor(t *testing.T, c *cluster) {
	pm := c.podMonitor[0]
	if len(pm.Spec.PodMetricsEndpoints) != 1 {
		t.Fatalf("PodMonitor has %d endpoints, want 1", len(pm.Spec.PodMetricsEndpoints))
	}
	ep := pm.Spec.PodMetricsEndpoints[0]
	for name, d := range c.deploys {
		if !selects(t, pm.Spec.Selector, d.Spec.Template.Labels) {
			t.Errorf("the PodMonitor does not select Deployment %s", name)
		}
		found := false
		for _, ctr := range d.Spec.Template.Spec.Containers {
			for _, p := range ctr.Ports {
				found = found || (ep.Port != nil && p.Name == *ep.Port)
			}
		}
		if !found {
			t.Errorf("Deployment %s has no port named %v (the PodMonitor's)", name, ep.Port)
		}
	}
	for _, pod := range c.pods {
		if c.deploys[pod.name] == nil && selects(t, pm.Spec.Selector, pod.spec.Labels) {
			t.Errorf("the PodMonitor selects %s, which serves no metrics", pod.name)
		}
	}
	// The job label is chat-<component>, as the alerts expect.
	ok := false
	for _, r := range ep.RelabelConfigs {
		ok = ok || (r.TargetLabel == "job" && r.Replacement != nil && *r.Replacement == "chat-$1" &&
			slices.Equal(r.SourceLabels, []monitoringv1.LabelName{"__meta_kubernetes_pod_label_app_kubernetes_io_component"}))
	}
	if !ok {
		t.Error("the PodMonitor does not set job=chat-<component>")
	}
	if !reflect.DeepEqual(c.rules[0].Spec.Groups, alertGroups(t)) {
		t.Error("the PrometheusRule built differs from prometheus/alerts.yaml")
	}
}

// TestScrapeConfigs checks that Prometheus scrapes every service that
// serves /metrics: in Compose every service run from the chat image (the
// analytics batch job has none there), on Kubernetes every Deployment
// (the prometheus.io annotations name its http port).
func TestScrapeConfigs(t *testing.T) {
	p := loadCompose(t)
	var prom struct {
		RuleFiles     []string `json:"rule_files"`
		ScrapeConfigs []struct {
			JobName       string `json:"job_name"`
			StaticConfigs []struct {
				Targets []string `json:"targets"`
			} `json:"static_configs"`
		} `json:"scrape_configs"`
	}
	pb, err := os.ReadFile(filepath.Join("compose", "prometheus.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := syaml.Unmarshal(pb, &prom); err != nil {
		t.Fatal(err)
	}
	scraped := map[string]string{} // target → job
	for _, sc := range prom.ScrapeConfigs {
		for _, s := range sc.StaticConfigs {
			for _, tg := range s.Targets {
				scraped[tg] = sc.JobName
			}
		}
	}
	var want []string
	for name, s := range p.Services {
		if s.Image != "chat:dev" || s.Restart == "no" { // a job that ends (analytics) is not scraped
			continue
		}
		target := ""
		for _, a := range s.Command {
			if v, ok := strings.CutPrefix(a, "-target="); ok {
				target = v
			}
		}
		_, port, _ := strings.Cut(*s.Environment["CHAT_HTTP_ADDR"], ":")
		want = append(want, name)
		if job := scraped[name+":"+port]; job != "chat-"+target {
			t.Errorf("compose service %s (-target=%s) is scraped by job %q, want chat-%s at %s:%s", name, target, job, target, name, port)
		}
	}
	if len(want) < 4 {
		t.Fatalf("compose services from the chat image: %v", want)
	}
	if len(scraped) != len(want) {
		t.Errorf("prometheus.yml scrapes %v; compose has %v", scraped, want)
	}
	// Compose's Prometheus loads the alerting rules.
	ps, _ := p.GetService("prometheus")
	mounted := false
	for _, v := range ps.Volumes {
		abs, _ := filepath.Abs(filepath.Join("prometheus", "alerts.yaml"))
		mounted = mounted || (v.Source == abs && slices.Contains(prom.RuleFiles, v.Target))
	}
	if !mounted {
		t.Errorf("compose's Prometheus does not load prometheus/alerts.yaml (rule_files %v)", prom.RuleFiles)
	}

	c := sortObjects(kustomizeBuild(t, "k8s"))
	for name, d := range c.deploys {
		a := d.Spec.Template.Annotations
		if a["prometheus.io/scrape"] != "true" {
			t.Errorf("Deployment %s: pods not annotated prometheus.io/scrape", name)
		}
		found := false
		for _, ctr := range d.Spec.Template.Spec.Containers {
			for _, p := range ctr.Ports {
				found = found || strconv.Itoa(int(p.ContainerPort)) == a["prometheus.io/port"]
			}
		}
		if !found {
			t.Errorf("Deployment %s: prometheus.io/port %q is no container port", name, a["prometheus.io/port"])
		}
	}
}

// TestDashboardLayout checks panel ids and positions. (The live test in
// cmd/chat, TestDashboardsLive, evaluates every panel's query.)
func TestDashboardLayout(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join("compose", "grafana", "dashboards", "*.json"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		var d struct {
			Panels []struct {
				ID      int
				GridPos struct{ X, Y, W, H int }
			}
		}
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatal(err)
		}
		ids := map[int]bool{}
		for _, p := range d.Panels {
			if ids[p.ID] {
				t.Errorf("%s: panel id %d twice", f, p.ID)
			}
			ids[p.ID] = true
		}
		// No two panels overlap.
		for i, a := range d.Panels {
			for _, b := range d.Panels[i+1:] {
				if a.GridPos.X < b.GridPos.X+b.GridPos.W && b.GridPos.X < a.GridPos.X+a.GridPos.W &&
					a.GridPos.Y < b.GridPos.Y+b.GridPos.H && b.GridPos.Y < a.GridPos.Y+a.GridPos.H {
					t.Errorf("%s: panels %d and %d overlap", f, a.ID, b.ID)
				}
			}
		}
	}
}
