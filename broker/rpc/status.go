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
	{broker.ErrRateLimited, codes.ResourceExhausted},
	{broker.ErrNoSpace, codes.ResourceExhausted},
	{broker.ErrState, codes.FailedPrecondition},
	{broker.ErrConflict, codes.Aborted},
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
		if m.err == broker.ErrUnknownOutcome {
			msg = m.err.Error() // what failed underneath is the operator's business
		}
		return withDetails(status.New(m.code, msg), err).Err()
	}
	return status.Error(codes.Internal, "internal error in the node; the operator's log has the cause")
}

// withDetails adds what the caller can act on to st: the
// SubmissionRejection of a refused submission, or when to try again after
// a rate limit (google.rpc.RetryInfo).
func withDetails(st *status.Status, err error) *status.Status {
	var detail protoadapt.MessageV1
	var rej *node.Rejection
	var lim *node.LimitError
	switch {
	case errors.As(err, &rej):
		detail = &kurierv1.SubmissionRejected{Evidence: toEvidence(rej.Evidence)}
	case errors.As(err, &lim):
		detail = &errdetails.RetryInfo{RetryDelay: durationpb.New(lim.RetryAfter)}
	default:
		return st
	}
	if d, derr := st.WithDetails(detail); derr == nil {
		return d
	}
	return st
}
