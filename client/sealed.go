package client

import (
	"bufio"
	"bytes"
	"context"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
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
//
// A payload of up to 4 MiB is held in memory (Payload); a larger one,
// from Seal or ReadSealed, is in a temporary file in os.TempDir ($TMPDIR),
// which only the Sealed can reach and which goes when it is closed (on
// Linux and other Unix systems the file has no name, so that not even a
// crash leaves it behind). Close a Sealed once done with it.
type Sealed struct {
	// ID is the message id, chosen at sealing.
	ID string
	// Envelope is the envelope as signed, Signature its detached CMS
	// signature.
	Envelope, Signature []byte
	// Payload is the sealed documents (CMS EnvelopedData) when they are in
	// memory, and nil when they are in a file: PayloadSize and
	// PayloadReader work for either.
	Payload []byte

	file *payloadFile // the payload when it is in a file
}

// sealedMagic starts a saved Sealed; the version follows it.
const sealedMagic = "KURIER-SEALED 1\n"

// maxSealedSignature bounds a saved signature: a CMS signature with its
// certificate chain.
const maxSealedSignature = 64 << 10

// PayloadSize returns the size of the sealed payload in bytes.
func (s *Sealed) PayloadSize() int64 {
	if s.file != nil {
		return s.file.size
	}
	return int64(len(s.Payload))
}

// PayloadReader returns a new reader of the sealed payload, from its
// start.
func (s *Sealed) PayloadReader() io.Reader {
	if s.file != nil {
		return io.NewSectionReader(s.file.f, s.file.off, s.file.size)
	}
	return bytes.NewReader(s.Payload)
}

// Close releases the payload's file: a temporary one is removed, one of
// OpenSealed is closed (and kept). Afterwards s can no longer be
// submitted or saved. Close on a Sealed in memory does nothing; a second
// Close neither.
func (s *Sealed) Close() error {
	if s == nil || s.file == nil {
		return nil
	}
	return s.file.close()
}

// chunk returns n bytes of the payload from off, which must lie within it.
func (s *Sealed) chunk(off int64, n int) ([]byte, error) {
	if s.file == nil {
		return s.Payload[off : off+int64(n)], nil
	}
	// A new slice for every chunk: gRPC may still hold the last one.
	b := make([]byte, n)
	if _, err := s.file.f.ReadAt(b, s.file.off+off); err != nil {
		return nil, fmt.Errorf("read the sealed payload: %w", err)
	}
	return b, nil
}

// WriteTo saves s: a magic line, then the envelope, signature and payload,
// each with its length (8 bytes, big-endian). ReadSealed and OpenSealed
// read it back. The payload is copied through a small buffer, never held
// whole.
func (s *Sealed) WriteTo(w io.Writer) (int64, error) {
	bw := bufio.NewWriterSize(w, copyBuffer)
	bw.WriteString(sealedMagic)
	for _, part := range [][]byte{s.Envelope, s.Signature} {
		bw.Write(binary.BigEndian.AppendUint64(nil, uint64(len(part))))
		bw.Write(part)
	}
	bw.Write(binary.BigEndian.AppendUint64(nil, uint64(s.PayloadSize())))
	total := int64(len(sealedMagic)+len(s.Envelope)+len(s.Signature)) + 3*8
	n, err := io.Copy(bw, s.PayloadReader())
	total += n
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		return total, fmt.Errorf("save sealed message %s: %w", s.ID, err)
	}
	return total, nil
}

// ReadSealed reads a Sealed saved by WriteTo, within the limits of the
// format (the envelope's, a signature of 64 KiB, MaxPayload), and checks
// that the envelope is one. A payload over 4 MiB is copied into a
// temporary file, as Seal keeps it: Close the Sealed. OpenSealed reads a
// saved file without copying it.
func ReadSealed(r io.Reader) (*Sealed, error) {
	br := bufio.NewReaderSize(r, copyBuffer)
	s, size, err := readSealedHead(br)
	if err != nil {
		return nil, err
	}
	sp := &spool{max: MaxPayload}
	if _, err := io.CopyN(sp, br, size); err != nil {
		sp.discard()
		return nil, fmt.Errorf("read sealed message: %w", err)
	}
	if s.Payload, s.file, err = sp.payload(); err != nil {
		return nil, fmt.Errorf("read sealed message: %w", err)
	}
	if s.Payload == nil && s.file == nil {
		s.Payload = []byte{}
	}
	if _, err := br.ReadByte(); err != io.EOF {
		s.Close()
		return nil, errors.New("read sealed message: data after the payload")
	}
	return s, nil
}

// OpenSealed opens the file at path, saved by WriteTo, as a Sealed whose
// payload is read from the file where it lies, neither copied nor held in
// memory. The file must stay as it is until the Sealed is closed; Close
// closes it and keeps it.
func OpenSealed(path string) (*Sealed, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read sealed message: %w", err)
	}
	s, size, err := readSealedHead(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	off, err := f.Seek(0, io.SeekCurrent)
	var fi os.FileInfo
	if err == nil {
		fi, err = f.Stat()
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("read sealed message: %w", err)
	}
	switch rest := fi.Size() - off; {
	case rest < size:
		f.Close()
		return nil, fmt.Errorf("read sealed message: %w", io.ErrUnexpectedEOF)
	case rest > size:
		f.Close()
		return nil, errors.New("read sealed message: data after the payload")
	}
	s.file = &payloadFile{f: f, off: off, size: size}
	return s, nil
}

// readSealedHead reads a saved Sealed up to its payload: the magic line,
// envelope (which must parse) and signature, and the payload's size.
func readSealedHead(r io.Reader) (*Sealed, int64, error) {
	magic := make([]byte, len(sealedMagic))
	if _, err := io.ReadFull(r, magic); err != nil || string(magic) != sealedMagic {
		return nil, 0, errors.New("read sealed message: not a sealed Kurier message")
	}
	var parts [2][]byte
	var size int64
	for i, max := range []uint64{envelope.MaxSize, maxSealedSignature, MaxPayload} {
		var b [8]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return nil, 0, fmt.Errorf("read sealed message: %w", err)
		}
		n := binary.BigEndian.Uint64(b[:])
		if n > max {
			return nil, 0, fmt.Errorf("read sealed message: part %d has %d bytes, at most %d", i+1, n, max)
		}
		if i == len(parts) {
			size = int64(n)
			break
		}
		parts[i] = make([]byte, n)
		if _, err := io.ReadFull(r, parts[i]); err != nil {
			return nil, 0, fmt.Errorf("read sealed message: %w", err)
		}
	}
	env, err := envelope.Parse(parts[0])
	if err != nil {
		return nil, 0, fmt.Errorf("read sealed message: %w", err)
	}
	return &Sealed{ID: env.ID, Envelope: parts[0], Signature: parts[1]}, size, nil
}

// Seal seals m for sending: it looks each recipient up (and checks its
// encryption certificate, as Send describes), signs and encrypts the
// documents and signs the envelope. Directory questions that find the node
// unreachable are asked again for as long as WithRetry allows; the
// documents are read once, after them.
//
// The documents stream through signing and encryption: a sealed payload
// of more than 4 MiB goes to a temporary file, never into memory whole
// (see Sealed); Close the Sealed once it is submitted.
func (c *Client) Seal(ctx context.Context, m Message) (*Sealed, error) {
	if err := validate(m); err != nil {
		return nil, fmt.Errorf("send: %w", err)
	}
	var certs []*x509.Certificate
	err := c.retry(ctx, "", func() error {
		if err := c.refreshCRL(ctx); err != nil {
			return fmt.Errorf("send: %w", err)
		}
		var err error
		if certs, err = c.recipientCerts(ctx, m.To); err != nil {
			return fmt.Errorf("send: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return c.seal(m, certs)
}

// Submit submits a sealed message and returns once the node has durably
// accepted it, with the verified receipt. While the node cannot be reached,
// or the outcome of a try is unknown, it submits the same bytes again,
// with exponential backoff and jitter, for as long as WithRetry allows
// (default two minutes): the node answers a repeat with the first receipt.
// The payload is read from s for every try, a chunk at a time. progress
// is as for Send.
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
	var r *Receipt
	err = c.retry(ctx, env.ID, func() error {
		if err := c.refreshCRL(ctx); err != nil {
			return fmt.Errorf("send %s: %w", env.ID, err)
		}
		resp, err := c.submitOnce(ctx, s, progress)
		if err != nil {
			return c.submitError(env.ID, err)
		}
		if r, err = c.receipt(env, s.Envelope, resp); err != nil {
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
