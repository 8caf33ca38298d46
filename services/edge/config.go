package edge

import (
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/chatsys/chat/pkg/auth"
	"github.com/chatsys/chat/pkg/chatevent"
	"github.com/chatsys/chat/pkg/kafkaio"
)

// Config configures an edge. RegisterFlags registers the edge.* flags; the
// shared Kafka and JWT settings are registered once per process by the
// command and copied in.
type Config struct {
	Kafka kafkaio.Config
	Auth  auth.Config

	// ID names this edge in logs and, later, in presence and deliveries
	// (default: hostname).
	ID string
	// AllowedOrigins lists the browser origins (scheme://host:port) allowed
	// to open a WebSocket. Empty allows only same-host pages; "*" allows any.
	// Requests without an Origin header (non-browser clients) are allowed.
	AllowedOrigins []string
	// ReadLimit is the largest frame accepted, in bytes (default 64 KiB);
	// a larger one closes the connection with 1009.
	ReadLimit int64
	// MaxContentChars bounds message content in characters (default 4000).
	MaxContentChars int
	// RatePerSecond and RateBurst form the per-user token bucket for chat
	// and private messages (default 10/s, burst 20).
	RatePerSecond float64
	RateBurst     int
	// SendQueueMessages and SendQueueBytes bound each connection's outgoing
	// queue (default 256 messages, 1 MiB). A client that overflows it is
	// closed with CloseSlowClient.
	SendQueueMessages int
	SendQueueBytes    int
	// PingInterval is how often the edge pings (default 25s); PongTimeout is
	// how long past a ping it waits for any frame before closing (default 20s).
	PingInterval time.Duration
	PongTimeout  time.Duration
	// WriteTimeout bounds how long a client may accept nothing we write
	// (default 10s): a stuck connection is closed after between half of it
	// and all of it (the socket deadline is moved only when less than half
	// remains).
	WriteTimeout time.Duration
	// DrainDuration is the window over which connections get close 1001 on
	// shutdown (default 10s).
	DrainDuration time.Duration
	// MaxRooms bounds the rooms one connection may join (default 100).
	MaxRooms int
	// PresenceGrace is how long after a user's last connection closes the
	// edge waits before reporting them offline (default 5s): a quick
	// reconnect never shows as offline.
	PresenceGrace time.Duration
	// Heartbeat is the interval of the edge's presence heartbeat (default 2s).
	Heartbeat time.Duration
	// MaxReplay bounds how many log records a join with since may scan
	// (default 100000); beyond it the join answers recovered:false.
	MaxReplay int64
	// MaxReplays bounds the resumes (join with since) reading the log at
	// once (default 32); the others wait their turn.
	MaxReplays int
	// DedupeWindow is how long a send's client_id is remembered: a resend
	// within it is answered with the first send's ack (default 10m).
	DedupeWindow time.Duration
	// MaxConnsPerUser bounds one user's open connections on this edge
	// (default 50); beyond it the handshake answers HTTP 429.
	MaxConnsPerUser int
	// MaxConnsPerIP bounds the open connections from one client address
	// (0, the default, means no limit: behind a load balancer every client
	// may share one address).
	MaxConnsPerIP int
	// TrustedProxies lists the proxies (CIDRs) whose X-Forwarded-For names
	// the client address for MaxConnsPerIP. Empty: the TCP peer address.
	TrustedProxies []netip.Prefix
	// HistoryURL is the base URL of the history service (its HTTP API),
	// which serves the edit and delete frames: the edge relays them with
	// the user's token. Empty: those frames answer unavailable. The
	// single-machine mode sets it to its own listener.
	HistoryURL string
	// HistoryHandler, when set, serves those requests in the process
	// instead (single-machine mode: history's handlers are on the same mux).
	// Without it, the edge also forwards the page's history API requests
	// (every /v1/ path it does not serve itself) to HistoryURL.
	HistoryHandler http.Handler
	// RouterURL is the base URL of the router's HTTP API: the edge forwards
	// the page's presence and room member requests to it. Empty: not
	// forwarded (single-machine mode serves them on the same listener).
	RouterURL string
}

// RegisterFlags registers the edge.* flags with their defaults.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	host, _ := os.Hostname()
	fs.StringVar(&c.ID, "edge.id", host, "edge id, unique per edge process (bin/chat without -edge.id or CHAT_EDGE_ID: the hostname, a dash and the port of -http.addr)")
	fs.Func("edge.allowed-origins", "comma-separated browser origins allowed to connect; empty = same host only, * = any", func(s string) error {
		c.AllowedOrigins = nil
		for _, o := range strings.Split(s, ",") {
			if o = strings.TrimSpace(o); o != "" {
				c.AllowedOrigins = append(c.AllowedOrigins, o)
			}
		}
		return nil
	})
	fs.Int64Var(&c.ReadLimit, "edge.read-limit", 64<<10, "largest accepted frame in bytes; larger closes with 1009")
	fs.IntVar(&c.MaxContentChars, "edge.max-content", chatevent.MaxContentChars, "longest message content in characters")
	fs.Float64Var(&c.RatePerSecond, "edge.rate", 10, "messages per second per user (token bucket rate)")
	fs.IntVar(&c.RateBurst, "edge.rate-burst", 20, "token bucket burst per user")
	fs.IntVar(&c.SendQueueMessages, "edge.send-queue", 256, "outgoing queue per connection in messages")
	fs.IntVar(&c.SendQueueBytes, "edge.send-queue-bytes", 1<<20, "outgoing queue per connection in bytes")
	fs.DurationVar(&c.PingInterval, "edge.ping-interval", 25*time.Second, "interval between pings to each client")
	fs.DurationVar(&c.PongTimeout, "edge.pong-timeout", 20*time.Second, "close a client silent this long after a ping")
	fs.DurationVar(&c.WriteTimeout, "edge.write-timeout", 10*time.Second, "deadline for writing one batch of queued frames to a client")
	fs.DurationVar(&c.DrainDuration, "edge.drain-duration", 10*time.Second, "window over which clients are told to reconnect on shutdown")
	fs.IntVar(&c.MaxRooms, "edge.max-rooms", 100, "rooms one connection may join")
	fs.DurationVar(&c.PresenceGrace, "edge.presence-grace", 5*time.Second, "delay before a user whose last connection closed is reported offline")
	fs.DurationVar(&c.Heartbeat, "edge.heartbeat", 2*time.Second, "interval of the edge's presence heartbeat")
	fs.Int64Var(&c.MaxReplay, "edge.max-replay", 100000, "log records a resuming join may scan")
	fs.IntVar(&c.MaxReplays, "edge.max-replays", 32, "resumes (join with since) reading the log at once; more wait their turn")
	fs.DurationVar(&c.DedupeWindow, "edge.dedupe-window", 10*time.Minute, "how long a send's client_id is remembered: a resend within it gets the first send's ack")
	fs.IntVar(&c.MaxConnsPerUser, "edge.max-conns-per-user", 50, "open connections per user on this edge; more are refused with HTTP 429")
	fs.IntVar(&c.MaxConnsPerIP, "edge.max-conns-per-ip", 0, "open connections per client address on this edge (0: no limit); see -edge.trusted-proxies")
	fs.StringVar(&c.HistoryURL, "edge.history-url", "", "base URL of the history service's HTTP API, for edit and delete frames and for the page's /v1/ requests an edge running alone forwards (single-machine mode: its own listener)")
	fs.StringVar(&c.RouterURL, "edge.router-url", "", "base URL of the router's HTTP API: an edge running alone forwards the page's /v1/presence and /v1/rooms/{room}/members requests to it")
	fs.Func("edge.trusted-proxies", "comma-separated CIDRs of proxies whose X-Forwarded-For names the client address for -edge.max-conns-per-ip", func(s string) error {
		c.TrustedProxies = nil
		for _, p := range strings.Split(s, ",") {
			if p = strings.TrimSpace(p); p == "" {
				continue
			}
			pfx, err := netip.ParsePrefix(p)
			if err != nil {
				return err
			}
			c.TrustedProxies = append(c.TrustedProxies, pfx)
		}
		return nil
	})
}

// Defaults returns a Config with every default of RegisterFlags, for tests
// and embedding.
func Defaults() Config {
	var c Config
	fs := flag.NewFlagSet("edge", flag.ContinueOnError)
	c.RegisterFlags(fs)
	var k kafkaio.Config
	k.RegisterFlags(fs)
	c.Kafka = k
	return c
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	var errs []error
	if c.ID == "" {
		errs = append(errs, errors.New("edge.id must not be empty"))
	}
	if c.ReadLimit < 1024 {
		errs = append(errs, errors.New("edge.read-limit must be at least 1024 bytes"))
	}
	if c.MaxContentChars < 1 {
		errs = append(errs, errors.New("edge.max-content must be positive"))
	}
	if c.RatePerSecond <= 0 || c.RateBurst < 1 {
		errs = append(errs, errors.New("edge.rate and edge.rate-burst must be positive"))
	}
	if c.SendQueueMessages < 1 || c.SendQueueBytes < int(c.ReadLimit) {
		errs = append(errs, fmt.Errorf("edge.send-queue must be positive and edge.send-queue-bytes at least edge.read-limit"))
	}
	if c.PingInterval <= 0 || c.PongTimeout <= 0 || c.WriteTimeout <= 0 {
		errs = append(errs, errors.New("edge ping, pong and write timeouts must be positive"))
	}
	if c.PresenceGrace < 0 || c.Heartbeat <= 0 {
		errs = append(errs, errors.New("edge.presence-grace must not be negative and edge.heartbeat must be positive"))
	}
	if c.MaxReplays < 1 {
		errs = append(errs, errors.New("edge.max-replays must be positive"))
	}
	if c.DedupeWindow <= 0 {
		errs = append(errs, errors.New("edge.dedupe-window must be positive"))
	}
	if _, err := serviceURL("edge.history-url", c.HistoryURL); err != nil {
		errs = append(errs, err)
	}
	if _, err := serviceURL("edge.router-url", c.RouterURL); err != nil {
		errs = append(errs, err)
	}
	if c.MaxConnsPerUser < 1 || c.MaxConnsPerIP < 0 {
		errs = append(errs, errors.New("edge.max-conns-per-user must be positive and edge.max-conns-per-ip not negative"))
	}
	if c.MaxRooms < 1 {
		errs = append(errs, errors.New("edge.max-rooms must be positive"))
	}
	if err := c.Kafka.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
