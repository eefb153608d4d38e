package rpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/envelope"
	kurierv1 "kurier.dev/kurier/proto/kurier/v1"
)

const (
	defaultPageSize = 100
	maxPageSize     = 1000
	// maxPageToken bounds a page token: the node's own are under 100 bytes.
	maxPageToken = 256
)

// Submit reads the signed envelope, then hands the chunk stream to the node
// as a reader.
func (s *service) Submit(stream grpc.ClientStreamingServer[kurierv1.SubmitRequest, kurierv1.SubmitResponse]) error {
	ctx := stream.Context()
	caller, err := callerOf(ctx)
	if err != nil {
		return err
	}
	first, err := stream.Recv()
	if err != nil {
		if ctx.Err() != nil {
			return toStatus(ctx.Err())
		}
		return toStatus(fmt.Errorf("%w: submit: no envelope received: %v", broker.ErrInvalid, err))
	}
	env := first.GetEnvelope()
	if env == nil {
		return toStatus(fmt.Errorf("%w: submit: the first frame must carry the signed envelope", broker.ErrInvalid))
	}
	payload := newChunkReader(ctx, stream.Recv, func(req *kurierv1.SubmitRequest) ([]byte, bool) {
		if c, ok := req.GetPart().(*kurierv1.SubmitRequest_Chunk); ok {
			return c.Chunk, true
		}
		return nil, false
	}, s.upload)
	r, err := s.node.Submit(ctx, caller, env.GetEnvelope(), env.GetSignature(), payload)
	if err != nil {
		s.logRefusal(ctx, "submit refused", err)
		return toStatus(err)
	}
	return stream.SendAndClose(&kurierv1.SubmitResponse{MessageId: r.MessageID, Evidence: s.toEvidenceList(r.Evidence)})
}

// chunkReader turns the chunk frames of a Submit or Relay stream into a
// reader. recv returns the next frame's chunk, or ok false for a frame
// that is not a chunk.
type chunkReader struct {
	ctx  context.Context
	recv func() (chunk []byte, ok bool, err error)
	buf  []byte // what is left of the current chunk
	held []byte // the current chunk whole, to release once read (see decodeChunk)
	uploadBounds
	// end, if total is set, is when the upload must be done.
	end time.Time
}

// uploadBounds bound how long an upload may take.
type uploadBounds struct {
	// idle, if set, is how long Read waits for the next frame before it
	// gives the upload up, so that a stalled upload frees its slot.
	idle time.Duration
	// total, if set, bounds the whole upload, so that one sent a byte at
	// a time, never idle, still ends.
	total time.Duration
	// stopping is closed when the server stops; from then on each frame
	// must come within stopIdle, so that a stalled upload does not hold
	// the stopping server.
	stopping <-chan struct{}
	stopIdle time.Duration
}

// frame is what one recv returned.
type frame struct {
	chunk []byte
	ok    bool
	err   error
}

// next receives the next frame, waiting at most c.idle, and not past the
// end of the upload's time.
func (c *chunkReader) next() ([]byte, bool, error) {
	wait, over := c.idle, fmt.Errorf("%w: no payload arrived for %s; the upload is given up, send again", context.DeadlineExceeded, c.idle)
	if !c.end.IsZero() {
		left := time.Until(c.end)
		if left <= 0 || c.idle <= 0 || left < c.idle {
			wait, over = left, fmt.Errorf("%w: the upload took longer than the %s this node allows; send again over a faster connection", context.DeadlineExceeded, c.total)
		}
		if left <= 0 {
			return nil, false, over
		}
	}
	got := make(chan frame, 1)
	go func() {
		// Recv returns once the stream ends, which it does when the
		// handler gives up below.
		b, ok, err := c.recv()
		got <- frame{b, ok, err}
	}()
	var timeout <-chan time.Time
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		timeout = t.C
	}
	deadline := time.Now().Add(wait)
	stopping := c.stopping
	// The stream's context ends when its caller is revoked or the CRL
	// goes stale: the upload ends then, not when the next frame comes.
	for {
		select {
		case f := <-got:
			return f.chunk, f.ok, f.err
		case <-timeout:
			return nil, false, over
		case <-c.ctx.Done():
			return nil, false, context.Cause(c.ctx)
		case <-stopping:
			stopping = nil
			if wait <= 0 || time.Until(deadline) > c.stopIdle {
				t := time.NewTimer(c.stopIdle)
				defer t.Stop()
				timeout, over = t.C, errStopIdle
			}
		}
	}
}

// newChunkReader reads the frames of a client stream with recv and takes
// each one's chunk with chunk, within the bounds b; the upload's total
// time counts from now.
func newChunkReader[Req any](ctx context.Context, recv func() (Req, error), chunk func(Req) ([]byte, bool), b uploadBounds) *chunkReader {
	var end time.Time
	if b.total > 0 {
		end = time.Now().Add(b.total)
	}
	return &chunkReader{ctx: ctx, uploadBounds: b, end: end, recv: func() ([]byte, bool, error) {
		req, err := recv()
		if err != nil {
			return nil, false, err
		}
		b, ok := chunk(req)
		return b, ok, nil
	}}
}

func (c *chunkReader) Read(p []byte) (int, error) {
	for len(c.buf) == 0 {
		chunk, ok, err := c.next()
		if errors.Is(err, io.EOF) {
			return 0, io.EOF
		}
		if err != nil {
			if c.ctx.Err() != nil {
				return 0, c.ctx.Err() // the client went away: not the node's fault
			}
			if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, broker.ErrUnavailable) {
				return 0, err
			}
			return 0, fmt.Errorf("%w: receive payload: %v", broker.ErrInvalid, err)
		}
		if !ok {
			return 0, fmt.Errorf("%w: only payload chunks may follow the envelope", broker.ErrInvalid)
		}
		if len(chunk) > MaxChunkSize {
			return 0, fmt.Errorf("%w: payload chunk of %d bytes, at most %d", broker.ErrInvalid, len(chunk), MaxChunkSize)
		}
		c.buf, c.held = chunk, chunk
	}
	n := copy(p, c.buf)
	c.buf = c.buf[n:]
	if len(c.buf) == 0 {
		releaseChunk(c.held)
		c.held = nil
	}
	return n, nil
}

// ListInbox lists one page of the caller's mailbox.
func (s *service) ListInbox(ctx context.Context, req *kurierv1.ListInboxRequest) (*kurierv1.ListInboxResponse, error) {
	caller, err := callerOf(ctx)
	if err != nil {
		return nil, err
	}
	size, err := pageArgs(req.GetPageSize(), maxPageSize, req.GetPageToken())
	if err != nil {
		return nil, toStatus(err)
	}
	entries, next, err := s.node.Inbox(ctx, caller, req.GetPageToken(), size)
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &kurierv1.ListInboxResponse{NextPageToken: next}
	for _, e := range entries {
		resp.Messages = append(resp.Messages, toSummary(e))
	}
	return resp, nil
}

// pageArgs checks a listing's page_size against max (0 is
// defaultPageSize, or max if that is less) and bounds its page_token.
func pageArgs(pageSize int32, max int, token string) (int, error) {
	size := int(pageSize)
	switch {
	case size < 0 || size > max:
		return 0, fmt.Errorf("%w: page_size %d out of range 0..%d", broker.ErrInvalid, size, max)
	case size == 0:
		size = min(defaultPageSize, max)
	}
	if len(token) > maxPageToken {
		return 0, fmt.Errorf("%w: a page_token of %d bytes is none this node handed out; list from the start without one", broker.ErrInvalid, len(token))
	}
	return size, nil
}

// Subscribe streams notices of new messages until the caller hangs up, or
// the server stops: then the stream's context ends, and the stream with
// Unavailable, "the node is shutting down" (endsAtStop), which tells the
// client to subscribe again later and list its inbox for what it missed.
func (s *service) Subscribe(_ *kurierv1.SubscribeRequest, stream grpc.ServerStreamingServer[kurierv1.SubscribeResponse]) error {
	caller, err := callerOf(stream.Context())
	if err != nil {
		return err
	}
	ch, cancel, err := s.node.Subscribe(caller)
	if err != nil {
		return toStatus(err)
	}
	defer cancel()
	// The header tells the client that the subscription is registered:
	// every message stored from now on is announced.
	if err := stream.SendHeader(nil); err != nil {
		return err
	}
	// The stream's guard checks the caller's certificate before every
	// notice and while it waits (streamIdentity): a revocation ends it.
	for {
		select {
		case <-stream.Context().Done():
			return nil
		case e := <-ch:
			if err := stream.Send(&kurierv1.SubscribeResponse{Message: toSummary(e)}); err != nil {
				return err
			}
		}
	}
}

// Fetch streams the envelope, the payload in chunks, then the Retrieval
// evidence, issued once the whole payload has been sent.
func (s *service) Fetch(req *kurierv1.FetchRequest, stream grpc.ServerStreamingServer[kurierv1.FetchResponse]) error {
	ctx := stream.Context()
	caller, err := callerOf(ctx)
	if err != nil {
		return err
	}
	if err := checkID(req.GetMessageId()); err != nil {
		return err
	}
	m, _, payload, err := s.node.Fetch(ctx, caller, req.GetMessageId())
	if err != nil {
		s.logRefusal(ctx, "fetch refused", err)
		return toStatus(err)
	}
	defer payload.Close()
	if err := stream.Send(&kurierv1.FetchResponse{Part: &kurierv1.FetchResponse_Envelope{Envelope: &kurierv1.SignedEnvelope{Envelope: m.Envelope, Signature: m.Signature}}}); err != nil {
		return err
	}
	buf := make([]byte, ChunkSize)
	for {
		n, err := io.ReadFull(payload, buf)
		if n > 0 {
			if serr := stream.Send(&kurierv1.FetchResponse{Part: &kurierv1.FetchResponse_Chunk{Chunk: buf[:n]}}); serr != nil {
				return serr
			}
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			break
		}
		if err != nil {
			s.log.Error("fetch: read payload", slog.String(broker.LogMsgID, m.ID()), slog.Any(broker.LogErr, err))
			return toStatus(err)
		}
	}
	ev, err := s.node.Retrieved(ctx, caller, m.ID())
	if err != nil {
		return toStatus(err)
	}
	return stream.Send(&kurierv1.FetchResponse{Part: &kurierv1.FetchResponse_Evidence{Evidence: s.toEvidence(ev)}})
}

// Acknowledge stores the recipient's signed acknowledgement.
func (s *service) Acknowledge(ctx context.Context, req *kurierv1.AcknowledgeRequest) (*kurierv1.AcknowledgeResponse, error) {
	caller, err := callerOf(ctx)
	if err != nil {
		return nil, err
	}
	ev, err := s.node.Acknowledge(ctx, caller, req.GetEvidence())
	if err != nil {
		s.logRefusal(ctx, "acknowledgement refused", err)
		return nil, toStatus(err)
	}
	return &kurierv1.AcknowledgeResponse{Evidence: s.toEvidence(ev)}, nil
}

// Reject stores the recipient's signed rejection.
func (s *service) Reject(ctx context.Context, req *kurierv1.RejectRequest) (*kurierv1.RejectResponse, error) {
	caller, err := callerOf(ctx)
	if err != nil {
		return nil, err
	}
	ev, err := s.node.Reject(ctx, caller, req.GetEvidence())
	if err != nil {
		s.logRefusal(ctx, "rejection refused", err)
		return nil, toStatus(err)
	}
	return &kurierv1.RejectResponse{Evidence: s.toEvidence(ev)}, nil
}

// GetEvidence returns the caller's view of a message's evidence.
func (s *service) GetEvidence(ctx context.Context, req *kurierv1.GetEvidenceRequest) (*kurierv1.GetEvidenceResponse, error) {
	caller, err := callerOf(ctx)
	if err != nil {
		return nil, err
	}
	if err := checkID(req.GetMessageId()); err != nil {
		return nil, err
	}
	evs, err := s.node.Evidence(ctx, caller, req.GetMessageId())
	if err != nil {
		return nil, toStatus(err)
	}
	return &kurierv1.GetEvidenceResponse{Evidence: s.toEvidenceList(evs)}, nil
}

// ExportMessage returns the node's part of a message's evidence bundle.
func (s *service) ExportMessage(ctx context.Context, req *kurierv1.ExportMessageRequest) (*kurierv1.ExportMessageResponse, error) {
	caller, err := callerOf(ctx)
	if err != nil {
		return nil, err
	}
	if err := checkID(req.GetMessageId()); err != nil {
		return nil, err
	}
	x, err := s.node.Export(ctx, caller, req.GetMessageId(), req.GetSinceTreeSizes())
	if err != nil {
		s.logRefusal(ctx, "export refused", err)
		return nil, toStatus(err)
	}
	resp := &kurierv1.ExportMessageResponse{
		Envelope:   &kurierv1.SignedEnvelope{Envelope: x.Message.Envelope, Signature: x.Message.Signature},
		Evidence:   s.toEvidenceList(x.Evidence),
		Checkpoint: x.Checkpoint,
		Index:      x.Index,
		Crl:        x.CRL,
	}
	sizes := map[string]uint64{}
	for _, l := range x.Logs {
		sizes[l.Origin] = l.TreeSize
		resp.Logs = append(resp.Logs, &kurierv1.LogState{Origin: l.Origin, Checkpoint: l.Checkpoint, TreeSize: l.TreeSize, LogKey: l.LogKey, LogKeySignature: l.LogKeySignature})
	}
	for i, ev := range x.Evidence {
		size, other := sizes[ev.Log]
		if !other {
			size = x.TreeSize
		}
		resp.InclusionProofs = append(resp.InclusionProofs, &kurierv1.GetInclusionProofResponse{LeafIndex: ev.LeafIndex, TreeSize: size, Hashes: x.Proofs[i]})
	}
	for _, c := range x.Consistency {
		resp.ConsistencyProofs = append(resp.ConsistencyProofs, &kurierv1.GetConsistencyProofResponse{FromSize: c.From, ToSize: x.TreeSize, Hashes: c.Proof})
	}
	return resp, nil
}

// checkID refuses a message id that is not one, before it reaches the node
// or any error message: the refusal quotes at most its first 64 bytes.
func checkID(id string) error {
	if err := envelope.CheckID(id); err != nil {
		return toStatus(fmt.Errorf("%w: %v", broker.ErrInvalid, err))
	}
	return nil
}

// logRefusal logs why a request was refused, without payload or keys.
func (s *service) logRefusal(ctx context.Context, msg string, err error) {
	caller, _ := callerOf(ctx)
	level := slog.LevelInfo
	switch {
	case status.Code(toStatus(err)) == codes.Internal || errors.Is(err, broker.ErrUnknownOutcome):
		level = slog.LevelError
	case errors.Is(err, broker.ErrStoreUnavailable):
		level = slog.LevelWarn // the operator's to mend, but no fault of the node's
	}
	s.log.Log(ctx, level, msg, slog.String(broker.LogPeer, caller.String()), slog.Any(broker.LogErr, err))
}

// toEvidence converts evidence of the node's store; an empty log is the
// node's own.
func (s *service) toEvidence(ev broker.Evidence) *kurierv1.Evidence {
	if ev.Log == "" {
		ev.Log = s.node.LogOrigin()
	}
	return toEvidence(ev)
}

func toEvidence(ev broker.Evidence) *kurierv1.Evidence {
	return &kurierv1.Evidence{Der: ev.DER, Type: ev.Type, Recipient: ev.Recipient, LeafIndex: ev.LeafIndex, Log: ev.Log}
}

func (s *service) toEvidenceList(evs []broker.Evidence) []*kurierv1.Evidence {
	out := make([]*kurierv1.Evidence, 0, len(evs))
	for _, ev := range evs {
		out = append(out, s.toEvidence(ev))
	}
	return out
}

// fromEvidence takes evidence another node sent, with the log it names.
// Its decoded fields are not trusted; the node reads the DER.
func fromEvidence(pb *kurierv1.Evidence) broker.Evidence {
	return broker.Evidence{DER: pb.GetDer(), Type: pb.GetType(), Recipient: pb.GetRecipient(), LeafIndex: pb.GetLeafIndex(), Log: pb.GetLog()}
}

func toSummary(e broker.InboxEntry) *kurierv1.MessageSummary {
	h := e.Message.Header
	return &kurierv1.MessageSummary{
		MessageId:   h.ID,
		From:        h.From,
		Subject:     h.Subject,
		Type:        h.Type,
		Reference:   h.Reference,
		Received:    timestamppb.New(e.Copy.Received),
		PayloadSize: h.PayloadSize,
		State:       string(e.Copy.State),
	}
}
