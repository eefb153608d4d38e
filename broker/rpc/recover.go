package rpc

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"runtime/debug"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/pki"
)

// recovered turns a panic in a call (a handler or an interceptor) into
// Internal. The caller learns only that it happened and the incident id
// under which the node logged the panic value and the stack, so that its
// operator can find them; the call's payload and keys are not logged.
// It runs in the recovering defer, where the stack still shows where the
// panic came from.
func (s *service) recovered(ctx context.Context, p any) error {
	incident := newIncident()
	method, _ := grpc.Method(ctx)
	s.log.ErrorContext(ctx, "call panicked; the node serves on",
		slog.String("incident", incident), slog.String("method", method), slog.String(broker.LogPeer, peerName(ctx)),
		slog.String("panic", fmt.Sprint(p)), slog.String("stack", string(debug.Stack())))
	return status.Errorf(codes.Internal, "internal error in the node; its operator's log has it as incident %s", incident)
}

// newIncident returns a random id to find one failure by in the log.
func newIncident() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// peerName names a call's caller for the log: the identity in its
// verified certificate, else its network address. The interceptor that
// recovers runs before the one that authenticates, so it reads the
// certificate itself.
func peerName(ctx context.Context) string {
	pr, ok := peer.FromContext(ctx)
	if !ok {
		return "unknown"
	}
	if info, ok := pr.AuthInfo.(credentials.TLSInfo); ok && len(info.State.VerifiedChains) > 0 && len(info.State.VerifiedChains[0]) > 0 {
		if p, err := pki.PeerOf(info.State.VerifiedChains[0][0]); err == nil {
			return p.String()
		}
	}
	return pr.Addr.String()
}
