// Package rpc is the gRPC face of a Kurier node: it takes the caller's
// identity from its verified TLS certificate, turns protobuf requests into
// calls on broker/node and the node's errors into gRPC status codes. It
// holds no business logic.
package rpc

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"slices"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/stats"

	"kurier.dev/kurier/broker/node"
	"kurier.dev/kurier/pki"
	kurierv1 "kurier.dev/kurier/proto/kurier/v1"
)

// ChunkSize is the size of payload chunks the node sends, and MaxChunkSize
// the largest it accepts: 256 KiB chunks were fastest over loopback mTLS.
const (
	ChunkSize    = 256 << 10
	MaxChunkSize = 1 << 20
)

// Options tune the gRPC server.
type Options struct {
	// Trust checks every call's certificate chain against the current CRL.
	Trust  *pki.TrustStore
	Logger *slog.Logger
	// MaxConcurrentStreams bounds the calls under way on one connection;
	// default 256.
	MaxConcurrentStreams uint32
	// UploadIdle is how long an upload (Submit, Relay) may wait between
	// payload chunks before the node gives it up and frees its slot;
	// default 30 seconds.
	UploadIdle time.Duration
	// StreamCheck is how often a stream that sends and receives nothing
	// (an idle Subscribe) checks its caller's certificate against the CRL
	// again; every message a stream carries is checked anyway. Default a
	// minute.
	StreamCheck time.Duration
	// UploadTimeout bounds a whole upload (Submit, Relay) from its first
	// frame, however steadily its chunks come; default 30 minutes
	// (256 MiB at 150 kB/s).
	UploadTimeout time.Duration
	// HandshakeTimeout bounds a new connection's TLS and HTTP/2
	// handshakes; a connection that has not finished by then is closed,
	// so that connections that never finish the handshake cannot hold
	// the node's file descriptors. Default 10 seconds.
	HandshakeTimeout time.Duration
	// Keepalive tunes how the server treats idle connections and pings;
	// zero fields take the defaults named there.
	Keepalive Keepalive
	// StopIdle is how long, once Shutdown has begun, an upload may wait
	// for each next payload chunk before the node gives it up with
	// Unavailable: a stopping node waits for uploads that go on, not for
	// stalled ones. Default DefaultStopIdle.
	StopIdle time.Duration
	// Unary and Stream run around every call, outermost first, before
	// the caller is authenticated, so that they see refusals too: the
	// node's audit log and metrics. A panic in a call reaches them as
	// Internal; one in them is recovered too.
	Unary  []grpc.UnaryServerInterceptor
	Stream []grpc.StreamServerInterceptor
	// StatsHandlers see every call and connection: the node's tracing.
	StatsHandlers []stats.Handler
	// HandshakeFailed, if set, is told of every connection whose TLS
	// handshake failed, with the peer's address and why: refusals no call
	// interceptor sees (the node's audit log). It must not block.
	HandshakeFailed func(remote net.Addr, err error)
}

// Keepalive is the server's keepalive policy.
type Keepalive struct {
	// MinPingInterval is how often a client may ping; one that pings
	// more often is disconnected. Default 20 seconds.
	MinPingInterval time.Duration
	// RefusePingsWithoutStream disconnects clients that ping while they
	// have no call under way; by default such pings are allowed.
	RefusePingsWithoutStream bool
	// MaxIdle closes a connection that has had no call for this long,
	// so that idle clients give back their descriptors; default 5
	// minutes. A client reconnects on its next call.
	MaxIdle time.Duration
	// Time is how long a connection may be silent before the server
	// pings it, and Timeout how long it then waits for the answer before
	// it closes the connection; defaults 2 minutes and 20 seconds.
	Time, Timeout time.Duration
}

// Defaults of Options.
const (
	DefaultUploadIdle           = 30 * time.Second
	DefaultUploadTimeout        = 30 * time.Minute
	DefaultHandshakeTimeout     = 10 * time.Second
	DefaultMaxConcurrentStreams = 256
	DefaultMinPingInterval      = 20 * time.Second
	DefaultMaxIdle              = 5 * time.Minute
	DefaultKeepaliveTime        = 2 * time.Minute
	DefaultKeepaliveTimeout     = 20 * time.Second
	DefaultStopIdle             = time.Second
)

// withDefaults returns o with every zero duration and count set to its
// default.
func (o Options) withDefaults() Options {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.MaxConcurrentStreams == 0 {
		o.MaxConcurrentStreams = DefaultMaxConcurrentStreams
	}
	for _, d := range []struct {
		v   *time.Duration
		def time.Duration
	}{
		{&o.UploadIdle, DefaultUploadIdle}, {&o.StreamCheck, time.Minute},
		{&o.UploadTimeout, DefaultUploadTimeout}, {&o.HandshakeTimeout, DefaultHandshakeTimeout},
		{&o.Keepalive.MinPingInterval, DefaultMinPingInterval}, {&o.Keepalive.MaxIdle, DefaultMaxIdle},
		{&o.Keepalive.Time, DefaultKeepaliveTime}, {&o.Keepalive.Timeout, DefaultKeepaliveTimeout},
		{&o.StopIdle, DefaultStopIdle},
	} {
		if *d.v <= 0 {
			*d.v = d.def
		}
	}
	return o
}

// NewServer returns a gRPC server for n that serves the mailbox, directory,
// log and relay services, gRPC health checking and server reflection, over
// the mutual-TLS configuration tlsConfig (see pki.ServerTLS). A panic in a
// call is answered with Internal and logged with its stack (recovered);
// the server serves on.
func NewServer(n *node.Node, tlsConfig *tls.Config, opts Options) (*Server, error) {
	if opts.Trust == nil {
		return nil, errors.New("new server: no trust store to check revocation with")
	}
	opts = opts.withDefaults()
	ka := opts.Keepalive
	stopping := make(chan struct{})
	svc := &service{
		node: n, trust: opts.Trust, log: opts.Logger, streamCheck: opts.StreamCheck, stopping: stopping,
		upload: uploadBounds{idle: opts.UploadIdle, total: opts.UploadTimeout, stopping: stopping, stopIdle: opts.StopIdle},
	}
	onPanic := recovery.WithRecoveryHandlerContext(svc.recovered)
	creds := credentials.NewTLS(tlsConfig)
	if opts.HandshakeFailed != nil {
		creds = watchedCreds{TransportCredentials: creds, failed: opts.HandshakeFailed}
	}
	var extra []grpc.ServerOption
	for _, h := range opts.StatsHandlers {
		extra = append(extra, grpc.StatsHandler(h))
	}
	s := grpc.NewServer(append(extra,
		// Recovery comes before the identity checks, so that it covers
		// them as well as the handlers and the interceptors of opts see a
		// panic as Internal; and once more outermost, for a panic in those.
		grpc.ChainUnaryInterceptor(slices.Concat(
			[]grpc.UnaryServerInterceptor{recovery.UnaryServerInterceptor(onPanic)}, opts.Unary,
			[]grpc.UnaryServerInterceptor{recovery.UnaryServerInterceptor(onPanic), svc.unaryIdentity})...),
		grpc.ChainStreamInterceptor(slices.Concat(
			[]grpc.StreamServerInterceptor{recovery.StreamServerInterceptor(onPanic)}, opts.Stream,
			[]grpc.StreamServerInterceptor{recovery.StreamServerInterceptor(onPanic), svc.streamIdentity})...),
		grpc.Creds(creds),
		grpc.ForceServerCodecV2(newCodec()),
		// Stop, like GracefulStop, returns only once every handler has:
		// the store the handlers use is closed after it.
		grpc.WaitForHandlers(true),
		// Calls run on long-lived goroutines whose stacks have grown to
		// what signing and verifying need, instead of a new goroutine per
		// call that grows its stack again each time.
		grpc.NumStreamWorkers(streamWorkers),
		grpc.MaxRecvMsgSize(MaxChunkSize+64<<10),
		grpc.MaxConcurrentStreams(opts.MaxConcurrentStreams),
		grpc.InitialWindowSize(8<<20),
		grpc.InitialConnWindowSize(16<<20),
		grpc.ConnectionTimeout(opts.HandshakeTimeout),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: ka.MinPingInterval, PermitWithoutStream: !ka.RefusePingsWithoutStream}),
		// Connections are re-established hourly so that long-lived ones
		// also pass a fresh handshake; every call checks the CRL anyway.
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionIdle: ka.MaxIdle, Time: ka.Time, Timeout: ka.Timeout,
			MaxConnectionAge: time.Hour, MaxConnectionAgeGrace: 10 * time.Minute,
		}),
	)...)
	reg := strictRegistrar{s}
	kurierv1.RegisterMailboxServiceServer(reg, svc)
	kurierv1.RegisterDirectoryServiceServer(reg, svc)
	kurierv1.RegisterLogServiceServer(reg, svc)
	kurierv1.RegisterRelayServiceServer(reg, svc)
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	for _, d := range []grpc.ServiceDesc{kurierv1.MailboxService_ServiceDesc, kurierv1.DirectoryService_ServiceDesc, kurierv1.LogService_ServiceDesc, kurierv1.RelayService_ServiceDesc} {
		hs.SetServingStatus(d.ServiceName, healthpb.HealthCheckResponse_SERVING)
	}
	healthpb.RegisterHealthServer(reg, &healthService{Server: hs, stopping: stopping})
	reflection.Register(reg)
	return &Server{grpc: s, health: hs, stopping: stopping}, nil
}

// streamWorkers is how many goroutines serve calls; a call that finds all
// of them busy gets a goroutine of its own, so it bounds nothing.
const streamWorkers = 64

// service implements the generated service interfaces over a node.
type service struct {
	kurierv1.UnimplementedMailboxServiceServer
	kurierv1.UnimplementedDirectoryServiceServer
	kurierv1.UnimplementedLogServiceServer
	kurierv1.UnimplementedRelayServiceServer
	node        *node.Node
	trust       *pki.TrustStore
	log         *slog.Logger
	upload      uploadBounds
	streamCheck time.Duration
	// stopping is closed once the server stops (Server.Shutdown).
	stopping <-chan struct{}
}
