package daemon

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/broker/auditlog"
	"kurier.dev/kurier/broker/diskspace"
	"kurier.dev/kurier/broker/metrics"
	"kurier.dev/kurier/broker/node"
	"kurier.dev/kurier/broker/rpc"
	"kurier.dev/kurier/broker/tracing"
	"kurier.dev/kurier/pki"
)

// newMetrics returns the node's metrics over its store, trust store and
// certificate, or nil if cfg serves none.
func newMetrics(cfg *Config, db backend, id *pki.Identity, trust *pki.TrustStore, peerDomains []string, logger *slog.Logger) *metrics.Metrics {
	if cfg.MetricsListen == "" && cfg.MetricsListener == nil {
		return nil
	}
	var free func() (uint64, error)
	if dir := db.dir(); dir != "" {
		free = func() (uint64, error) { return diskspace.Statfs(dir) }
	}
	return metrics.New(metrics.Sources{
		Backlog: db.backlog(),
		LogSize: db.LogSize,
		Domains: peerDomains,
		CRLNextUpdate: func() time.Time {
			if crl := trust.RevocationList(); crl != nil {
				return crl.NextUpdate
			}
			return time.Time{}
		},
		CRLUsable:     func() bool { return trust.CheckRevoked(nil) == nil },
		CRLWarnBefore: cmp.Or(cfg.CRLWarnBefore, DefaultCRLWarnBefore),
		CertNotAfter:  id.Cert.NotAfter,
		FreeBytes:     free,
		MinFreeBytes:  uint64(cmp.Or(cfg.Limits.MinFreeBytes, diskspace.DefaultMin)),
		Logger:        logger,
	})
}

// metricsReadTimeout bounds how long a scrape may take to send its
// request, so that idle or slow connections do not pile up.
const metricsReadTimeout = 10 * time.Second

// serveMetrics serves met on cfg's metrics listener until ctx ends, in
// wg, with srv's series at zero and /readyz ready while srv serves and
// db's store can be reached; nothing without metrics.
func serveMetrics(ctx context.Context, wg *sync.WaitGroup, cfg *Config, met *metrics.Metrics, srv *rpc.Server, db backend, logger *slog.Logger) error {
	if met == nil {
		return nil
	}
	met.InitializeRPC(srv)
	probe := newStoreProbe(db.ping(), logger)
	h := met.Handler(func() bool { return srv.Serving() && probe.reachable() })
	lis := cfg.MetricsListener
	if lis == nil {
		var err error
		if lis, err = net.Listen("tcp", cfg.MetricsListen); err != nil {
			return fmt.Errorf("metrics_listen: %w", err)
		}
	}
	if tcp, ok := lis.Addr().(*net.TCPAddr); ok && !tcp.IP.IsLoopback() {
		logger.Warn("the metrics listener is not on loopback; it has no authentication, so let only the monitoring reach it", slog.String("addr", lis.Addr().String()))
	}
	hs := &http.Server{Handler: h, ReadHeaderTimeout: metricsReadTimeout, ReadTimeout: metricsReadTimeout, ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn)}
	wg.Go(func() {
		if err := hs.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("metrics listener", slog.Any(broker.LogErr, err))
		}
	})
	wg.Go(func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		hs.Shutdown(shutdown)
	})
	logger.Info("metrics listening", slog.String("addr", lis.Addr().String()))
	return nil
}

// instrument adds to o what watches the calls: the audit log's
// interceptors outermost, so that they see every refusal, then the
// metrics', and tracing; it returns the node's observer (nil without
// metrics).
func instrument(o rpc.Options, audit *auditlog.Log, met *metrics.Metrics, tracer *tracing.Tracer, logger *slog.Logger) (rpc.Options, node.Observer) {
	if audit != nil {
		o.Unary, o.Stream = append(o.Unary, audit.UnaryInterceptor()), append(o.Stream, audit.StreamInterceptor())
		o.HandshakeFailed = audit.HandshakeFailed
	}
	if tracer != nil {
		o.StatsHandlers = append(o.StatsHandlers, tracer.ServerHandler())
		logger.Info("tracing on: sending spans of every call over OTLP, as the OTEL_* environment says")
	}
	if met == nil {
		return o, nil
	}
	o.Unary, o.Stream = append(o.Unary, met.UnaryInterceptor()), append(o.Stream, met.StreamInterceptor())
	return o, met
}
