package main

import (
	"compress/gzip"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	"google.golang.org/protobuf/proto"
)

// exportedSpan is a span as an OTLP/HTTP receiver got it.
type exportedSpan struct {
	name, service           string
	traceID, spanID, parent string
	attrs                   map[string]string
}

func (s *exportedSpan) String() string {
	return fmt.Sprintf("%s (service %s, trace %s, span %s, parent %s, %v)", s.name, s.service, s.traceID, s.spanID, s.parent, s.attrs)
}

// otlpReceiver is an OTLP/HTTP trace endpoint (protobuf, optionally
// gzipped) that keeps every span it is sent.
type otlpReceiver struct {
	mu     sync.Mutex
	spans  []*exportedSpan
	errs   []error
	notify chan struct{} // a value after each export
}

func (r *otlpReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.URL.Path != "/v1/traces" {
		w.WriteHeader(http.StatusNotFound)
		return
	}
	var body io.Reader = req.Body
	if req.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(req.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body = zr
	}
	b, err := io.ReadAll(body)
	var msg coltracepb.ExportTraceServiceRequest
	if err == nil {
		err = proto.Unmarshal(b, &msg)
	}
	if err != nil {
		r.mu.Lock()
		r.errs = append(r.errs, err)
		r.mu.Unlock()
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var got []*exportedSpan
	for _, rs := range msg.ResourceSpans {
		service := attrMap(rs.GetResource().GetAttributes())["service.name"]
		for _, ss := range rs.ScopeSpans {
			for _, sp := range ss.Spans {
				got = append(got, &exportedSpan{name: sp.Name, service: service,
					traceID: hex.EncodeToString(sp.TraceId), spanID: hex.EncodeToString(sp.SpanId),
					parent: hex.EncodeToString(sp.ParentSpanId), attrs: attrMap(sp.Attributes)})
			}
		}
	}
	r.mu.Lock()
	r.spans = append(r.spans, got...)
	r.mu.Unlock()
	select {
	case r.notify <- struct{}{}:
	default:
	}
	w.Header().Set("Content-Type", "application/x-protobuf")
	out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	w.Write(out)
}

func attrMap(kvs []*commonpb.KeyValue) map[string]string {
	m := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		switch v := kv.Value.GetValue().(type) {
		case *commonpb.AnyValue_StringValue:
			m[kv.Key] = v.StringValue
		case *commonpb.AnyValue_IntValue:
			m[kv.Key] = strconv.FormatInt(v.IntValue, 10)
		case *commonpb.AnyValue_BoolValue:
			m[kv.Key] = strconv.FormatBool(v.BoolValue)
		default:
			m[kv.Key] = kv.Value.String()
		}
	}
	return m
}

// find returns the span named name of event id, or nil.
func (r *otlpReceiver) find(name, id string) *exportedSpan {
	for _, s := range r.spans {
		if s.name == name && s.attrs["chat.event_id"] == id {
			return s
		}
	}
	return nil
}

// chain checks that the spans of event id named names exist, all in one
// trace, each a child of the one before it, and returns them.
func (r *otlpReceiver) chain(id string, names ...string) ([]*exportedSpan, error) {
	var out []*exportedSpan
	for i, name := range names {
		s := r.find(name, id)
		if s == nil {
			return nil, fmt.Errorf("no span %q of event %s", name, id)
		}
		if i > 0 {
			p := out[i-1]
			if s.traceID != p.traceID || s.parent != p.spanID {
				return nil, fmt.Errorf("span %v is not a child of %v", s, p)
			}
		}
		out = append(out, s)
	}
	return out, nil
}

// checkStore checks the history writer's span of event id: a consumer
// span of topic in the trace of the event's publish span, its child.
func (r *otlpReceiver) checkStore(id, topic string) error {
	pub, err := r.chain(id, "publish "+topic)
	if err != nil {
		return err
	}
	st, err := r.chain(id, "publish "+topic, "store "+topic)
	if err != nil {
		return fmt.Errorf("history's write is not in the message's trace: %w (publish span %v)", err, pub[0])
	}
	s := st[1]
	want := map[string]string{"messaging.system": "kafka", "messaging.destination.name": topic, "db.system": "postgresql"}
	for k, v := range want {
		if s.attrs[k] != v {
			return fmt.Errorf("span %v: %s is %q, want %q", s, k, s.attrs[k], v)
		}
	}
	for _, k := range []string{"messaging.destination.partition.id", "messaging.kafka.offset"} {
		if s.attrs[k] == "" {
			return fmt.Errorf("span %v has no %s", s, k)
		}
	}
	return nil
}

// TestTracingOneTracePerMessage points the standard OTEL_EXPORTER_OTLP_ENDPOINT
// at an OTLP/HTTP receiver and checks the span tree of a room message
// (publish → fan-out, publish → history's write) and of a private message
// (publish → route → fan-out, publish → history's write): one trace per
// message, from the edge's append down to the PostgreSQL row.
func TestTracingOneTracePerMessage(t *testing.T) {
	rcv := &otlpReceiver{notify: make(chan struct{}, 1)}
	collector := httptest.NewServer(rcv)
	defer collector.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.URL)
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
	dir := dataDir(t)
	s := startAll(t, dir)
	ws := dialWS(t, s.addr, tokenFromDataDir(t, dir, "alice"))
	ws.WriteJSON(map[string]string{"type": "join", "room": "general"})
	readType(t, ws, "joined")
	ws.WriteJSON(map[string]string{"type": "chat", "room": "general", "content": "traced", "client_id": "t1"})
	roomID, _ := readType(t, ws, "ack")["id"].(string)
	// A private message is traced through the router too.
	aliceTok := tokenFromDataDir(t, dir, "alice")
	waitFor(t, 10*time.Second, "the router to see alice online", func() bool { return routerOnline(t, s.addr, aliceTok, "alice") })
	ws.WriteJSON(map[string]string{"type": "private", "target": "alice", "content": "note to self", "client_id": "t2"})
	dmID, _ := readType(t, ws, "private")["id"].(string)
	if roomID == "" || dmID == "" {
		t.Fatalf("no event ids: ack id %q, private id %q", roomID, dmID)
	}

	check := func() error {
		rcv.mu.Lock()
		defer rcv.mu.Unlock()
		if len(rcv.errs) > 0 {
			return fmt.Errorf("undecodable OTLP export: %v", rcv.errs[0])
		}
		// The room message: the edge's append, its fan-out on the edge
		// and its row written by history.
		room, err := rcv.chain(roomID, "publish chat.rooms", "deliver chat.rooms")
		if err != nil {
			return fmt.Errorf("room message: %w", err)
		}
		if err := rcv.checkStore(roomID, "chat.rooms"); err != nil {
			return fmt.Errorf("room message: %w", err)
		}
		// The private message: append, route (the router continues the
		// trace into the delivery record), fan-out, and its row.
		dm, err := rcv.chain(dmID, "publish chat.direct", "route chat.direct", "deliver chat.deliveries")
		if err != nil {
			return fmt.Errorf("private message: %w", err)
		}
		if err := rcv.checkStore(dmID, "chat.direct"); err != nil {
			return fmt.Errorf("private message: %w", err)
		}
		if room[0].traceID == dm[0].traceID {
			return fmt.Errorf("the room message and the private message share trace %s", room[0].traceID)
		}
		for _, sp := range append(room, dm...) {
			if sp.service != "chat-all" {
				return fmt.Errorf("span %v: service.name is not chat-all", sp)
			}
		}
		return nil
	}
	deadline := time.NewTimer(30 * time.Second)
	defer deadline.Stop()
	for {
		err := check()
		if err == nil {
			return
		}
		select {
		case <-rcv.notify:
		case <-deadline.C:
			rcv.mu.Lock()
			var names []string
			for _, sp := range rcv.spans {
				names = append(names, sp.String())
			}
			rcv.mu.Unlock()
			t.Fatalf("span tree incomplete at the deadline: %v\nspans received:\n%s", err, strings.Join(names, "\n"))
		}
	}
}
