package router

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/chatsys/chat/pkg/chatevent"
)

// TestBrokerOutageDoesNotExpireLiveEdges stops the broker for several edge
// timeouts: no edge can append a heartbeat and the router reads nothing.
// Edge e1 stays up and beats again once the broker is back; edge e2 died
// during the outage. The router must keep e1's users online and in their
// room throughout (no leave event for them), and still expire e2 after the
// broker returned.
func TestBrokerOutageDoesNotExpireLiveEdges(t *testing.T) {
	b := startBroker(t)
	k := testKafka(t, b.Addr())
	ensureTopics(t, k)
	cfg := testConfig(k)
	cfg.EdgeTimeout = 2 * time.Second
	const beat = 200 * time.Millisecond

	e1, e2 := newFakeEdge(t, k, "e1"), newFakeEdge(t, k, "e2")
	e1.publish(chatevent.PresenceConnect, "alice", "", 1)
	e1.publish(chatevent.PresenceJoin, "alice", "general", 0)
	e2.publish(chatevent.PresenceConnect, "bob", "", 1)
	e2.publish(chatevent.PresenceJoin, "bob", "general", 0)
	e1.beat(beat)
	e2.beat(beat)

	r := startRouter(t, cfg)
	r.waitCaughtUp(t, 30*time.Second)
	online := func(user string) bool {
		var res struct{ Users []UserPresence }
		if st := getJSON(t, r.URL+"/v1/presence?user="+user, "carol", &res); st != 200 || len(res.Users) != 1 {
			t.Fatalf("presence of %s: status %d, %+v", user, st, res)
		}
		return res.Users[0].Online
	}
	members := func() []string {
		var res struct{ Members []string }
		if st := getJSON(t, r.URL+"/v1/rooms/general/members", "carol", &res); st != 200 {
			t.Fatalf("members: status %d", st)
		}
		return res.Members
	}
	eventually(t, 10*time.Second, "alice and bob online in general", func() bool {
		return online("alice") && online("bob") && slices.Equal(members(), []string{"alice", "bob"})
	})
	eventually(t, 10*time.Second, "presence health", func() bool { return !r.health.healthySince(time.Now()).IsZero() })

	// The outage: both edges fall silent (they could not append anyway).
	e1.pause(true)
	e2.stopBeating()
	if err := b.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	outage := 3 * cfg.EdgeTimeout
	for end := time.Now().Add(outage); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if !online("alice") || !online("bob") {
			t.Fatalf("during the broker outage: alice online %v, bob online %v; want both online (the router could not hear anyone)", online("alice"), online("bob"))
		}
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	e1.pause(false)

	// e2 is really gone: expired a full edge timeout after the broker is
	// back, with a leave event for bob.
	eventually(t, 30*time.Second, "bob (on the dead edge) to go offline after the broker returned", func() bool { return !online("bob") })
	t.Logf("dead edge expired %v after the broker returned (edge timeout %v)", time.Since(back).Round(10*time.Millisecond), cfg.EdgeTimeout)
	if d := time.Since(back); d < cfg.EdgeTimeout {
		t.Errorf("dead edge expired %v after the broker returned, want at least the edge timeout %v", d, cfg.EdgeTimeout)
	}
	eventually(t, 20*time.Second, "a leave event for bob", func() bool { return slices.Contains(leaves(t, k), "bob@general") })

	// alice never left: still online and a member, two more edge timeouts
	// after the broker returned, and no leave event names her.
	for end := time.Now().Add(2 * cfg.EdgeTimeout); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if !online("alice") {
			t.Fatal("alice (on the live edge) went offline after the broker returned")
		}
	}
	if m := members(); !slices.Equal(m, []string{"alice"}) {
		t.Errorf("members of general = %v, want [alice]", m)
	}
	if l := leaves(t, k); slices.Contains(l, "alice@general") {
		t.Errorf("leave events %v include alice, who never left", l)
	}
	if n := counterValue(r.expired); n != 1 {
		t.Errorf("edges expired = %v, want 1 (e2)", n)
	}
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return -1
	}
	return m.GetCounter().GetValue()
}
