package client

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"kurier.dev/kurier/envelope"
	"kurier.dev/kurier/pki/cms"
)

// Sealed is a message ready to be submitted: the signed envelope and the
// sealed payload, exactly the bytes the node gets. Submitting the same
// Sealed again, after a crash, a timeout or a restart of either side,
// never makes a second message: the node answers a repeat with the first
// receipt. Keep it (WriteTo) until Submit has returned a receipt.
type Sealed struct {
	// ID is the message id, chosen at sealing.
	ID string
	// Envelope is the envelope as signed, Signature its detached CMS
	// signature, Payload the sealed documents (CMS EnvelopedData).
	Envelope, Signature, Payload []byte
}

// sealedMagic starts a saved Sealed; the version follows it.
const sealedMagic = "KURIER-SEALED 1\n"

// maxSealedSignature bounds a saved signature: a CMS signature with its
// certificate chain.
const maxSealedSignature = 64 << 10

// WriteTo saves s: a magic line, then the envelope, signature and payload,
// each with its length (8 bytes, big-endian). ReadSealed reads it back.
func (s *Sealed) WriteTo(w io.Writer) (int64, error) {
	bw := bufio.NewWriter(w)
	n, _ := bw.WriteString(sealedMagic)
	total := int64(n)
	for _, part := range [][]byte{s.Envelope, s.Signature, s.Payload} {
		var size [8]byte
		binary.BigEndian.PutUint64(size[:], uint64(len(part)))
		bw.Write(size[:])
		m, _ := bw.Write(part)
		total += 8 + int64(m)
	}
	if err := bw.Flush(); err != nil {
		return total, fmt.Errorf("save sealed message %s: %w", s.ID, err)
	}
	return total, nil
}

// ReadSealed reads a Sealed saved by WriteTo, within the limits of the
// format (the envelope's, a signature of 64 KiB, MaxPayload), and checks
// that the envelope is one.
func ReadSealed(r io.Reader) (*Sealed, error) {
	br := bufio.NewReader(r)
	magic := make([]byte, len(sealedMagic))
	if _, err := io.ReadFull(br, magic); err != nil || string(magic) != sealedMagic {
		return nil, errors.New("read sealed message: not a sealed Kurier message")
	}
	var parts [3][]byte
	for i, max := range []uint64{envelope.MaxSize, maxSealedSignature, MaxPayload} {
		var size [8]byte
		if _, err := io.ReadFull(br, size[:]); err != nil {
			return nil, fmt.Errorf("read sealed message: %w", err)
		}
		n := binary.BigEndian.Uint64(size[:])
		if n > max {
			return nil, fmt.Errorf("read sealed message: part %d has %d bytes, at most %d", i+1, n, max)
		}
		parts[i] = make([]byte, n)
		if _, err := io.ReadFull(br, parts[i]); err != nil {
			return nil, fmt.Errorf("read sealed message: %w", err)
		}
	}
	if _, err := br.ReadByte(); err != io.EOF {
		return nil, errors.New("read sealed message: data after the payload")
	}
	env, err := envelope.Parse(parts[0])
	if err != nil {
		return nil, fmt.Errorf("read sealed message: %w", err)
	}
	return &Sealed{ID: env.ID, Envelope: parts[0], Signature: parts[1], Payload: parts[2]}, nil
}

// Seal seals m for sending: it looks each recipient up (and checks its
// encryption certificate, as Send describes), signs and encrypts the
// documents and signs the envelope. Directory questions that find the node
// unreachable are asked again for as long as WithRetry allows.
func (c *Client) Seal(ctx context.Context, m Message) (*Sealed, error) {
	var s *sealed
	err := c.retry(ctx, "", func() error {
		if err := c.refreshCRL(ctx); err != nil {
			return fmt.Errorf("send: %w", err)
		}
		var err error
		s, err = c.seal(ctx, m)
		return err
	})
	if err != nil {
		return nil, err
	}
	return &Sealed{ID: s.env.ID, Envelope: s.envBytes, Signature: s.sig, Payload: s.payload}, nil
}

// Submit submits a sealed message and returns once the node has durably
// accepted it, with the verified receipt. While the node cannot be reached,
// or the outcome of a try is unknown, it submits the same bytes again,
// with exponential backoff and jitter, for as long as WithRetry allows
// (default two minutes): the node answers a repeat with the first receipt.
// progress is as for Send.
func (c *Client) Submit(ctx context.Context, s *Sealed, progress func(sent, total int64)) (*Receipt, error) {
	env, err := envelope.Parse(s.Envelope)
	if err != nil {
		return nil, fmt.Errorf("submit: %w", err)
	}
	if env.From != c.addr {
		return nil, fmt.Errorf("submit %s: the message is from %s, this client is %s", env.ID, env.From, c.addr)
	}
	if _, err := cms.ParseSigned(s.Signature); err != nil {
		return nil, fmt.Errorf("submit %s: envelope signature: %w", env.ID, err)
	}
	in := &sealed{env: env, envBytes: s.Envelope, sig: s.Signature, payload: s.Payload}
	var r *Receipt
	err = c.retry(ctx, env.ID, func() error {
		if err := c.refreshCRL(ctx); err != nil {
			return fmt.Errorf("send %s: %w", env.ID, err)
		}
		resp, err := c.submitOnce(ctx, in, progress)
		if err != nil {
			return c.submitError(env.ID, err)
		}
		if r, err = c.receipt(in, resp); err != nil {
			return fmt.Errorf("send %s: %w", env.ID, err)
		}
		return nil
	})
	return r, err
}

// Retry settings: the first wait, and the longest.
const (
	retryFirst = 200 * time.Millisecond
	retryMax   = 10 * time.Second
)

// retry runs fn until it succeeds, fails in a way a repeat cannot change,
// ctx ends, or the client's retry time (WithRetry) has passed since the
// first try. Waits double from retryFirst up to retryMax, each drawn from
// its upper half.
func (c *Client) retry(ctx context.Context, id string, fn func() error) error {
	deadline := c.now().Add(c.retryFor)
	wait := retryFirst
	for attempt := 1; ; attempt++ {
		err := fn()
		after, again := retryable(err)
		if err == nil || !again || ctx.Err() != nil {
			return err
		}
		d := max(after, wait/2+time.Duration(rand.Float64()*float64(wait/2)))
		if c.now().Add(d).After(deadline) {
			return err
		}
		c.log.LogAttrs(ctx, slog.LevelWarn, "node unavailable, busy or outcome unknown, trying again",
			slog.String(logKeyMsgID, id), slog.Int(logKeyAttempt, attempt), slog.Duration("wait", d), slog.Any("err", err))
		if err := sleep(ctx, d); err != nil {
			return err
		}
		wait = min(2*wait, retryMax)
	}
}

// retryable reports whether trying again may succeed, and how long the
// node asked to wait first: the node could not be reached, failed in a way
// that leaves the outcome unknown (Unavailable: "the outcome is unknown;
// resubmit the same sealed message to learn it"), or refused for now
// under a rate limit that names when to try again (ResourceExhausted with
// google.rpc.RetryInfo). Submitting the same sealed message again is safe
// in every such case: the node answers a repeat with the first receipt.
func retryable(err error) (after time.Duration, ok bool) {
	var rej *RejectedError
	if err == nil || errors.As(err, &rej) {
		return 0, false
	}
	st, ok := status.FromError(err)
	if !ok {
		return 0, false // not from the node or the transport: the client's own
	}
	switch st.Code() {
	case codes.Unavailable, codes.Aborted, codes.Internal, codes.Unknown, codes.DeadlineExceeded:
		return 0, true
	case codes.ResourceExhausted:
		for _, d := range st.Details() {
			if ri, isRetry := d.(*errdetails.RetryInfo); isRetry {
				return ri.GetRetryDelay().AsDuration(), true
			}
		}
	}
	return 0, false
}
