package router

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// lagSeries returns the exported lag per partition label.
func lagSeries(t *testing.T, g *prometheus.GaugeVec) map[string]float64 {
	t.Helper()
	ch := make(chan prometheus.Metric, 64)
	g.Collect(ch)
	close(ch)
	out := map[string]float64{}
	for m := range ch {
		var d dto.Metric
		if err := m.Write(&d); err != nil {
			t.Fatal(err)
		}
		for _, l := range d.GetLabel() {
			if l.GetName() == "partition" {
				out[l.GetValue()] = d.GetGauge().GetValue()
			}
		}
	}
	return out
}

// The router's consumer lag is the group's, read from the broker: every
// partition of chat.direct is exported (not only those this instance
// read), it is 0 once everything is routed, and it counts what waits while
// no router routes (a stalled or stopped group), where the value an
// instance last saw would stay 0.
func TestLagIsTheGroupsFromTheBroker(t *testing.T) {
	b := startBroker(t)
	k := testKafka(t, b.Addr())
	cfg := testConfig(k)
	ensureTopics(t, k)
	w := k.NewWriter(k.DirectTopic)
	defer w.Close()

	tr := startRouter(t, cfg)
	sendDM(t, w, "alice", "bob", "first")
	eventually(t, 30*time.Second, "every partition's lag exported, all 0", func() bool {
		s := lagSeries(t, tr.lag)
		if len(s) != k.DirectPartitions {
			return false
		}
		for _, v := range s {
			if v != 0 {
				return false
			}
		}
		return true
	})
	tr.stop(t)

	for i := range 5 {
		sendDM(t, w, "carol", "dave", fmt.Sprint("while stopped ", i))
	}
	// Another instance of the group that does not route: its lag loop
	// alone, reading what the group committed.
	r, err := New(cfg, testLog(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	r.directParts = k.DirectPartitions
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.lagLoop(ctx) }()
	defer func() { cancel(); <-done }()
	eventually(t, 30*time.Second, "the 5 waiting messages counted", func() bool {
		var sum float64
		for _, v := range lagSeries(t, r.lag) {
			sum += v
		}
		return sum == 5
	})
}
