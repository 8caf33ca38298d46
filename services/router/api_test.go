package router

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// Before Start (and while it rebuilds presence) the API answers 503
// unavailable, and Stop without Start is harmless.
func TestAPIBeforeStart(t *testing.T) {
	r, err := New(testConfig(testKafka(t, "127.0.0.1:1")), nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	r.Routes(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	for _, path := range []string{"/v1/presence?user=alice", "/v1/rooms/general/members"} {
		var res struct{ Error apiError }
		if st := getJSON(t, srv.URL+path, "bob", &res); st != http.StatusServiceUnavailable || res.Error.Code != "unavailable" {
			t.Errorf("GET %s before Start = %d %+v, want 503 unavailable", path, st, res.Error)
		}
	}
	if err := r.Ready(context.Background()); err == nil {
		t.Error("Ready before Start = nil, want an error")
	}
	if err := r.Stop(context.Background()); err != nil {
		t.Errorf("Stop before Start = %v, want nil", err)
	}
}
