package rpc

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"time"

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
		return toStatus(s.revocationError(ctx, err))
	}
	return nil
}

// revocationError says why a caller's chain failed the CRL check, in words
// for the caller: which of its certificates is revoked, or that the node
// cannot tell (a stale CRL is the operator's to renew, not the caller's).
// File names and the like stay in the node's log, where a failure of the
// node's own (an unreadable CRL) is logged.
func (s *service) revocationError(ctx context.Context, err error) error {
	switch {
	case errors.Is(err, pki.ErrRevoked):
		return fmt.Errorf("%w: your certificate is revoked (%w); ask the federation's CA for a new one", broker.ErrUnauthenticated, err)
	case errors.Is(err, pki.ErrCRLStale):
		return fmt.Errorf("%w: the node's certificate revocation list is out of date, so it cannot check your certificate; call again once the node's operator has published a new CRL", broker.ErrUnauthenticated)
	case errors.Is(err, pki.ErrNoCRL):
		return fmt.Errorf("%w: the revocation of your certificate cannot be checked here (%v)", broker.ErrUnauthenticated, err)
	}
	s.log.ErrorContext(ctx, "cannot check revocation", slog.Any(broker.LogErr, err))
	return fmt.Errorf("%w: the node cannot check revocation now; its operator's log has the cause", broker.ErrUnauthenticated)
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
		return nil, s.revocationError(ctx, err)
	}
	p, err := pki.PeerOf(chain[0])
	if err != nil {
		return nil, fmt.Errorf("%w: certificate not usable here: %v", broker.ErrForbidden, err)
	}
	return context.WithValue(ctx, peerKey{}, authenticated{peer: p, chain: chain}), nil
}

// unaryIdentity authenticates every call. Every method, health checking
// and reflection included, is for authenticated callers only: the
// handshake already asks for a certificate of the federation, and its
// revocation is checked again on every call.
func (s *service) unaryIdentity(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	authed, err := s.authenticate(ctx)
	if err != nil {
		s.logRefusal(ctx, "call refused", err)
		return nil, toStatus(err)
	}
	return handler(authed, req)
}

// streamIdentity authenticates a stream's caller like unaryIdentity, then
// keeps checking: before every message the node sends, after every message
// it receives, and every StreamCheck while the stream is idle. A caller
// revoked meanwhile, or a CRL gone stale, ends the stream with
// Unauthenticated, however long it was meant to last (Subscribe, a slow
// upload or download, health Watch).
// A stream of endsAtStop ends with Unavailable once the server stops.
func (s *service) streamIdentity(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx, err := s.authenticate(ss.Context())
	if err != nil {
		s.logRefusal(ss.Context(), "call refused", err)
		return toStatus(err)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	g := &guardedStream{ServerStream: ss, ctx: ctx, svc: s, end: cancel, endAtStop: endsAtStop[info.FullMethod]}
	idle := make(chan struct{})
	go g.watch(idle)
	err = handler(srv, g)
	close(idle)
	var ended *streamEnded
	if errors.As(context.Cause(ctx), &ended) {
		return ended.status
	}
	return err
}

// streamEnded is the cause a guarded stream's context is cancelled with
// when its caller no longer passes the check.
type streamEnded struct{ status error }

func (e *streamEnded) Error() string { return e.status.Error() }

// guardedStream is a stream whose caller is checked against the CRL as it
// goes on; its context carries the caller's identity.
type guardedStream struct {
	grpc.ServerStream
	ctx context.Context
	svc *service
	end context.CancelCauseFunc
	// endAtStop ends the stream with errStopping once the server stops.
	endAtStop bool
}

func (g *guardedStream) Context() context.Context { return g.ctx }

// check ends the stream if its caller no longer passes stillValid.
func (g *guardedStream) check() error {
	if err := g.svc.stillValid(g.ctx); err != nil {
		g.svc.logRefusal(g.ctx, "stream ended", err)
		g.end(&streamEnded{status: err})
		return err
	}
	return nil
}

// watch checks every StreamCheck until idle is closed or the stream ends,
// and ends the stream when the server stops if it is one to end then.
func (g *guardedStream) watch(idle <-chan struct{}) {
	t := time.NewTicker(g.svc.streamCheck)
	defer t.Stop()
	var stopping <-chan struct{}
	if g.endAtStop {
		stopping = g.svc.stopping
	}
	for {
		select {
		case <-idle:
			return
		case <-g.ctx.Done():
			return
		case <-stopping:
			g.end(&streamEnded{status: toStatus(errStopping)})
			return
		case <-t.C:
			if g.check() != nil {
				return
			}
		}
	}
}

func (g *guardedStream) SendMsg(m any) error {
	if err := g.check(); err != nil {
		return err
	}
	return g.ServerStream.SendMsg(m)
}

// RecvMsg receives the next message into m, then checks the caller. A
// handler blocked here returns as soon as the stream's context ends (the
// caller revoked, the CRL stale), not when the caller next sends: the
// receive runs aside, and RecvMsg returns the status the stream ended with
// at once, then on every later call. After an error the handler must not
// use m, which the receive left aside may still be filling.
func (g *guardedStream) RecvMsg(m any) error {
	if err := g.ended(); err != nil {
		return err
	}
	got := make(chan error, 1)
	go func() {
		// Returns once the handler has returned, when gRPC ends the stream.
		got <- g.ServerStream.RecvMsg(m)
	}()
	select {
	case err := <-got:
		if err != nil {
			return err
		}
		return g.check()
	case <-g.ctx.Done():
		return g.ended()
	}
}

// ended returns the status the stream ended with, or nil while it goes on.
func (g *guardedStream) ended() error {
	if g.ctx.Err() == nil {
		return nil
	}
	var ended *streamEnded
	if errors.As(context.Cause(g.ctx), &ended) {
		return ended.status
	}
	return toStatus(g.ctx.Err())
}
