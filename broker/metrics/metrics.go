// Package metrics serves a node's Prometheus metrics, with its liveness
// and readiness, on an HTTP listener of its own: RPCs by method and code
// with their latency, submissions by outcome, evidence by type, the
// transparency log's size, what waits in the outbound queues and the
// mailboxes, how long the CRL and the node certificate have left, free
// disk space, and the Go runtime and process. It is the only package of
// the node that links the Prometheus client.
package metrics

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"

	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/broker/node"
	"kurier.dev/kurier/evidence"
)

// Sources are what the gauges are read from, at each scrape.
type Sources struct {
	// Backlog reports what waits in the store (store.DB.Backlog). It reads
	// the whole store, so it is called at most once per BacklogInterval.
	Backlog func(ctx context.Context) (broker.Backlog, error)
	// LogSize is the number of leaves in the transparency log.
	LogSize func(ctx context.Context) (uint64, error)
	// Domains are the peer domains whose queues are reported even when
	// empty, so that an alert on them has a series to watch.
	Domains []string
	// CRLNextUpdate is when the CRL the node checks against must be
	// replaced; the zero time if the node has none.
	CRLNextUpdate func() time.Time
	// CRLUsable reports whether the node can check certificates against
	// its CRL now (readable, signed by the CA, fresh): without it, the
	// node refuses every call.
	CRLUsable func() bool
	// CRLWarnBefore is how long before nextUpdate the node warns
	// (crl_warn_before), exported so that an alert can compare with it.
	CRLWarnBefore time.Duration
	// CertNotAfter is when the node certificate expires.
	CertNotAfter time.Time
	// FreeBytes is the free space of the store's filesystem, and
	// MinFreeBytes the disk alarm's bound (min_free_bytes), exported so
	// that an alert can compare with it.
	FreeBytes    func() (uint64, error)
	MinFreeBytes uint64
	// Now is the clock; default time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// BacklogInterval is the least time between two reads of the backlog:
// scrapes in between are answered from the last read.
const BacklogInterval = 10 * time.Second

// Metrics holds the node's metrics. It is the node's Observer, and gives
// the gRPC server the interceptors that measure its calls.
type Metrics struct {
	reg         *prometheus.Registry
	rpc         *grpcprom.ServerMetrics
	submissions *prometheus.CounterVec
	evidence    *prometheus.CounterVec
	log         *slog.Logger
}

// New registers the node's metrics, reading the gauges from src.
func New(src Sources) *Metrics {
	if src.Now == nil {
		src.Now = time.Now
	}
	if src.Logger == nil {
		src.Logger = slog.Default()
	}
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		rpc: grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram(
			grpcprom.WithHistogramBuckets([]float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}))),
		submissions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kurier_submissions_total",
			Help: "Submissions by outcome: accepted, repeated (the same sealed message again, answered with its first receipt), or the reason for the refusal.",
		}, []string{"outcome"}),
		evidence: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kurier_evidence_stored_total",
			Help: "Evidence made durable, the node's own and recipients' alike, by type.",
		}, []string{"type"}),
		log: src.Logger,
	}
	for _, o := range node.SubmissionOutcomes {
		m.submissions.WithLabelValues(o)
	}
	for _, t := range evidence.Types {
		m.evidence.WithLabelValues(string(t))
	}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.rpc, m.submissions, m.evidence,
		newStateCollector(src),
	)
	return m
}

// Submission counts a submission's outcome (node.Observer).
func (m *Metrics) Submission(outcome string) { m.submissions.WithLabelValues(outcome).Inc() }

// EvidenceStored counts a stored evidence (node.Observer).
func (m *Metrics) EvidenceStored(typ string) { m.evidence.WithLabelValues(typ).Inc() }

// UnaryInterceptor measures unary calls.
func (m *Metrics) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return m.rpc.UnaryServerInterceptor()
}

// StreamInterceptor measures streaming calls.
func (m *Metrics) StreamInterceptor() grpc.StreamServerInterceptor {
	return m.rpc.StreamServerInterceptor()
}

// InitializeRPC gives every method srv serves its series at zero, so that
// rates and alerts see a method before its first call.
func (m *Metrics) InitializeRPC(srv interface {
	GetServiceInfo() map[string]grpc.ServiceInfo
}) {
	m.rpc.InitializeMetrics(srv)
}

// Handler serves /metrics, /healthz (the process answers) and /readyz
// (ready reports whether the node serves: 200, or 503 while it starts or
// stops, as its gRPC health service says, or cannot reach its store).
func (m *Metrics) Handler(ready func() bool) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorLog:      slog.NewLogLogger(m.log.Handler(), slog.LevelWarn),
		ErrorHandling: promhttp.ContinueOnError,
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if ready == nil || !ready() {
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte("not serving\n"))
			return
		}
		w.Write([]byte("serving\n"))
	})
	return mux
}

// stateCollector reads the gauges of the node's state at scrape time.
type stateCollector struct {
	src Sources

	mu      sync.Mutex
	read    time.Time // when backlog was read; zero before the first read
	backlog broker.Backlog
	err     error
}

func newStateCollector(src Sources) *stateCollector { return &stateCollector{src: src} }

var (
	descLogLeaves = prometheus.NewDesc("kurier_log_leaves",
		"Leaves (evidence) in the node's transparency log.", nil, nil)
	descQueued = prometheus.NewDesc("kurier_outbound_queued_messages",
		"Messages waiting to be relayed to a domain's node.", []string{"domain"}, nil)
	descQueuedAge = prometheus.NewDesc("kurier_outbound_oldest_age_seconds",
		"How long the oldest copy waiting to be relayed to a domain's node has waited since the node received it; 0 if none waits.", []string{"domain"}, nil)
	descMailbox = prometheus.NewDesc("kurier_mailbox_waiting_messages",
		"Local copies waiting for their recipient: state unfetched (delivered, not retrieved) or unanswered (retrieved, neither acknowledged nor rejected).", []string{"state"}, nil)
	descMailboxAge = prometheus.NewDesc("kurier_mailbox_oldest_age_seconds",
		"How long the oldest local copy in a waiting state has waited since the node received it; 0 if none waits.", []string{"state"}, nil)
	descCRL = prometheus.NewDesc("kurier_crl_next_update_seconds",
		"Seconds until the nextUpdate of the CRL the node checks certificates against; negative once it has passed (the node then refuses calls). Absent without a CRL.", nil, nil)
	descCRLUsable = prometheus.NewDesc("kurier_crl_usable",
		"1 while the node can check certificates against its CRL (the file readable, signed by the CA, not past nextUpdate); 0 while it cannot, and so refuses every call.", nil, nil)
	descCRLWarn = prometheus.NewDesc("kurier_crl_warn_before_seconds",
		"How long before the CRL's nextUpdate the node warns in its log (crl_warn_before).", nil, nil)
	descCert = prometheus.NewDesc("kurier_node_certificate_expiry_seconds",
		"Seconds until the node certificate expires.", nil, nil)
	descFree = prometheus.NewDesc("kurier_disk_free_bytes",
		"Free bytes on the filesystem of the node's store, for an unprivileged writer.", nil, nil)
	descMinFree = prometheus.NewDesc("kurier_disk_min_free_bytes",
		"The disk alarm's bound (min_free_bytes): below it the node refuses new messages.", nil, nil)
)

// Describe sends the descriptors of every gauge.
func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descLogLeaves, descQueued, descQueuedAge, descMailbox, descMailboxAge, descCRL, descCRLUsable, descCRLWarn, descCert, descFree, descMinFree} {
		ch <- d
	}
}

// Collect reads the gauges. One it cannot read is reported as an error of
// the scrape, and the others are still served.
func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	now := c.src.Now()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	if c.src.LogSize != nil {
		if n, err := c.src.LogSize(ctx); err != nil {
			ch <- prometheus.NewInvalidMetric(descLogLeaves, err)
		} else {
			gauge(descLogLeaves, float64(n))
		}
	}
	if c.src.Backlog != nil {
		c.collectBacklog(ctx, ch, now)
	}
	if c.src.CRLNextUpdate != nil {
		if t := c.src.CRLNextUpdate(); !t.IsZero() {
			gauge(descCRL, t.Sub(now).Seconds())
		}
	}
	if c.src.CRLUsable != nil {
		usable := 0.0
		if c.src.CRLUsable() {
			usable = 1
		}
		gauge(descCRLUsable, usable)
	}
	if c.src.CRLWarnBefore > 0 {
		gauge(descCRLWarn, c.src.CRLWarnBefore.Seconds())
	}
	if !c.src.CertNotAfter.IsZero() {
		gauge(descCert, c.src.CertNotAfter.Sub(now).Seconds())
	}
	if c.src.FreeBytes != nil {
		if n, err := c.src.FreeBytes(); err != nil {
			ch <- prometheus.NewInvalidMetric(descFree, err)
		} else {
			gauge(descFree, float64(n))
		}
	}
	if c.src.MinFreeBytes > 0 {
		gauge(descMinFree, float64(c.src.MinFreeBytes))
	}
}

// collectBacklog reports the queues and mailboxes, read anew if the last
// read is older than BacklogInterval.
func (c *stateCollector) collectBacklog(ctx context.Context, ch chan<- prometheus.Metric, now time.Time) {
	c.mu.Lock()
	if c.read.IsZero() || now.Sub(c.read) >= BacklogInterval || now.Before(c.read) {
		c.backlog, c.err = c.src.Backlog(ctx)
		c.read = now
	}
	b, err := c.backlog, c.err
	c.mu.Unlock()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(descQueued, err)
		return
	}
	age := func(w broker.Waiting) float64 {
		if w.Count == 0 || w.Oldest.IsZero() {
			return 0
		}
		return max(now.Sub(w.Oldest).Seconds(), 0)
	}
	queued := map[string]broker.Waiting{}
	for _, d := range c.src.Domains {
		queued[d] = broker.Waiting{}
	}
	for d, w := range b.Queued {
		queued[d] = w
	}
	for d, w := range queued {
		ch <- prometheus.MustNewConstMetric(descQueued, prometheus.GaugeValue, float64(w.Count), d)
		ch <- prometheus.MustNewConstMetric(descQueuedAge, prometheus.GaugeValue, age(w), d)
	}
	for state, w := range map[string]broker.Waiting{"unfetched": b.Unfetched, "unanswered": b.Unanswered} {
		ch <- prometheus.MustNewConstMetric(descMailbox, prometheus.GaugeValue, float64(w.Count), state)
		ch <- prometheus.MustNewConstMetric(descMailboxAge, prometheus.GaugeValue, age(w), state)
	}
}
