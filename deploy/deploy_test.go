// Package deploy_test validates the Docker Compose and Kubernetes files with
// the libraries docker compose and kubectl use, and checks that every flag
// and CHAT_* variable they give the chat binary is one it accepts.
package deploy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/kubernetes/scheme"
	syaml "sigs.k8s.io/yaml"
)

var (
	buildOnce sync.Once
	chatBin   string
	buildErr  error
)

// chat builds cmd/chat once for the package.
func chat(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "deploytest")
		if err != nil {
			buildErr = err
			return
		}
		chatBin = filepath.Join(dir, "chat")
		out, err := exec.Command("go", "build", "-o", chatBin, "../cmd/chat").CombinedOutput()
		if err != nil {
			buildErr = err
			chatBin = string(out)
		}
	})
	if buildErr != nil {
		t.Fatalf("build chat: %v\n%s", buildErr, chatBin)
	}
	return chatBin
}

// checkArgs runs chat -print-config with args and env, which fails on any
// unknown flag or unparsable value, and returns the effective config.
func checkArgs(t *testing.T, args []string, env map[string]string) string {
	t.Helper()
	var known []string
	cmd := exec.Command(chat(t), append(slices.Clone(args), "-print-config")...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		if !strings.HasPrefix(k, "CHAT_") {
			continue
		}
		cmd.Env = append(cmd.Env, k+"="+v)
		known = append(known, k)
	}
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("chat %v with %v: %v\n%s", args, known, err, stderr.String())
	}
	// Every CHAT_ variable must name a flag: print-config lists them all.
	for _, k := range known {
		flag := strings.ToLower(strings.TrimPrefix(k, "CHAT_"))
		found := false
		for _, line := range strings.Split(out.String(), "\n") {
			name, _, _ := strings.Cut(line, "=")
			if strings.NewReplacer(".", "_", "-", "_").Replace(name) == flag {
				found = true
			}
		}
		if !found {
			t.Errorf("%s does not match any flag of chat", k)
		}
	}
	return out.String()
}

// loadCompose loads compose/compose.yaml with compose-go, as docker compose
// would, with the one variable it requires set.
func loadCompose(t *testing.T) *types.Project {
	t.Helper()
	t.Setenv("CHAT_JWT_SECRET", "compose-test-secret-0123456789")
	p, err := loadComposeEnv(t)
	if err != nil {
		t.Fatalf("compose file does not load: %v", err)
	}
	return p
}

// loadComposeEnv loads compose/compose.yaml with the process's environment.
func loadComposeEnv(t *testing.T) (*types.Project, error) {
	t.Helper()
	path := filepath.Join("compose", "compose.yaml")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	wd, _ := filepath.Abs("compose")
	return loader.LoadWithContext(context.Background(), types.ConfigDetails{
		WorkingDir:  wd,
		ConfigFiles: []types.ConfigFile{{Filename: path, Content: b}},
		Environment: types.NewMapping(os.Environ()),
	})
}

func TestCompose(t *testing.T) {
	p := loadCompose(t)
	for _, name := range []string{"kafka", "postgres", "history", "router", "edge1", "edge2", "prometheus", "grafana"} {
		if _, err := p.GetService(name); err != nil {
			t.Fatalf("service %s: %v", name, err)
		}
	}
	for name, target := range map[string]string{"edge1": "edge", "edge2": "edge", "history": "history", "router": "router", "analytics": "analytics"} {
		s, err := p.GetService(name)
		if err != nil {
			t.Fatalf("service %s: %v", name, err)
		}
		// Docker's default 10s would SIGKILL an edge in its drain.
		if s.StopGracePeriod == nil || time.Duration(*s.StopGracePeriod) < 2*time.Second+10*time.Second+5*time.Second {
			t.Errorf("%s: stop_grace_period %v, want at least the shutdown delay + the drain + 5s", name, s.StopGracePeriod)
		}
		if target == "analytics" && s.Restart != "no" {
			t.Errorf("analytics: restart %q, want \"no\" (a job that ends)", s.Restart)
		}
		env := map[string]string{}
		for k, v := range s.Environment {
			if v != nil {
				env[k] = *v
			}
		}
		if env["CHAT_KAFKA_BROKERS"] != "kafka:9092" {
			t.Errorf("%s: CHAT_KAFKA_BROKERS = %q, want kafka:9092", name, env["CHAT_KAFKA_BROKERS"])
		}
		if s.Build == nil || s.Build.Context == "" {
			t.Errorf("%s: no build context", name)
		}
		cfg := checkArgs(t, s.Command, env)
		if !strings.Contains(cfg, "target="+target+"\n") {
			t.Errorf("%s does not run -target=%s:\n%s", name, target, cfg)
		}
		if (target == "history" || target == "analytics") && !strings.Contains(env["CHAT_DATABASE_URL"], "@postgres:5432/") {
			t.Errorf("%s: CHAT_DATABASE_URL = %q, want the postgres service", name, env["CHAT_DATABASE_URL"])
		}
	}
	// Without the secret the file refuses to load instead of running with none.
	t.Setenv("CHAT_JWT_SECRET", "")
	os.Unsetenv("CHAT_JWT_SECRET")
	if _, err := loadComposeEnv(t); err == nil {
		t.Error("compose file loaded without CHAT_JWT_SECRET; want a required-variable error")
	}
}

func TestKubernetes(t *testing.T) {
	var kust struct {
		Resources []string `json:"resources"`
	}
	b, err := os.ReadFile(filepath.Join("k8s", "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := syaml.Unmarshal(b, &kust); err != nil {
		t.Fatal(err)
	}
	decode := scheme.Codecs.UniversalDeserializer().Decode
	strict := serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict).UniversalDeserializer()
	configEnv := map[string]string{} // every ConfigMap and Secret key (a superset of each pod's)
	var deployments []*appsv1.Deployment
	var cronJobs []*batchv1.CronJob
	for _, r := range kust.Resources {
		b, err := os.ReadFile(filepath.Join("k8s", r))
		if err != nil {
			t.Fatalf("kustomization lists %s: %v", r, err)
		}
		for i, doc := range strings.Split(string(b), "\n---\n") {
			if strings.TrimSpace(doc) == "" {
				continue
			}
			obj, gvk, err := decode([]byte(doc), nil, nil)
			if err != nil {
				t.Fatalf("%s document %d: %v", r, i, err)
			}
			// Strict decoding catches misspelled fields the lenient one drops.
			if _, _, err := strict.Decode([]byte(doc), nil, nil); err != nil {
				t.Fatalf("%s document %d (%v): %v", r, i, gvk, err)
			}
			switch o := obj.(type) {
			case *corev1.ConfigMap:
				for k, v := range o.Data {
					configEnv[k] = v
				}
			case *corev1.Secret:
				for k, v := range o.StringData {
					configEnv[k] = v
				}
			case *appsv1.Deployment:
				deployments = append(deployments, o)
			case *batchv1.CronJob:
				cronJobs = append(cronJobs, o)
			}
		}
	}
	if len(cronJobs) != 1 || cronJobs[0].Name != "analytics" {
		t.Fatalf("cron jobs = %v, want the analytics CronJob", cronJobs)
	}
	for _, c := range cronJobs[0].Spec.JobTemplate.Spec.Template.Spec.Containers {
		cfg := checkArgs(t, c.Args, configEnv)
		if !strings.Contains(cfg, "target=analytics\n") {
			t.Errorf("analytics CronJob does not run -target=analytics")
		}
	}
	// The kubelet refuses runAsNonRoot for an image whose USER is a name
	// ("cannot verify user is non-root"): the Dockerfile's USER is numeric,
	// and every pod of the image runs as that user.
	imageUser := dockerfileUser(t)
	checkUser := func(what string, pod corev1.PodSpec) {
		sc := pod.SecurityContext
		if sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || fmt.Sprint(*sc.RunAsUser) != imageUser {
			t.Errorf("%s: pod securityContext must set runAsNonRoot and runAsUser %s (the image's USER)", what, imageUser)
		}
	}
	checkUser("analytics CronJob", cronJobs[0].Spec.JobTemplate.Spec.Template.Spec)
	names := map[string]bool{}
	for _, d := range deployments {
		names[d.Name] = true
		checkUser(d.Name, d.Spec.Template.Spec)
	}
	if !names["edge"] || !names["history"] || !names["router"] {
		t.Fatalf("deployments %v, want edge, history and router", names)
	}
	for _, d := range deployments {
		for _, c := range d.Spec.Template.Spec.Containers {
			if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" {
				t.Errorf("%s/%s: readiness probe must GET /readyz", d.Name, c.Name)
			}
			if c.LivenessProbe == nil || c.LivenessProbe.HTTPGet == nil || c.LivenessProbe.HTTPGet.Path != "/healthz" {
				t.Errorf("%s/%s: liveness probe must GET /healthz", d.Name, c.Name)
			}
			env := map[string]string{}
			for k, v := range configEnv {
				env[k] = v
			}
			for _, e := range c.Env {
				env[e.Name] = "from-field"
			}
			if _, ok := env["CHAT_JWT_SECRET"]; !ok {
				t.Errorf("%s/%s: no CHAT_JWT_SECRET", d.Name, c.Name)
			}
			checkArgs(t, c.Args, env)
		}
	}
}

// dockerfileUser returns the numeric uid of the image's USER.
func dockerfileUser(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	user := ""
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "USER "); ok {
			user, _, _ = strings.Cut(strings.TrimSpace(rest), ":")
		}
	}
	if _, err := strconv.Atoi(user); err != nil {
		t.Fatalf("Dockerfile USER %q is not numeric: Kubernetes cannot verify runAsNonRoot", user)
	}
	return user
}

// TestGrafanaDashboards checks that the dashboards are valid JSON, that
// every chat_* metric they query is one the services (or pkg) register, and that
// their SQL reads the analytics tables that exist.
func TestGrafanaDashboards(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join("compose", "grafana", "dashboards", "*.json"))
	if len(files) == 0 {
		t.Fatal("no dashboards")
	}
	var src strings.Builder
	for _, pattern := range []string{"../services/*/*.go", "../services/*/migrations/*.sql", "../pkg/*/*.go", "../cmd/chat/*.go"} {
		names, _ := filepath.Glob(pattern)
		for _, n := range names {
			if strings.HasSuffix(n, "_test.go") {
				continue
			}
			b, _ := os.ReadFile(n)
			src.Write(b)
		}
	}
	metricRE := regexp.MustCompile(`chat_[a-z_]+`)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d struct {
			UID    string
			Panels []struct {
				Title   string
				Targets []struct {
					Expr   string `json:"expr"`
					RawSQL string `json:"rawSql"`
				}
			}
		}
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if d.UID == "" || len(d.Panels) == 0 {
			t.Fatalf("%s: no uid or no panels", f)
		}
		for _, p := range d.Panels {
			for _, tg := range p.Targets {
				for _, m := range metricRE.FindAllString(tg.Expr, -1) {
					base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(m, "_bucket"), "_sum"), "_count")
					if !strings.Contains(src.String(), `"`+base+`"`) {
						t.Errorf("%s / %q: metric %s is not registered by any service", f, p.Title, base)
					}
				}
				for _, table := range regexp.MustCompile(`analytics_[a-z]+`).FindAllString(tg.RawSQL, -1) {
					if !strings.Contains(src.String(), "CREATE TABLE "+table) {
						t.Errorf("%s / %q: table %s does not exist", f, p.Title, table)
					}
				}
			}
		}
	}
}
