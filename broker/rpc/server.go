// Package rpc is the gRPC face of a Kurier node: it takes the caller's
// identity from its verified TLS certificate, turns protobuf requests into
// calls on broker/node and the node's errors into gRPC status codes. It
// holds no business logic.
package rpc

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"

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
	// MaxConcurrentStreams per connection; default 256.
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
}

// DefaultUploadIdle is the default of Options.UploadIdle.
const DefaultUploadIdle = 30 * time.Second

// NewServer returns a gRPC server for n that serves the mailbox, directory,
// log and relay services, gRPC health checking and server reflection, over
// the mutual-TLS configuration tlsConfig (see pki.ServerTLS).
func NewServer(n *node.Node, tlsConfig *tls.Config, opts Options) (*grpc.Server, error) {
	if opts.Trust == nil {
		return nil, errors.New("new server: no trust store to check revocation with")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.MaxConcurrentStreams == 0 {
		opts.MaxConcurrentStreams = 256
	}
	if opts.UploadIdle <= 0 {
		opts.UploadIdle = DefaultUploadIdle
	}
	if opts.StreamCheck <= 0 {
		opts.StreamCheck = time.Minute
	}
	svc := &service{node: n, trust: opts.Trust, log: opts.Logger, uploadIdle: opts.UploadIdle, streamCheck: opts.StreamCheck}
	s := grpc.NewServer(
		grpc.ChainUnaryInterceptor(svc.unaryIdentity),
		grpc.ChainStreamInterceptor(svc.streamIdentity),
		grpc.Creds(credentials.NewTLS(tlsConfig)),
		grpc.ForceServerCodecV2(newCodec()),
		grpc.MaxRecvMsgSize(MaxChunkSize+64<<10),
		grpc.MaxConcurrentStreams(opts.MaxConcurrentStreams),
		grpc.InitialWindowSize(8<<20),
		grpc.InitialConnWindowSize(16<<20),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 20 * time.Second, PermitWithoutStream: true}),
		// Connections are re-established hourly so that long-lived ones
		// also pass a fresh handshake; every call checks the CRL anyway.
		grpc.KeepaliveParams(keepalive.ServerParameters{
			Time: 2 * time.Minute, Timeout: 20 * time.Second,
			MaxConnectionAge: time.Hour, MaxConnectionAgeGrace: 10 * time.Minute,
		}),
	)
	reg := strictRegistrar{s}
	kurierv1.RegisterMailboxServiceServer(reg, svc)
	kurierv1.RegisterDirectoryServiceServer(reg, svc)
	kurierv1.RegisterLogServiceServer(reg, svc)
	kurierv1.RegisterRelayServiceServer(reg, svc)
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus(kurierv1.MailboxService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(reg, hs)
	reflection.Register(reg)
	return s, nil
}

// service implements the generated service interfaces over a node.
type service struct {
	kurierv1.UnimplementedMailboxServiceServer
	kurierv1.UnimplementedDirectoryServiceServer
	kurierv1.UnimplementedLogServiceServer
	kurierv1.UnimplementedRelayServiceServer
	node        *node.Node
	trust       *pki.TrustStore
	log         *slog.Logger
	uploadIdle  time.Duration
	streamCheck time.Duration
}
