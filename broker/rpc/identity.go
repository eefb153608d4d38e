package rpc

import (
	"context"
	"crypto/x509"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/pki"
)

type peerKey struct{}

// authenticated is who made a request, and the verified chain that says
// so.
type authenticated struct {
	peer  pki.Peer
	chain []*x509.Certificate
}

// callerOf returns the authenticated caller a request was made by. The
// interceptors put it there from the verified TLS chain; no request field
// can change it.
func callerOf(ctx context.Context) (pki.Peer, error) {
	a, ok := ctx.Value(peerKey{}).(authenticated)
	if !ok {
		return pki.Peer{}, toStatus(fmt.Errorf("%w: no verified client certificate", broker.ErrUnauthenticated))
	}
	return a.peer, nil
}

// stillValid checks the caller's chain against the current CRL again, for
// a stream that outlives the check at its start: a caller revoked meanwhile
// (or a CRL gone stale) ends it.
func (s *service) stillValid(ctx context.Context) error {
	a, ok := ctx.Value(peerKey{}).(authenticated)
	if !ok {
		return toStatus(fmt.Errorf("%w: no verified client certificate", broker.ErrUnauthenticated))
	}
	if err := s.trust.CheckRevoked(a.chain); err != nil {
		return toStatus(fmt.Errorf("%w: %v", broker.ErrUnauthenticated, err))
	}
	return nil
}

// authenticate derives the caller's identity from its verified certificate
// chain and checks that chain against the current CRL: a handshake may be
// long past when a certificate is revoked, so every call checks again.
// Security: this is the only source of identity in the node.
func (s *service) authenticate(ctx context.Context) (context.Context, error) {
	pr, ok := peer.FromContext(ctx)
	if !ok {
		return nil, fmt.Errorf("%w: no peer information", broker.ErrUnauthenticated)
	}
	info, ok := pr.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return nil, fmt.Errorf("%w: connect with mutual TLS and a certificate of the federation's CA", broker.ErrUnauthenticated)
	}
	chain := info.State.VerifiedChains[0]
	if err := s.trust.CheckRevoked(chain); err != nil {
		return nil, fmt.Errorf("%w: %v", broker.ErrUnauthenticated, err)
	}
	p, err := pki.PeerOf(chain[0])
	if err != nil {
		return nil, fmt.Errorf("%w: certificate not usable here: %v", broker.ErrForbidden, err)
	}
	return context.WithValue(ctx, peerKey{}, authenticated{peer: p, chain: chain}), nil
}

// publicMethods need no Kurier identity: health checks and reflection still
// require a verified TLS client certificate at the handshake.
var publicMethods = map[string]bool{
	"/grpc.health.v1.Health/Check":                                   true,
	"/grpc.health.v1.Health/Watch":                                   true,
	"/grpc.health.v1.Health/List":                                    true,
	"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo":      true,
	"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": true,
}

func (s *service) unaryIdentity(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if publicMethods[info.FullMethod] {
		return handler(ctx, req)
	}
	authed, err := s.authenticate(ctx)
	if err != nil {
		s.logRefusal(ctx, "call refused", err)
		return nil, toStatus(err)
	}
	return handler(authed, req)
}

type identityStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *identityStream) Context() context.Context { return s.ctx }

func (s *service) streamIdentity(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if publicMethods[info.FullMethod] {
		return handler(srv, ss)
	}
	ctx, err := s.authenticate(ss.Context())
	if err != nil {
		s.logRefusal(ss.Context(), "call refused", err)
		return toStatus(err)
	}
	return handler(srv, &identityStream{ServerStream: ss, ctx: ctx})
}
