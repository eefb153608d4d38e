package rpc

import (
	"context"
	"io"
	"strings"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	protocodec "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"

	kurierv1 "kurier.dev/kurier/proto/kurier/v1"
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
	if decodeChunk(data, t.msg) {
		return nil
	}
	// No error for grpc-go: it would answer Internal itself at once.
	t.err = c.base.Unmarshal(data, t.msg)
	return nil
}

// Payload chunks are most of what a node receives, and the proto codec
// would allocate each one anew (a 200 MB upload is 800 allocations of
// 256 KiB, which the garbage collector lets pile up to the size of the
// node's heap before it collects them). A frame that is nothing but a
// chunk of a SubmitRequest or RelayRequest is therefore decoded by hand
// into a pooled buffer, which the chunk reader hands back once it has
// passed the bytes on (releaseChunk). Any other frame, and any frame of
// another shape, goes through the proto codec, so what is accepted does
// not change.

// chunkField is the field number of `bytes chunk` in SubmitRequest and
// RelayRequest.
const chunkField = 2

// chunkPools hold frame buffers of minChunkBuffer << i bytes.
var chunkPools [chunkPoolClasses]sync.Pool

const (
	minChunkBuffer   = 64 << 10
	chunkPoolClasses = 6 // up to 2 MiB, above the largest frame a node accepts
)

// chunkClass is the pool class whose buffers hold n bytes, or -1.
func chunkClass(n int) int {
	for i := range chunkPoolClasses {
		if n <= minChunkBuffer<<i {
			return i
		}
	}
	return -1
}

// decodeChunk decodes data into msg if msg is a SubmitRequest or
// RelayRequest and data is exactly one chunk field, and reports whether
// it did.
func decodeChunk(data mem.BufferSlice, msg any) bool {
	n := data.Len()
	class := chunkClass(n)
	if n < minChunkBuffer || class < 0 {
		return false
	}
	switch msg.(type) {
	case *kurierv1.SubmitRequest, *kurierv1.RelayRequest:
	default:
		return false
	}
	// The tag and the length (at most 1 + 3 bytes here) in the first buffer.
	head := data[0].ReadOnlyData()
	num, typ, tl := protowire.ConsumeTag(head)
	if tl < 0 || num != chunkField || typ != protowire.BytesType {
		return false
	}
	size, ll := protowire.ConsumeVarint(head[tl:])
	if ll < 0 || uint64(n-tl-ll) != size {
		return false
	}
	buf, _ := chunkPools[class].Get().(*[]byte)
	if buf == nil {
		b := make([]byte, minChunkBuffer<<class)
		buf = &b
	}
	// The chunk at the start of the buffer, so that releaseChunk can hand
	// the buffer back from the chunk alone.
	chunk := (*buf)[:size]
	r := data.Reader()
	if _, err := io.CopyN(io.Discard, r, int64(tl+ll)); err != nil {
		chunkPools[class].Put(buf)
		return false
	}
	if _, err := io.ReadFull(r, chunk); err != nil {
		chunkPools[class].Put(buf)
		return false
	}
	switch m := msg.(type) {
	case *kurierv1.SubmitRequest:
		m.Part = &kurierv1.SubmitRequest_Chunk{Chunk: chunk}
	case *kurierv1.RelayRequest:
		m.Part = &kurierv1.RelayRequest_Chunk{Chunk: chunk}
	}
	return true
}

// releaseChunk hands a chunk's buffer back to its pool once nothing refers
// to it any more. A chunk that did not come from decodeChunk may end up in
// a pool too, which is harmless: a pool's buffers are only ever written
// whole by decodeChunk.
func releaseChunk(chunk []byte) {
	c := cap(chunk)
	class := chunkClass(c)
	if class < 0 || c != minChunkBuffer<<class {
		return
	}
	buf := chunk[:c:c]
	chunkPools[class].Put(&buf)
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
