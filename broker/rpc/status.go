package rpc

import (
	"context"
	"errors"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/types/known/durationpb"

	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/broker/node"
	"kurier.dev/kurier/pki"
	kurierv1 "kurier.dev/kurier/proto/kurier/v1"
)

// codeOf lists which sentinel becomes which status code, first match wins.
var codeOf = []struct {
	err  error
	code codes.Code
}{
	// An unknown outcome is Unavailable, the code that gRPC clients (and
	// Kurier's) try again on: the same sealed message again tells.
	{broker.ErrUnknownOutcome, codes.Unavailable},
	{broker.ErrUnauthenticated, codes.Unauthenticated},
	{broker.ErrNotFound, codes.NotFound},
	{broker.ErrUnknownRecipient, codes.NotFound},
	{broker.ErrForbidden, codes.PermissionDenied},
	{broker.ErrDuplicate, codes.AlreadyExists},
	{broker.ErrInvalid, codes.InvalidArgument},
	{broker.ErrSignature, codes.InvalidArgument},
	{broker.ErrTooLarge, codes.ResourceExhausted},
	{broker.ErrQuota, codes.ResourceExhausted},
	{broker.ErrRateLimited, codes.ResourceExhausted},
	{broker.ErrNoSpace, codes.ResourceExhausted},
	{broker.ErrState, codes.FailedPrecondition},
	{broker.ErrConflict, codes.Aborted},
	{broker.ErrStoreUnavailable, codes.Unavailable},
	{broker.ErrUnavailable, codes.Unavailable},
	{broker.ErrDamaged, codes.DataLoss},
	{context.Canceled, codes.Canceled},
	{context.DeadlineExceeded, codes.DeadlineExceeded},
}

// toStatus maps node errors to gRPC status: the one place where sentinel
// errors become codes. The message is the node's, which says what to do;
// the sentinel's own words are left out where the code already says them.
// Internal failures are not described beyond that they happened.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok && errors.Unwrap(err) == nil {
		return err // a status from the transport or the identity check
	}
	for _, m := range codeOf {
		if !errors.Is(err, m.err) {
			continue
		}
		msg := strings.TrimPrefix(err.Error(), m.err.Error()+": ")
		switch m.err {
		case broker.ErrUnknownOutcome:
			msg = m.err.Error() // what failed underneath is the operator's business
		case broker.ErrStoreUnavailable:
			// So is how the database failed, and where it is.
			msg = strings.TrimPrefix(m.err.Error(), broker.ErrUnavailable.Error()+": ")
		}
		return withDetails(status.New(m.code, msg), err).Err()
	}
	return status.Error(codes.Internal, "internal error in the node; the operator's log has the cause")
}

// ReasonDomain is the domain of the google.rpc.ErrorInfo details that
// name why the node refused a call (the Reason* constants).
const ReasonDomain = "kurier.dev"

// The reasons a refusal names in its google.rpc.ErrorInfo, stable so that
// clients in any language can branch on them (docs/PROTOCOL.md); the
// status code and message stay what a person reads.
const (
	ReasonUnknownRecipient = "UNKNOWN_RECIPIENT"
	ReasonTooLarge         = "TOO_LARGE"
	ReasonQuota            = "QUOTA_EXCEEDED"
	ReasonRateLimited      = "RATE_LIMITED"
	ReasonNoSpace          = "NO_SPACE"
	ReasonRevoked          = "CERTIFICATE_REVOKED"
)

// reasonOf lists which sentinel names which reason, first match wins: a
// quota is a rate limit too, and a revoked certificate is named whatever
// the code.
var reasonOf = []struct {
	err    error
	reason string
}{
	{pki.ErrRevoked, ReasonRevoked},
	{broker.ErrUnknownRecipient, ReasonUnknownRecipient},
	{broker.ErrTooLarge, ReasonTooLarge},
	{broker.ErrQuota, ReasonQuota},
	{broker.ErrRateLimited, ReasonRateLimited},
	{broker.ErrNoSpace, ReasonNoSpace},
}

// withDetails adds what the caller can act on to st: why it was refused
// (google.rpc.ErrorInfo), the SubmissionRejection of a refused submission,
// and when to try again after a rate limit (google.rpc.RetryInfo).
func withDetails(st *status.Status, err error) *status.Status {
	var details []protoadapt.MessageV1
	for _, r := range reasonOf {
		if errors.Is(err, r.err) {
			details = append(details, &errdetails.ErrorInfo{Domain: ReasonDomain, Reason: r.reason})
			break
		}
	}
	var rej *node.Rejection
	var lim *node.LimitError
	switch {
	case errors.As(err, &rej):
		details = append(details, &kurierv1.SubmissionRejected{Evidence: toEvidence(rej.Evidence)})
	case errors.As(err, &lim):
		details = append(details, &errdetails.RetryInfo{RetryDelay: durationpb.New(lim.RetryAfter)})
	}
	if len(details) == 0 {
		return st
	}
	if d, derr := st.WithDetails(details...); derr == nil {
		return d
	}
	return st
}
