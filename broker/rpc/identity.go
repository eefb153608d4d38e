package rpc

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"kurier.dev/kurier/pki"
)

type peerKey struct{}

// callerOf returns the authenticated caller a request was made by. The
// interceptors put it there from the verified TLS chain; no request field
// can change it.
func callerOf(ctx context.Context) (pki.Peer, error) {
	p, ok := ctx.Value(peerKey{}).(pki.Peer)
	if !ok {
		return pki.Peer{}, status.Error(codes.Unauthenticated, "no verified client certificate")
	}
	return p, nil
}

// authenticate derives the caller's identity from its verified certificate
// chain. Security: this is the only source of identity in the node.
func authenticate(ctx context.Context) (context.Context, error) {
	pr, ok := peer.FromContext(ctx)
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "no peer information")
	}
	info, ok := pr.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return nil, status.Error(codes.Unauthenticated, "connect with mutual TLS and a certificate of the federation's CA")
	}
	p, err := pki.PeerOf(info.State.VerifiedChains[0][0])
	if err != nil {
		return nil, status.Errorf(codes.PermissionDenied, "certificate not usable here: %v", err)
	}
	return context.WithValue(ctx, peerKey{}, p), nil
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

func unaryIdentity(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if publicMethods[info.FullMethod] {
		return handler(ctx, req)
	}
	ctx, err := authenticate(ctx)
	if err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

type identityStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *identityStream) Context() context.Context { return s.ctx }

func streamIdentity(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if publicMethods[info.FullMethod] {
		return handler(srv, ss)
	}
	ctx, err := authenticate(ss.Context())
	if err != nil {
		return err
	}
	return handler(srv, &identityStream{ServerStream: ss, ctx: ctx})
}
