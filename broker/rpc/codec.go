package rpc

import (
	"context"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	protocodec "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
)

// A request that does not decode must be refused as the caller's mistake
// (InvalidArgument), not reported as a failure of the node: grpc-go answers
// every codec error with codes.Internal, whatever the codec returns, and
// writes that status itself, before any interceptor or handler can change
// it. So the server's codec does not fail: it reports why it could not
// decode into the value it decodes into (a *decodeTarget), and every
// registered handler decodes through one (strictRegistrar), turning that
// reason into the status.

// Messages of the refusals; they quote nothing of the request.
const (
	msgNotUTF8   = "request is not valid: a text field is not UTF-8"
	msgMalformed = "request is not valid: not a well-formed protobuf message of the expected type"
)

// codec is the server's codec: the proto codec, which in addition keeps
// the reason a request did not decode.
type codec struct{ base encoding.CodecV2 }

func newCodec() codec { return codec{base: encoding.GetCodecV2(protocodec.Name)} }

func (c codec) Name() string                           { return protocodec.Name }
func (c codec) Marshal(v any) (mem.BufferSlice, error) { return c.base.Marshal(v) }

func (c codec) Unmarshal(data mem.BufferSlice, v any) error {
	t, ok := v.(*decodeTarget)
	if !ok {
		return c.base.Unmarshal(data, v)
	}
	// No error for grpc-go: it would answer Internal itself at once.
	t.err = c.base.Unmarshal(data, t.msg)
	return nil
}

// decodeTarget carries a request message through grpc-go to the codec,
// and the codec's error back.
type decodeTarget struct {
	msg any
	err error
}

// decode receives one message into m with recv and turns a decoding
// failure into InvalidArgument; other errors (the stream's end, the
// transport's) pass unchanged.
func decode(recv func(any) error, m any) error {
	t := &decodeTarget{msg: m}
	if err := recv(t); err != nil || t.err == nil {
		return err
	}
	if strings.Contains(t.err.Error(), "UTF-8") {
		return status.Error(codes.InvalidArgument, msgNotUTF8)
	}
	return status.Error(codes.InvalidArgument, msgMalformed)
}

// strictRegistrar registers services so that their requests decode
// through decode. It serves every service of the node, health checking
// and reflection included.
type strictRegistrar struct{ *grpc.Server }

func (r strictRegistrar) RegisterService(sd *grpc.ServiceDesc, impl any) {
	strict := *sd
	strict.Methods = make([]grpc.MethodDesc, len(sd.Methods))
	for i, m := range sd.Methods {
		h := m.Handler
		m.Handler = func(srv any, ctx context.Context, dec func(any) error, ic grpc.UnaryServerInterceptor) (any, error) {
			return h(srv, ctx, func(m any) error { return decode(dec, m) }, ic)
		}
		strict.Methods[i] = m
	}
	strict.Streams = make([]grpc.StreamDesc, len(sd.Streams))
	for i, s := range sd.Streams {
		h := s.Handler
		s.Handler = func(srv any, ss grpc.ServerStream) error { return h(srv, decodingStream{ss}) }
		strict.Streams[i] = s
	}
	r.Server.RegisterService(&strict, impl)
}

// decodingStream is a stream whose messages decode through decode.
type decodingStream struct{ grpc.ServerStream }

func (s decodingStream) RecvMsg(m any) error { return decode(s.ServerStream.RecvMsg, m) }
