package deploy_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// ingressRoute is one path of an Ingress rule with its backend.
type ingressRoute struct {
	ingress string
	host    string
	path    networkingv1.HTTPIngressPath
}

// route picks the backend Service of a request path as ingress-nginx does
// for these Ingresses: a matching regular expression
// (ImplementationSpecific path, use-regex) wins over the prefixes, and of
// the Prefix paths the longest matching one, element-wise, wins.
func route(routes []ingressRoute, path string) (svc string, port networkingv1.ServiceBackendPort) {
	best := -1
	for _, r := range routes {
		p := r.path
		b := p.Backend.Service
		switch *p.PathType {
		case networkingv1.PathTypeImplementationSpecific:
			if regexp.MustCompile("^" + p.Path).MatchString(path) {
				return b.Name, b.Port
			}
		case networkingv1.PathTypeExact:
			if path == p.Path && len(p.Path) > best {
				best, svc, port = len(p.Path), b.Name, b.Port
			}
		case networkingv1.PathTypePrefix:
			prefix := strings.TrimSuffix(p.Path, "/")
			if (path == prefix || strings.HasPrefix(path, prefix+"/")) && len(prefix) > best {
				best, svc, port = len(prefix), b.Name, b.Port
			}
		}
	}
	return svc, port
}

// servicePort returns the port of svc that a backend port names.
func servicePort(svc *corev1.Service, p networkingv1.ServiceBackendPort) (corev1.ServicePort, bool) {
	for _, sp := range svc.Spec.Ports {
		if (p.Name != "" && sp.Name == p.Name) || (p.Name == "" && sp.Port == p.Number) {
			return sp, true
		}
	}
	return corev1.ServicePort{}, false
}

// checkIngress checks the ingress component: TLS on every host, every
// backend an existing Service and port (one that reaches a container port
// of the Service's pods), and the paths of the services' endpoints routed
// to the Service that serves them, /ws to the edges.
func checkIngress(t *testing.T, c *cluster) {
	if len(c.ingresses) == 0 {
		t.Fatal("the ingress component has no Ingress")
	}
	var routes []ingressRoute
	for _, ing := range c.ingresses {
		if len(ing.Spec.TLS) == 0 {
			t.Errorf("Ingress %s has no tls", ing.Name)
		}
		tlsHosts := map[string]bool{}
		for _, tls := range ing.Spec.TLS {
			if tls.SecretName == "" {
				t.Errorf("Ingress %s: a tls entry has no secretName", ing.Name)
			}
			for _, h := range tls.Hosts {
				tlsHosts[h] = true
			}
		}
		if ing.Spec.DefaultBackend != nil {
			t.Errorf("Ingress %s has a default backend: every path is routed explicitly", ing.Name)
		}
		for _, rule := range ing.Spec.Rules {
			if !tlsHosts[rule.Host] {
				t.Errorf("Ingress %s: host %q is not covered by its tls", ing.Name, rule.Host)
			}
			if rule.HTTP == nil {
				t.Errorf("Ingress %s: rule for %q has no paths", ing.Name, rule.Host)
				continue
			}
			for _, p := range rule.HTTP.Paths {
				if p.PathType == nil || p.Backend.Service == nil {
					t.Fatalf("Ingress %s path %s: no pathType or no service backend", ing.Name, p.Path)
				}
				routes = append(routes, ingressRoute{ing.Name, rule.Host, p})
			}
		}
	}
	// Every backend names an existing Service and one of its ports, and
	// that port's target is a container port of the Service's pods.
	for _, r := range routes {
		b := r.path.Backend.Service
		svc, ok := c.services[b.Name]
		if !ok {
			t.Errorf("Ingress %s path %s: no Service %q", r.ingress, r.path.Path, b.Name)
			continue
		}
		sp, ok := servicePort(svc, b.Port)
		if !ok {
			t.Errorf("Ingress %s path %s: Service %s has no port %+v", r.ingress, r.path.Path, b.Name, b.Port)
			continue
		}
		found := false
		for _, pod := range c.pods {
			if len(svc.Spec.Selector) == 0 || !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(pod.spec.Labels)) {
				continue
			}
			for _, ctr := range pod.spec.Spec.Containers {
				for _, cp := range ctr.Ports {
					if (sp.TargetPort.Type == intstr.String && cp.Name == sp.TargetPort.StrVal) ||
						(sp.TargetPort.Type == intstr.Int && cp.ContainerPort == sp.TargetPort.IntVal) {
						found = true
					}
				}
			}
		}
		if !found {
			t.Errorf("Ingress %s path %s: Service %s port %s reaches no container port of its pods", r.ingress, r.path.Path, b.Name, sp.Name)
		}
	}
	// Each service's endpoints reach it (see the Routes of each service;
	// GET /v1/rooms/{room}/members is the router's, the rest of
	// /v1/rooms history's).
	want := map[string]string{
		"/ws":                             "edge",
		"/":                               "edge",
		"/app.js":                         "edge",
		"/v1/admin/announce":              "edge",
		"/v1/presence":                    "router",
		"/v1/rooms/general/members":       "router",
		"/v1/rooms/general/messages":      "history",
		"/v1/rooms/general":               "history",
		"/v1/rooms/general/invite":        "history",
		"/v1/rooms":                       "history",
		"/v1/dm/bob/messages":             "history",
		"/v1/dm":                          "history",
		"/v1/search":                      "history",
		"/v1/unread":                      "history",
		"/v1/blocks/bob":                  "history",
		"/v1/messages/0190a0b0-0000-7000": "history",
		"/v1/openapi.yaml":                "history",
	}
	// Every file of the page reaches the edges.
	web, err := os.ReadDir(filepath.Join("..", "services", "edge", "web"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range web {
		want["/"+f.Name()] = "edge"
	}
	// What is for the cluster only is not published.
	for _, p := range []string{"/metrics", "/healthz", "/readyz", "/debug/pprof/", "/debug/pprof/profile"} {
		want[p] = ""
	}
	for path, svc := range want {
		if got, _ := route(routes, path); got != svc {
			t.Errorf("%s is routed to Service %q, want %q", path, got, svc)
		}
	}
	got, port := route(routes, "/ws")
	if edge, ok := c.services["edge"]; ok && got == "edge" {
		if sp, ok := servicePort(edge, port); !ok || sp.Name != "http" {
			t.Errorf("/ws goes to edge port %+v, want the edge Service's http port", port)
		}
	}
	// WebSocket connections outlive ingress-nginx's 60s default timeouts.
	for _, ing := range c.ingresses {
		for _, a := range []string{"nginx.ingress.kubernetes.io/proxy-read-timeout", "nginx.ingress.kubernetes.io/proxy-send-timeout"} {
			v, ok := ing.Annotations[a]
			if !ok {
				t.Errorf("Ingress %s has no %s", ing.Name, a)
				continue
			}
			if n := parseSeconds(t, v); n < 3600 {
				t.Errorf("Ingress %s: %s is %s, want at least 3600", ing.Name, a, v)
			}
		}
	}
}

func parseSeconds(t *testing.T, v string) int {
	t.Helper()
	d := parseDur(t, strings.TrimSuffix(v, "s")+"s")
	return int(d.Seconds())
}
