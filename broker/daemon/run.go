package daemon

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"

	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/broker/admin"
	"kurier.dev/kurier/broker/diskspace"
	"kurier.dev/kurier/broker/netlimit"
	"kurier.dev/kurier/broker/node"
	"kurier.dev/kurier/broker/relay"
	"kurier.dev/kurier/broker/rpc"
	"kurier.dev/kurier/broker/store/postgres/pgnotify"
	"kurier.dev/kurier/broker/tracing"
	"kurier.dev/kurier/pki"
	"kurier.dev/kurier/pki/cms"
)

// shutdownGrace is how long running calls may finish after a stop signal;
// subscriptions and stalled uploads end at once (rpc.Server.Shutdown).
const shutdownGrace = 10 * time.Second

// Run starts a node as configured and serves until ctx is cancelled. Once
// it listens, it calls ready (if not nil) with the address it listens on.
//
// It is longer than a function should be, on purpose: its defers are the
// node's whole teardown, each part stopped before what it uses (calls and
// background work, then the node, the admin socket, the store, the peers,
// the audit log), and one function in one place keeps that order visible.
func Run(ctx context.Context, cfg *Config, logger *slog.Logger, ready func(addr net.Addr)) error {
	logger, f, err := prepare(cfg, logger)
	if err != nil {
		return err
	}
	id, trust := f.id, f.trust
	audit, err := openAudit(cfg, trust, logger)
	if err != nil {
		return err
	}
	defer audit.Close()
	peers, err := relay.NewPeers(id, trust, cfg.Peers)
	if err != nil {
		return err
	}
	defer peers.Close()
	conns, err := connectionLimits(cfg.Limits, logger)
	if err != nil {
		return err
	}
	db, err := openBackend(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer func() {
		// By now every call and all background work have ended (the
		// defers below run first).
		logger.Info("closing the store")
		if err := db.close(); err != nil {
			logger.Error("close store", slog.Any(broker.LogErr, err))
		}
	}()
	notices, err := openNotices(ctx, cfg, logger)
	if err != nil {
		return err
	}
	if notices != nil {
		defer notices.Close() // after the background work that listens
	}
	if b := db.backups(audit); b != nil {
		// kurierd backup while running; PostgreSQL has its own tools.
		adm, err := admin.Listen(db.dir(), b, logger)
		if err != nil {
			return err
		}
		defer adm.Close() // before the store closes: defers run last first
	}
	alarm := diskAlarm(cfg, db, logger)
	// A relay worker per peer domain, woken whenever the node queues
	// something for that domain.
	workers := map[string]*relay.Worker{}
	for _, d := range peers.Domains() {
		workers[d] = &relay.Worker{Peers: peers, Domain: d, Logger: logger}
	}
	met := newMetrics(cfg, db, id, trust, peers.Domains(), logger)
	tracer, err := tracing.FromEnv(ctx, moduleVersion())
	if err != nil {
		return err
	}
	defer shutdownTracing(tracer, logger)
	rpcOpts, observer := instrument(cfg.Limits.rpc(trust, logger), audit, met, tracer, logger)
	tcp, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	// The node's leases are named by the address bound, which tells apart
	// processes on one host that asked for port 0.
	n, err := newNode(cfg, f, db, notices, peers, workers, alarm, observer, tcp.Addr().String(), logger)
	if err != nil {
		tcp.Close()
		return err
	}
	defer n.Close() // after the server and background work, before the peers and the store
	lis := netlimit.Wrap(tcp, conns)
	srv, err := rpc.NewServer(n, pki.ServerTLS(id, trust, logger), rpcOpts)
	if err != nil {
		lis.Close()
		return err
	}
	// The background work ends before the store closes: defers run last
	// first.
	bgCtx, stopBackground := context.WithCancel(ctx)
	var background sync.WaitGroup
	defer background.Wait()
	defer stopBackground()
	startBackground(bgCtx, &background, db, n, workers, logger)
	if alarm != nil {
		background.Go(func() { every(bgCtx, diskspace.Interval, func() { alarm.Check() }) })
	}
	watchCRL(bgCtx, &background, cfg, trust, logger)
	listenNotices(bgCtx, &background, notices, n, logger)
	// The metrics outlive the drain, so that /readyz says 503 while the
	// node stops: they end when Run returns.
	metricsCtx, stopMetrics := context.WithCancel(context.WithoutCancel(ctx))
	defer stopMetrics()
	if err := serveMetrics(metricsCtx, &background, cfg, met, srv, db, logger); err != nil {
		lis.Close()
		return err
	}
	// Said once everything runs: the metrics listener too.
	logger.Info("node listening", slog.String("addr", lis.Addr().String()), slog.Any("domains", cfg.Domains), slog.String("store", storeName(cfg)))
	auditStart(audit, cfg, id, trust, lis.Addr().String())
	started := time.Now()
	if ready != nil {
		ready(lis.Addr())
	}
	err = serveWhileWriting(ctx, db, srv, lis, logger)
	auditStop(audit, started, err)
	return err
}

// diskAlarm returns the alarm over the filesystem of the store's local
// directory, checked once, or nil for a store without one (PostgreSQL
// watches its own disk).
func diskAlarm(cfg *Config, db backend, logger *slog.Logger) *diskspace.Alarm {
	if db.dir() == "" {
		return nil
	}
	alarm := &diskspace.Alarm{Dir: db.dir(), Min: uint64(cmp.Or(cfg.Limits.MinFreeBytes, diskspace.DefaultMin)), Logger: logger}
	alarm.Check()
	return alarm
}

// serveWhileWriting serves until ctx ends or the store fails: a store that
// failed to write takes no more writes (store.ErrFailed), so the node
// stops, and its supervisor restarts it on what badger made durable,
// rather than serving on.
func serveWhileWriting(ctx context.Context, db backend, srv *rpc.Server, lis net.Listener, logger *slog.Logger) error {
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		select {
		case <-db.failed():
			stop()
		case <-ctx.Done():
		}
	}()
	if err := serve(ctx, srv, lis, logger); err != nil {
		return err
	}
	if err := db.err(); err != nil {
		return fmt.Errorf("the node stopped because %w; check the disk (the log names the error), then start the node again", err)
	}
	return nil
}

// serve runs srv on lis until ctx ends, then shuts it down: calls under
// way may finish within shutdownGrace, then they are cut. It returns once
// every call's handler has returned, so that the store can close.
func serve(ctx context.Context, srv *rpc.Server, lis net.Listener, logger *slog.Logger) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	logger.Info("node stopping")
	start := time.Now()
	grace, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if err := srv.Shutdown(grace); err != nil {
		logger.Warn("calls still running after the shutdown grace were cut; their callers try again", slog.Duration("grace", shutdownGrace), slog.Any(broker.LogErr, err))
	}
	logger.Info("node stopped serving", slog.Duration("took", time.Since(start)))
	// A stop that came before Serve started makes Serve return
	// ErrServerStopped: a stop all the same.
	if err := <-errc; err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}

// node returns the limits as the node takes them.
func (l LimitsConfig) node() node.Limits {
	return node.Limits{
		MaxPayload: l.MaxPayloadBytes, MaxRecipients: l.MaxRecipients,
		DefaultExpiry: l.DefaultExpiry, MaxExpiry: l.MaxExpiry, Retention: l.Retention,
		MaxUploadsPerSender: l.MaxUploadsPerSender,
		MessagesPerSecond:   l.MessagesPerSecond, MessageBurst: l.MessageBurst, QuotaBytesPerDay: l.QuotaBytesPerDay,
		RelayMessagesPerSecond: l.RelayMessagesPerSecond, RelayMessageBurst: l.RelayMessageBurst,
		RelayQuotaBytesPerDay: l.RelayQuotaBytesPerDay,
	}
}

// rpc returns the server options the limits set.
func (l LimitsConfig) rpc(trust *pki.TrustStore, logger *slog.Logger) rpc.Options {
	return rpc.Options{
		Trust: trust, Logger: logger,
		MaxConcurrentStreams: l.MaxConcurrentStreams,
		UploadIdle:           l.UploadIdle, UploadTimeout: l.UploadTimeout, HandshakeTimeout: l.HandshakeTimeout,
		Keepalive: rpc.Keepalive{
			MinPingInterval: l.KeepaliveMinPing, RefusePingsWithoutStream: l.RefusePingsWithoutStream,
			MaxIdle: l.MaxConnectionIdle, Time: l.KeepaliveTime, Timeout: l.KeepaliveTimeout,
		},
	}
}

// connectionLimits raises the open-files limit as far as it goes, logs
// it, and returns the connection caps that fit under it.
func connectionLimits(l LimitsConfig, logger *slog.Logger) (netlimit.Options, error) {
	fds, err := netlimit.RaiseFileLimit()
	if err != nil {
		logger.Warn("cannot raise the open-files limit; the node keeps the current one", slog.Uint64("limit", fds), slog.Any(broker.LogErr, err))
	}
	o, err := l.connections(fds)
	if err != nil {
		return netlimit.Options{}, err
	}
	o.Logger = logger
	logger.Info("connection limits", slog.Uint64("open_files_limit", fds), slog.Int("max_connections", o.Max), slog.Int("max_connections_per_source", o.PerSource))
	return o, nil
}

// prepare validates cfg and reads the files it names, for Run and
// CheckStore; a nil logger is slog.Default().
func prepare(cfg *Config, logger *slog.Logger) (*slog.Logger, *files, error) {
	if logger == nil {
		logger = slog.Default()
	}
	if err := cfg.Validate(); err != nil {
		return nil, nil, fmt.Errorf("config: %w", err)
	}
	f, err := loadFiles(cfg)
	if err != nil {
		return nil, nil, err
	}
	return logger, f, nil
}

// files is what a config names on disk, read.
type files struct {
	id           *pki.Identity
	trust        *pki.TrustStore
	logKey       string
	participants []node.Participant
}

// loadFiles reads the node's identity, the trust anchors with the CRL,
// the log key and the participants' certificates.
func loadFiles(cfg *Config) (*files, error) {
	var f files
	var err error
	if f.id, err = pki.LoadIdentity(cfg.Identity); err != nil {
		return nil, fmt.Errorf("node identity: %w", err)
	}
	if f.trust, err = pki.NewTrustStore(f.id.Roots, cfg.CRL); err != nil {
		return nil, fmt.Errorf("trust store: %w", err)
	}
	if f.logKey, err = readSecret(cfg.LogKey); err != nil {
		return nil, fmt.Errorf("log key: %w", err)
	}
	if f.participants, err = loadParticipants(cfg.Participants); err != nil {
		return nil, err
	}
	return &f, nil
}

// loadParticipants reads the local mailboxes' encryption certificates.
func loadParticipants(cfgs []ParticipantConfig) ([]node.Participant, error) {
	var out []node.Participant
	for _, p := range cfgs {
		certs, err := pki.LoadCertificates(p.EncryptionCert)
		if err != nil {
			return nil, fmt.Errorf("participant %s: %w", p.Address, err)
		}
		out = append(out, node.Participant{Address: p.Address, DisplayName: p.DisplayName, Kind: p.Kind, EncryptionCert: certs[0]})
	}
	return out, nil
}

// startBackground starts what a node does on its own until ctx ends:
// sweeping unused payloads, expiring copies, and the relay workers.
func startBackground(ctx context.Context, wg *sync.WaitGroup, db backend, n *node.Node, workers map[string]*relay.Worker, logger *slog.Logger) {
	wg.Go(func() { sweepLoop(ctx, db, logger) })
	wg.Go(func() { expireLoop(ctx, n, logger) })
	for _, w := range workers {
		w.Node = n
		wg.Go(func() { w.Run(ctx) })
	}
}

// sweepInterval is how often a running node removes payloads that no
// message references (left by refused or interrupted submissions).
const sweepInterval = time.Hour

func sweepLoop(ctx context.Context, db backend, logger *slog.Logger) {
	every(ctx, sweepInterval, func() {
		n, err := db.sweep(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			logger.Warn("sweep unused payloads", slog.Any(broker.LogErr, err))
		case n > 0:
			logger.Info("swept unused payloads", slog.Int("count", n))
		}
	})
}

// expireInterval is how often the node looks for copies past their
// deadline: messages not relayed before they expired, copies not retrieved
// within the retention time.
const expireInterval = time.Second

func expireLoop(ctx context.Context, n *node.Node, logger *slog.Logger) {
	every(ctx, expireInterval, func() {
		if _, err := n.Expire(ctx); err != nil && ctx.Err() == nil {
			logger.Error("expire undelivered messages", slog.Any(broker.LogErr, err))
		}
	})
}

// every calls fn every interval until ctx ends.
func every(ctx context.Context, interval time.Duration, fn func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fn()
		}
	}
}

// readSecret reads a one-line key file, refusing one others may read.
func readSecret(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("%s is readable by others (mode %v); chmod 600 it", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// newNode makes the node over db from cfg and the files it names, waking
// the relay worker of a domain whenever something is queued for it.
func newNode(cfg *Config, f *files, db backend, notices *pgnotify.Notices, peers *relay.Peers, workers map[string]*relay.Worker, alarm *diskspace.Alarm, observer node.Observer, listening string, logger *slog.Logger) (*node.Node, error) {
	var space func(int64) (func(), error)
	if alarm != nil {
		space = alarm.Reserve
	}
	var no node.Notices
	if notices != nil {
		no = notices // not a typed nil
	}
	n, err := node.New(db, node.Config{
		Domains:      cfg.Domains,
		Signer:       cms.Signer{Cert: f.id.Cert, Key: f.id.Key, Chain: f.id.Chain},
		LogKey:       f.logKey,
		Trust:        f.trust,
		Participants: f.participants,
		Peers:        peers,
		Queued: func(d string) {
			if w := workers[d]; w != nil {
				w.Wake()
			}
		},
		Observer: observer,
		Notices:  no,
		Holder:   leaseHolder(listening),
		Limits:   cfg.Limits.node(),
		Space:    space,
		Logger:   logger,
	})
	if err != nil {
		return nil, fmt.Errorf("start node: %w", err)
	}
	return n, nil
}

// leaseHolder names the process's leases on relays (node.Config.Holder):
// its host name and the address it listens on, which stay the same when
// it restarts and differ between the processes that share a store.
func leaseHolder(listen string) string {
	host, err := os.Hostname()
	if err != nil {
		return "" // a holder of its own, new at every start
	}
	return host + " " + listen
}
