package auditlog

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"syscall"

	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"kurier.dev/kurier/pki"
)

// maxReason bounds the refusal message recorded; the node's messages are
// shorter, and what they quote of a caller is bounded already.
const maxReason = 512

// bounded cuts a refusal's text to maxReason bytes.
func bounded(reason string) string {
	if len(reason) <= maxReason {
		return reason
	}
	return strings.ToValidUTF8(reason[:maxReason], "") + "…"
}

// UnaryInterceptor records the unary calls refused as unauthenticated or
// forbidden. It must run outside the node's own interceptors, so that it
// sees their refusals.
func (l *Log) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		resp, err := handler(ctx, req)
		l.refused(ctx, info.FullMethod, err)
		return resp, err
	}
}

// StreamInterceptor records the streams refused or ended as
// unauthenticated or forbidden (a caller revoked while its stream was
// open, say).
func (l *Log) StreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		err := handler(srv, ss)
		l.refused(ss.Context(), info.FullMethod, err)
		return err
	}
}

// refused records err if it is a refusal an auditor must see.
func (l *Log) refused(ctx context.Context, method string, err error) {
	if l == nil || err == nil {
		return
	}
	st := status.Convert(err)
	var kind string
	switch st.Code() {
	case codes.Unauthenticated:
		kind = "authentication"
	case codes.PermissionDenied:
		kind = "authorization"
	default:
		return
	}
	attrs := []slog.Attr{slog.String("kind", kind), slog.String("method", method), slog.String("code", st.Code().String())}
	attrs = append(attrs, callerAttrs(ctx)...)
	attrs = append(attrs, slog.String("reason", bounded(st.Message())))
	l.Record(EventRefused, attrs...)
}

// callerAttrs names the caller as its certificate does, verified or not:
// its identity, the certificate's serial and issuer, and its network
// address.
func callerAttrs(ctx context.Context) []slog.Attr {
	pr, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	var attrs []slog.Attr
	if pr.Addr != nil {
		attrs = append(attrs, slog.String("remote", pr.Addr.String()))
	}
	info, ok := pr.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.PeerCertificates) == 0 {
		return append(attrs, slog.String("peer", "none (no client certificate)"))
	}
	cert := info.State.PeerCertificates[0]
	who := cert.Subject.String()
	if p, err := pki.PeerOf(cert); err == nil {
		who = p.String()
	}
	return append(attrs, slog.String("peer", who),
		slog.String("cert_serial", "0x"+cert.SerialNumber.Text(16)), slog.String("cert_issuer", cert.Issuer.String()))
}

// handshakeEvents bounds the refused handshakes recorded: a flood of
// connections with bad certificates must not fill the disk. Those over
// the bound are counted, and the count goes with the next one recorded.
const (
	handshakeEventsPerSecond = 5
	handshakeEventsBurst     = 50
)

// HandshakeFailed records a connection whose TLS handshake the node
// refused (rpc.Options.HandshakeFailed): no certificate, one of another
// CA, a revoked one, one that is neither a participant's nor a node's. A
// connection that closed before it said anything (a port probe) is not
// recorded.
func (l *Log) HandshakeFailed(remote net.Addr, err error) {
	if l == nil || errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, net.ErrClosed) {
		return
	}
	l.hsMu.Lock()
	if l.hsLimit == nil {
		l.hsLimit = rate.NewLimiter(handshakeEventsPerSecond, handshakeEventsBurst)
	}
	if !l.hsLimit.AllowN(l.now(), 1) {
		l.hsDropped++
		l.hsMu.Unlock()
		return
	}
	dropped := l.hsDropped
	l.hsDropped = 0
	l.hsMu.Unlock()
	attrs := []slog.Attr{slog.String("kind", "authentication"), slog.String("method", "(TLS handshake)"), slog.String("reason", bounded(err.Error()))}
	if remote != nil {
		attrs = append(attrs, slog.String("remote", remote.String()))
	}
	if dropped > 0 {
		attrs = append(attrs, slog.Int("not_recorded_before", dropped))
	}
	l.Record(EventRefused, attrs...)
}
