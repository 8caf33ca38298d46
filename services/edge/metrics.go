package edge

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/chatsys/chat/pkg/chatevent"
)

type metrics struct {
	connections         prometheus.Gauge
	framesIn            *prometheus.CounterVec // type
	framesOut           *prometheus.CounterVec // type
	errors              *prometheus.CounterVec // code
	appendSeconds       *prometheus.HistogramVec
	deliverySecs        prometheus.Histogram
	slowDropped         prometheus.Counter
	closes              *prometheus.CounterVec // code
	badRecords          prometheus.Counter
	handshakes          *prometheus.CounterVec // result
	presenceErrs        prometheus.Counter
	presenceGone        prometheus.Gauge
	presenceQueued      prometheus.Gauge
	presenceRepublishes prometheus.Counter
	resends             prometheus.Counter
	replaysWaiting      prometheus.Gauge
	duplicates          prometheus.Counter
	typingDropped       prometheus.Counter
	tailInterrupts      *prometheus.CounterVec // topic
	tailSkipped         *prometheus.CounterVec // topic

	framesOutByType map[string]prometheus.Counter // resolved once: hot path
}

// frameOut counts one frame queued to a client.
func (m *metrics) frameOut(typ string) {
	if c, ok := m.framesOutByType[typ]; ok {
		c.Inc()
		return
	}
	m.framesOut.WithLabelValues(typ).Inc()
}

func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	var m *metrics
	defer func() {
		m.framesOutByType = map[string]prometheus.Counter{}
		for _, t := range []string{"chat", "system", "ack", "error", "joined", "left", "welcome"} {
			m.framesOutByType[t] = m.framesOut.WithLabelValues(t)
		}
		// Every known label value from the start, at 0: a dashboard or an
		// alert then reads "none yet" as 0, not as "no data" (not scraped).
		for _, c := range []string{chatevent.CodeInvalidMessage, chatevent.CodeRateLimited, chatevent.CodeForbidden,
			chatevent.CodeUnavailable, chatevent.CodeTooManyRooms, chatevent.CodeNotFound} {
			m.errors.WithLabelValues(c)
		}
		for _, c := range []chatevent.CloseCode{chatevent.CloseGoingAway, chatevent.CloseUnsupportedData, chatevent.CloseInvalidPayload,
			chatevent.CloseTokenExpired, chatevent.CloseTooLarge, chatevent.CloseInternal, chatevent.CloseSlowClient} {
			m.closes.WithLabelValues(c.Label())
		}
		for _, r := range []string{"ok", "draining", "unauthorized", "too_many_connections", "bad_handshake", "write_failed"} {
			m.handshakes.WithLabelValues(r)
		}
	}()
	lat := []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}
	m = &metrics{
		connections: f.NewGauge(prometheus.GaugeOpts{Name: "chat_edge_connections", Help: "Open WebSocket connections."}),
		framesIn:    f.NewCounterVec(prometheus.CounterOpts{Name: "chat_edge_frames_received_total", Help: "Client frames received, by frame type (\"invalid\" when undecodable)."}, []string{"type"}),
		framesOut:   f.NewCounterVec(prometheus.CounterOpts{Name: "chat_edge_frames_sent_total", Help: "Frames queued to clients, by type."}, []string{"type"}),
		errors:      f.NewCounterVec(prometheus.CounterOpts{Name: "chat_edge_errors_total", Help: "Error frames sent to clients, by code."}, []string{"code"}),
		appendSeconds: f.NewHistogramVec(prometheus.HistogramOpts{Name: "chat_edge_append_duration_seconds", Help: "Time from a frame's arrival to the broker's acknowledgement of its durable append.", Buckets: lat},
			[]string{"result"}),
		deliverySecs: f.NewHistogram(prometheus.HistogramOpts{Name: "chat_edge_delivery_latency_seconds", Help: "Time from an event's timestamp to its fan-out on this edge.", Buckets: lat}),
		slowDropped:  f.NewCounter(prometheus.CounterOpts{Name: "chat_edge_slow_clients_dropped_total", Help: "Connections closed because their send queue overflowed."}),
		closes:       f.NewCounterVec(prometheus.CounterOpts{Name: "chat_edge_closes_total", Help: "Connections closed by the edge, by close code."}, []string{"code"}),
		tailInterrupts: f.NewCounterVec(prometheus.CounterOpts{Name: "chat_edge_log_tail_interruptions_total", Help: "Fetches of the edge's log tails that failed (broker away, connection broken), each followed by a reconnect with backoff, by topic."},
			[]string{"topic"}),
		tailSkipped: f.NewCounterVec(prometheus.CounterOpts{Name: "chat_edge_log_tail_skipped_records_total", Help: "Records a log tail skipped because retention removed them before it read them (it fell that far behind), by topic."},
			[]string{"topic"}),
		badRecords:          f.NewCounter(prometheus.CounterOpts{Name: "chat_edge_bad_records_total", Help: "Log records that could not be decoded and were skipped."}),
		replaysWaiting:      f.NewGauge(prometheus.GaugeOpts{Name: "chat_edge_replays_waiting", Help: "Resumes (join with since) waiting for a turn to read the log."}),
		resends:             f.NewCounter(prometheus.CounterOpts{Name: "chat_edge_resends_total", Help: "Sends of a known client_id answered with the first send's ack instead of appended again."}),
		typingDropped:       f.NewCounter(prometheus.CounterOpts{Name: "chat_edge_typing_dropped_total", Help: "Typing notices dropped because the connection sent one for the conversation less than a second before."}),
		duplicates:          f.NewCounter(prometheus.CounterOpts{Name: "chat_edge_duplicate_records_total", Help: "Log records not delivered because an event with the same id was just delivered (a retried append)."}),
		presenceGone:        f.NewGauge(prometheus.GaugeOpts{Name: "chat_edge_presence_repairs_pending", Help: "Disconnects and leaves whose presence records failed, to repeat once the log acknowledges writes again."}),
		presenceErrs:        f.NewCounter(prometheus.CounterOpts{Name: "chat_edge_presence_write_errors_total", Help: "Presence records the log did not acknowledge or that were dropped while it was away (republished once it acknowledges writes)."}),
		presenceQueued:      f.NewGauge(prometheus.GaugeOpts{Name: "chat_edge_presence_queued", Help: "Presence records handed to the log writer and not yet acknowledged or failed (bounded: beyond 200 000 new ones are dropped and republished later)."}),
		presenceRepublishes: f.NewCounter(prometheus.CounterOpts{Name: "chat_edge_presence_republishes_total", Help: "Times the edge republished all its connections and memberships after presence writes failed (once per recovery)."}),
		handshakes:          f.NewCounterVec(prometheus.CounterOpts{Name: "chat_edge_handshakes_total", Help: "WebSocket handshakes, by result."}, []string{"result"}),
	}
	return m
}
