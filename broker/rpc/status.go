package rpc

import (
	"context"
	"errors"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/broker/node"
	kurierv1 "kurier.dev/kurier/proto/kurier/v1"
)

// codeOf lists which sentinel becomes which status code, first match wins.
var codeOf = []struct {
	err  error
	code codes.Code
}{
	{broker.ErrUnauthenticated, codes.Unauthenticated},
	{broker.ErrNotFound, codes.NotFound},
	{broker.ErrUnknownRecipient, codes.NotFound},
	{broker.ErrForbidden, codes.PermissionDenied},
	{broker.ErrDuplicate, codes.AlreadyExists},
	{broker.ErrInvalid, codes.InvalidArgument},
	{broker.ErrSignature, codes.InvalidArgument},
	{broker.ErrTooLarge, codes.ResourceExhausted},
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
		st := status.New(m.code, strings.TrimPrefix(err.Error(), m.err.Error()+": "))
		var rej *node.Rejection
		if errors.As(err, &rej) {
			if withDetails, derr := st.WithDetails(&kurierv1.SubmissionRejected{Evidence: toEvidence(rej.Evidence)}); derr == nil {
				st = withDetails
			}
		}
		return st.Err()
	}
	return status.Error(codes.Internal, "internal error in the node; the operator's log has the cause")
}
