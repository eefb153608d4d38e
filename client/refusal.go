package client

import (
	"context"
	"errors"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"kurier.dev/kurier/pki"
)

// The common refusals a caller branches on. An error the node refused a
// call with wraps one of these where the node names the reason, and keeps
// its gRPC status (status.Code still reads it) and the node's message,
// which says what to do.
var (
	// ErrUnknownRecipient: a recipient of the message has no mailbox.
	ErrUnknownRecipient = errors.New("unknown recipient")
	// ErrTooLarge: the message is over one of the node's limits (size,
	// recipients, documents); sending it again will not help.
	ErrTooLarge = errors.New("over the node's limits")
	// ErrQuota: the sender has used up its daily payload quota; the error
	// names when the message fits again. It is also an ErrRateLimited.
	ErrQuota = errors.New("daily quota used up")
	// ErrRateLimited: the sender handed in more than the node takes in a
	// while; the same call succeeds after the wait the error names.
	ErrRateLimited = errors.New("over the node's rate limit")
	// ErrNodeFull: the node's disk is almost full; it takes no new
	// messages until its operator makes room.
	ErrNodeFull = errors.New("the node takes no new messages")
	// ErrRevoked: a certificate the call needs is revoked: the caller's
	// own or a recipient's encryption certificate, as the node names it,
	// or a signer's, as the client finds it; the message says whose. It
	// is pki.ErrRevoked.
	ErrRevoked = pki.ErrRevoked
)

// reasonDomain and the reasons are those the node names in its
// google.rpc.ErrorInfo (docs/PROTOCOL.md, "Errors").
const reasonDomain = "kurier.dev"

// reasons lists the reasons by their sentinels, for Reason: a quota
// before the rate limit it is a kind of.
var reasons = []struct {
	err    error
	reason string
}{
	{ErrUnknownRecipient, "UNKNOWN_RECIPIENT"},
	{ErrTooLarge, "TOO_LARGE"},
	{ErrQuota, "QUOTA_EXCEEDED"},
	{ErrRateLimited, "RATE_LIMITED"},
	{ErrNodeFull, "NO_SPACE"},
	{ErrRevoked, "CERTIFICATE_REVOKED"},
}

// Reason returns the reason of a common refusal as docs/PROTOCOL.md names
// it ("UNKNOWN_RECIPIENT", "QUOTA_EXCEEDED", …), whether the node named it
// or the client found it (an address the directory does not know, a
// revoked signer); "" for any other error. Scripts get it from
// `kurier --json` as "reason".
func Reason(err error) string {
	for _, r := range reasons {
		if errors.Is(err, r.err) {
			return r.reason
		}
	}
	return ""
}

var sentinelOf = map[string][]error{
	"UNKNOWN_RECIPIENT":   {ErrUnknownRecipient},
	"TOO_LARGE":           {ErrTooLarge},
	"QUOTA_EXCEEDED":      {ErrQuota, ErrRateLimited},
	"RATE_LIMITED":        {ErrRateLimited},
	"NO_SPACE":            {ErrNodeFull},
	"CERTIFICATE_REVOKED": {ErrRevoked},
}

// refusal is a node's refusal that names its reason: the status error as
// the node sent it, and the sentinels of the reason.
type refusal struct {
	err   error
	kinds []error
}

func (r *refusal) Error() string { return r.err.Error() }

func (r *refusal) Unwrap() []error { return append([]error{r.err}, r.kinds...) }

// GRPCStatus returns the node's status as it came, details and message
// unchanged: status.FromError would otherwise take the message from
// Error(), which holds the "rpc error: code = …" prefix.
func (r *refusal) GRPCStatus() *status.Status { return status.Convert(r.err) }

// kindsOf returns the sentinels of the reason st names, if any.
func kindsOf(st *status.Status) []error {
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == reasonDomain {
			return sentinelOf[info.GetReason()]
		}
	}
	return nil
}

// refused returns err with the sentinels of the reason the node named, or
// err itself.
func refused(err error) error {
	st, ok := status.FromError(err)
	if !ok || err == nil {
		return err
	}
	if kinds := kindsOf(st); kinds != nil {
		return &refusal{err: err, kinds: kinds}
	}
	return err
}

// unaryRefusals and streamRefusals give every call's error its reason.
func unaryRefusals(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	return refused(invoker(ctx, method, req, reply, cc, opts...))
}

func streamRefusals(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	s, err := streamer(ctx, desc, cc, method, opts...)
	if err != nil {
		return nil, refused(err)
	}
	return refusingStream{s}, nil
}

type refusingStream struct{ grpc.ClientStream }

func (s refusingStream) SendMsg(m any) error { return refused(s.ClientStream.SendMsg(m)) }

func (s refusingStream) RecvMsg(m any) error { return refused(s.ClientStream.RecvMsg(m)) }
