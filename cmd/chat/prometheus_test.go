package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/chatsys/chat/pkg/auth"
	"github.com/chatsys/chat/pkg/pgutil/pgtest"
)

// TestDashboardsLive runs Debian's prometheus against the multi-process
// system (broker, two edges, router, history on PostgreSQL), drives a
// little traffic of every kind, and evaluates every PromQL expression of
// every Grafana dashboard through Prometheus's HTTP API: each must return
// at least one series. Prometheus also loads deploy/prometheus/alerts.yaml,
// so the rules are known to load in a real server.
func TestDashboardsLive(t *testing.T) {
	promBin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Skip("prometheus not found on PATH: install it (Debian: apt-get install prometheus; .ci/run does) to prove the dashboards against a live Prometheus")
	}
	if testing.Short() {
		t.Skip("starts six processes and a Prometheus")
	}
	exprs := dashboardExprs(t)

	dir := dataDir(t)
	brokerAddr := freeAddr(t)
	env := []string{"CHAT_KAFKA_BROKERS=" + brokerAddr, "CHAT_JWT_SECRET=" + mpSecret, "CHAT_DATA_DIR=" + dir,
		"CHAT_EDGE_HEARTBEAT=300ms", "CHAT_EDGE_PRESENCE_GRACE=300ms", "CHAT_KAFKA_PRESENCE_PARTITIONS=4",
		"CHAT_EDGE_DRAIN_DURATION=100ms"}
	broker := startProc(t, env, "broker", "-target=broker", "-broker.addr="+brokerAddr)
	router := startProc(t, env, "router", "-target=router")
	hist := startProc(t, append(env, "CHAT_DATABASE_URL="+pgtest.NewDatabase(t)), "history", "-target=history", "-history.batch-wait=20ms")
	edge1 := startProc(t, env, "edge1", "-target=edge", "-edge.id=edge1")
	edge2 := startProc(t, env, "edge2", "-target=edge", "-edge.id=edge2")

	prom := startPrometheus(t, promBin, map[string][]string{
		"chat-broker":  {broker.addr},
		"chat-edge":    {edge1.addr, edge2.addr},
		"chat-history": {hist.addr},
		"chat-router":  {router.addr},
	})
	waitFor(t, 60*time.Second, "Prometheus scraping all five targets", func() bool {
		res, err := prom.query(`sum(up{job=~"chat-.*"})`)
		return err == nil && len(res) == 1 && res[0].Value[1] == "5"
	})

	// Traffic of every kind.
	alice, aliceIn := mpDial(t, edge1, "alice")
	_, bobIn := mpDial(t, edge2, "bob")
	waitFor(t, 10*time.Second, "alice and bob online", func() bool {
		a, _ := presenceOf(t, router, "alice")
		b, _ := presenceOf(t, router, "bob")
		return a && b
	})
	alice.WriteJSON(map[string]string{"type": "chat", "room": "general", "content": "hello dashboards", "client_id": "r1"})
	waitFor(t, 10*time.Second, "bob gets the room message", func() bool { return len(bobIn.ofType("chat")) >= 1 })
	alice.WriteJSON(map[string]string{"type": "private", "target": "bob", "content": "psst", "client_id": "d1"})
	waitFor(t, 10*time.Second, "bob gets the DM", func() bool { return len(bobIn.ofType("private")) == 1 })
	alice.WriteMessage(websocket.TextMessage, []byte(`{"type":"chat"`)) // invalid_message
	waitFor(t, 10*time.Second, "alice gets invalid_message", func() bool { return len(aliceIn.ofType("error")) >= 1 })
	announce(t, edge2)
	waitFor(t, 10*time.Second, "alice gets the announcement", func() bool { return len(aliceIn.ofType("system")) >= 1 })
	var page struct{ Messages []map[string]any }
	waitFor(t, 30*time.Second, "the room message in history", func() bool {
		return apiGet(t, hist.addr, "alice", "/v1/rooms/general/messages?limit=10", &page) == 200 && len(page.Messages) >= 1
	})
	apiGet(t, hist.addr, "alice", "/v1/search?q=hello", &page)
	// A handshake refused (bad token) and a connection closed by the edge
	// (a binary frame: 1003).
	if _, resp, err := websocket.DefaultDialer.Dial("ws://"+edge1.addr+"/ws?token=not-a-token", nil); err == nil || resp == nil || resp.StatusCode != 401 {
		t.Fatalf("bad token: %v %v, want 401", resp, err)
	}
	carol, _, err := websocket.DefaultDialer.Dial("ws://"+edge2.addr+"/ws?token="+mpToken(t, "carol"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer carol.Close()
	carol.WriteMessage(websocket.BinaryMessage, []byte{1})
	carol.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		if _, _, err := carol.ReadMessage(); err != nil {
			if !websocket.IsCloseError(err, websocket.CloseUnsupportedData) {
				t.Fatalf("carol's binary frame: %v, want close 1003", err)
			}
			break
		}
	}

	// A histogram's series appear with their first observation, so a rate
	// over them needs traffic after Prometheus first scraped them: once it
	// has, a second round.
	// The series the second round feeds are named by instance: any edge's
	// series would not do (edge2's announcement can be scraped before
	// edge1's first append, and a series first scraped with both rounds in
	// it has no rate).
	waitFor(t, 60*time.Second, "Prometheus scraping the first round's histograms", func() bool {
		for _, q := range []string{
			`chat_edge_append_duration_seconds_count{instance="` + edge1.addr + `"}`,
			`chat_edge_delivery_latency_seconds_count{instance="` + edge2.addr + `"}`,
			`chat_history_http_request_duration_seconds_count{instance="` + hist.addr + `"}`,
		} {
			if res, err := prom.query(q); err != nil || len(res) == 0 {
				return false
			}
		}
		return true
	})
	alice.WriteJSON(map[string]string{"type": "chat", "room": "general", "content": "hello again", "client_id": "r2"})
	waitFor(t, 10*time.Second, "bob gets the second room message", func() bool { return len(bobIn.ofType("chat")) >= 2 })
	alice.WriteJSON(map[string]string{"type": "private", "target": "bob", "content": "psst again", "client_id": "d2"})
	waitFor(t, 10*time.Second, "bob gets the second DM", func() bool { return len(bobIn.ofType("private")) == 2 })
	apiGet(t, hist.addr, "alice", "/v1/rooms/general/messages?limit=10", &page)
	apiGet(t, hist.addr, "alice", "/v1/search?q=hello", &page)

	// Every dashboard expression returns a series with a number once the
	// traffic has been scraped (two scrapes for a rate): NaN, a quantile
	// or ratio over nothing, would mean the panel shows no data.
	deadline := time.Now().Add(60 * time.Second)
	hasNumber := func(res []promSample) bool {
		for _, r := range res {
			if v, ok := r.Value[1].(string); ok && v != "NaN" {
				return true
			}
		}
		return false
	}
	for _, e := range exprs {
		var res []promSample
		var err error
		for {
			res, err = prom.query(e.expr)
			if (err == nil && hasNumber(res)) || time.Now().After(deadline) {
				break
			}
			time.Sleep(250 * time.Millisecond)
		}
		switch {
		case err != nil:
			t.Errorf("%s / %q: %s: %v", e.file, e.panel, e.expr, err)
		case len(res) == 0:
			t.Errorf("%s / %q: %s returns no series", e.file, e.panel, e.expr)
		case !hasNumber(res):
			t.Errorf("%s / %q: %s returns only NaN (no data in its window)", e.file, e.panel, e.expr)
		default:
			t.Logf("%s: %d series, e.g. %v = %v", e.expr, len(res), res[0].Metric, res[0].Value[1])
		}
	}

	// kafka-go's statistics of every reader and writer the services make
	// (the edge's appends and tails use their own requests: not here).
	for _, c := range []struct {
		expr, label string
		want        []string
	}{
		{"chat_kafka_reader_fetches_total", "reader", []string{"history", "history-acl", "router-direct", "router-presence", "router-acl", "edge-acl"}},
		{"chat_kafka_writer_writes_total", "writer", []string{"edge-presence", "history-chat.rooms", "history-chat.direct", "history-chat.acl", "router-chat.deliveries", "router-chat.rooms"}},
	} {
		missing := c.want
		for end := time.Now().Add(30 * time.Second); len(missing) > 0 && time.Now().Before(end); time.Sleep(250 * time.Millisecond) {
			res, err := prom.query(c.expr)
			if err != nil {
				continue
			}
			have := map[string]bool{}
			for _, r := range res {
				have[r.Metric[c.label]] = true
			}
			missing = slices.DeleteFunc(slices.Clone(c.want), func(w string) bool { return have[w] })
		}
		if len(missing) > 0 {
			t.Errorf("%s: no series with %s=%q", c.expr, c.label, missing)
		}
	}

	// The alerting rules loaded, and nothing fires on a healthy system
	// (the rules on kube_* series have nothing to match here).
	var rules struct {
		Data struct {
			Groups []struct {
				Rules []struct {
					Name   string `json:"name"`
					State  string `json:"state"`
					Health string `json:"health"`
				} `json:"rules"`
			} `json:"groups"`
		} `json:"data"`
	}
	if err := prom.get("/api/v1/rules", nil, &rules); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, g := range rules.Data.Groups {
		for _, r := range g.Rules {
			n++
			if r.Health == "err" || r.State == "firing" {
				t.Errorf("rule %s: health %s, state %s", r.Name, r.Health, r.State)
			}
		}
	}
	if n == 0 {
		t.Error("Prometheus loaded no alerting rules from deploy/prometheus/alerts.yaml")
	}
}

type dashboardExpr struct{ file, panel, expr string }

// dashboardExprs returns every Prometheus expression of every dashboard.
func dashboardExprs(t *testing.T) []dashboardExpr {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join("..", "..", "deploy", "compose", "grafana", "dashboards", "*.json"))
	if len(files) == 0 {
		t.Fatal("no dashboards under deploy/compose/grafana/dashboards")
	}
	var out []dashboardExpr
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d struct {
			Panels []struct {
				Title      string
				Datasource struct{ Type string }
				Targets    []struct {
					Expr string `json:"expr"`
				}
			}
		}
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, p := range d.Panels {
			for _, tg := range p.Targets {
				if tg.Expr != "" {
					out = append(out, dashboardExpr{filepath.Base(f), p.Title, tg.Expr})
				}
			}
		}
	}
	if len(out) == 0 {
		t.Fatal("the dashboards have no PromQL expressions")
	}
	return out
}

func announce(t *testing.T, edge *proc) {
	t.Helper()
	tok, err := auth.NewHS256Minter(mpSecret, "").Mint("root", true, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	announceAs(t, edge.addr, tok, "", "maintenance at noon")
}

type promServer struct{ addr string }

type promSample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

// startPrometheus runs prometheus with a scrape job per entry of jobs
// (every second) and the repository's alerting rules, and waits until it
// is ready.
func startPrometheus(t *testing.T, bin string, jobs map[string][]string) *promServer {
	t.Helper()
	dir := t.TempDir()
	rules, err := filepath.Abs(filepath.Join("..", "..", "deploy", "prometheus", "alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - %q\nscrape_configs:\n", rules)
	names := make([]string, 0, len(jobs))
	for j := range jobs {
		names = append(names, j)
	}
	slices.Sort(names)
	for _, j := range names {
		targets, _ := json.Marshal(jobs[j])
		fmt.Fprintf(&cfg, "  - job_name: %s\n    scrape_timeout: 1s\n    static_configs:\n      - targets: %s\n", j, targets)
	}
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	cmd := exec.Command(bin, "--config.file="+cfgPath, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--log.level=warn")
	cmd.Env = processEnv()
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	logDone := make(chan struct{})
	go func() {
		defer close(logDone)
		s := bufio.NewScanner(stderr)
		for s.Scan() {
			logs.WriteString(s.Text() + "\n")
		}
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		<-logDone
		if t.Failed() {
			t.Logf("prometheus:\n%s", logs.String())
		}
	})
	p := &promServer{addr: addr}
	waitFor(t, 30*time.Second, "prometheus ready", func() bool {
		resp, err := http.Get("http://" + addr + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return p
}

func (p *promServer) get(path string, q url.Values, out any) error {
	resp, err := http.Get("http://" + p.addr + path + "?" + q.Encode())
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		var e struct{ Error string }
		json.NewDecoder(resp.Body).Decode(&e)
		return fmt.Errorf("%s: %s", resp.Status, e.Error)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// query evaluates expr now and returns its instant vector (a scalar or
// string result is an error: dashboards plot series).
func (p *promServer) query(expr string) ([]promSample, error) {
	var r struct {
		Status string
		Data   struct {
			ResultType string          `json:"resultType"`
			Result     json.RawMessage `json:"result"`
		}
	}
	if err := p.get("/api/v1/query", url.Values{"query": {expr}}, &r); err != nil {
		return nil, err
	}
	if r.Data.ResultType != "vector" {
		return nil, fmt.Errorf("result type %s, want vector", r.Data.ResultType)
	}
	var res []promSample
	err := json.Unmarshal(r.Data.Result, &res)
	return res, err
}
