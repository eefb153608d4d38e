package client

import (
	"errors"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestRefused_KeepsStatusMessage(t *testing.T) {
	st, err := status.New(codes.ResourceExhausted, "over the quota; fits again in 1m").
		WithDetails(&errdetails.ErrorInfo{Domain: reasonDomain, Reason: "QUOTA_EXCEEDED"})
	if err != nil {
		t.Fatal(err)
	}
	got := refused(st.Err())
	if !errors.Is(got, ErrQuota) || !errors.Is(got, ErrRateLimited) || status.Code(got) != codes.ResourceExhausted {
		t.Fatalf("sentinels/code lost: %v", got)
	}
	if m := status.Convert(got).Message(); m != st.Message() {
		t.Errorf("status message after the interceptor = %q, want %q", m, st.Message())
	}
}
