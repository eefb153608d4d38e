package rpc

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/broker/node"
	kurierv1 "kurier.dev/kurier/proto/kurier/v1"
)

// toStatus maps node errors to gRPC status: the one place where sentinel
// errors become codes. The message is the node's, which already says what
// to do; internal failures are not described beyond that they happened.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok && !isWrapped(err) {
		return err
	}
	var code codes.Code
	switch {
	case errors.Is(err, broker.ErrNotFound):
		code = codes.NotFound
	case errors.Is(err, broker.ErrForbidden):
		code = codes.PermissionDenied
	case errors.Is(err, broker.ErrDuplicate), errors.Is(err, broker.ErrExists):
		code = codes.AlreadyExists
	case errors.Is(err, broker.ErrInvalid), errors.Is(err, broker.ErrSignature):
		code = codes.InvalidArgument
	case errors.Is(err, broker.ErrUnknownRecipient):
		code = codes.NotFound
	case errors.Is(err, broker.ErrTooLarge):
		code = codes.ResourceExhausted
	case errors.Is(err, broker.ErrState):
		code = codes.FailedPrecondition
	case errors.Is(err, broker.ErrConflict):
		code = codes.Aborted
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	default:
		return status.Error(codes.Internal, "internal error in the node; the operator's log has the cause")
	}
	st := status.New(code, err.Error())
	var rej *node.Rejection
	if errors.As(err, &rej) {
		if withDetails, derr := st.WithDetails(&kurierv1.SubmissionRejected{Evidence: toEvidence(rej.Evidence)}); derr == nil {
			st = withDetails
		}
	}
	return st.Err()
}

// isWrapped reports whether err carries more than a bare status, so that a
// status error from the transport passes through unchanged.
func isWrapped(err error) bool {
	return errors.Unwrap(err) != nil
}
