package client

import (
	"archive/tar"
	"context"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"kurier.dev/kurier/address"
	"kurier.dev/kurier/envelope"
	"kurier.dev/kurier/evidence"
	"kurier.dev/kurier/pki/cms"
	kurierv1 "kurier.dev/kurier/proto/kurier/v1"
)

// minEncryptionBits is the smallest RSA key the client encrypts to (BSI
// TR-02102).
const minEncryptionBits = 3072

// DefaultExpiry is how long a message may take to reach its recipients'
// nodes when Message.Expires is 0.
const DefaultExpiry = 7 * 24 * time.Hour

// Document is one file of a message: its content in memory (Data), or
// read from Reader while the message is sealed. Sealing streams either
// way; only Data holds a document in memory whole.
type Document struct {
	// Name is the file name the recipient gets: one path element, no
	// separators or control characters (envelope.CheckFileName).
	Name string
	// Data is the content, when it is in memory; leave it nil with
	// Reader.
	Data []byte
	// Reader, if not nil, supplies the content instead: exactly Size
	// bytes, read once, from start to end, while Seal (or Send) runs, and
	// never held in memory whole. Seal fails if it gives fewer or more
	// bytes (a file that changed meanwhile). The caller closes it, if it
	// needs closing, once Seal has returned; a retried Submit does not read
	// it again, but the Sealed.
	Reader io.Reader
	// Size is the number of bytes Reader supplies; with Data it is 0 or
	// len(Data).
	Size int64
}

// size returns the length of d's content.
func (d Document) size() int64 {
	if d.Reader != nil {
		return d.Size
	}
	return int64(len(d.Data))
}

// Message is what Send sends.
type Message struct {
	// To lists the recipients' addresses; each must have a mailbox.
	To      []string
	Subject string
	// Type classifies the message for the recipient's systems (for example
	// "Schriftsatz"); optional.
	Type string
	// Reference is the case reference (Aktenzeichen); optional.
	Reference string
	// Documents are the files, in the order the recipient will see them.
	Documents []Document
	// Expires is how long the message may take to reach the recipients'
	// nodes, counted from when it is sealed; 0 means DefaultExpiry, and a
	// negative duration is an error. The envelope names the resulting time;
	// a message that has not reached a recipient's node by then is given
	// up with NonDelivery evidence. The nodes may cap it by their own
	// maximum.
	Expires time.Duration
}

// Receipt is the node's confirmation that it has durably accepted a
// message.
type Receipt struct {
	MessageID string
	// Evidence holds the verified SubmissionAcceptance and, for recipients
	// of the same node, Delivery evidence of every recipient, in order of
	// issue.
	Evidence []Evidence
}

// RejectedError is the error of a submission the node refused after
// checking that it really came from the sender: the node signed a
// SubmissionRejection, which Evidence holds once verified (nil if it could
// not be verified). status.Code works on it.
type RejectedError struct {
	MessageID string
	Code      codes.Code
	// Message is the node's explanation.
	Message  string
	Evidence *Evidence

	st    *status.Status // as the node sent it, with its details
	kinds []error        // the sentinels of the reason it names
}

// Error returns the message id, the node's status code and its
// explanation.
func (e *RejectedError) Error() string {
	return fmt.Sprintf("send %s: refused by the node: %s: %s", e.MessageID, e.Code, e.Message)
}

// GRPCStatus returns the node's status, so that status.Code(err) and
// status.FromError(err) see it, with its details.
func (e *RejectedError) GRPCStatus() *status.Status {
	if e.st != nil {
		return e.st
	}
	return status.New(e.Code, e.Message)
}

// Unwrap returns the sentinels of the reason the node named
// (ErrTooLarge, ErrRevoked, …), so that errors.Is finds them.
func (e *RejectedError) Unwrap() []error { return e.kinds }

// Send seals m and submits it to the node, returning once the node has
// durably accepted it: Seal, then Submit. progress, if not nil, is called
// as the payload goes out (sent and total bytes of the sealed payload); it
// starts again from 0 if the submission is retried.
//
// Before anything leaves the process each recipient is looked up in the
// node's directory and its encryption certificate checked: issued under the
// trust anchors, valid now, for emailProtection and key encipherment, naming
// exactly the recipient's address, RSA of at least 3072 bits. An unknown
// recipient is an error naming it ("no mailbox ADDR").
//
// While the node cannot be reached, or a try's outcome is unknown, Send
// tries again with the same sealed message, which the node treats as one
// message, for as long as WithRetry allows (default two minutes). An
// application that must survive its own crash seals with Seal, keeps the
// Sealed, and submits it with Submit. A refused submission is a
// *RejectedError where the node signed a rejection, otherwise the node's
// status error wrapped with the message id.
func (c *Client) Send(ctx context.Context, m Message, progress func(sent, total int64)) (*Receipt, error) {
	s, err := c.Seal(ctx, m)
	if err != nil {
		return nil, err
	}
	return c.Submit(ctx, s, progress)
}

// seal seals m's documents to certs and signs the envelope. The
// documents are packed, signed and encrypted in one stream (tar, then
// SignedData, then EnvelopedData), each document hashed as it is packed
// and the payload as it goes out, into a spool:
// memory up to memoryPayload bytes, a temporary file beyond. The envelope,
// which names the payload's digest and size, can only be signed after
// that. m has passed validate.
func (c *Client) seal(m Message, certs []*x509.Certificate) (*Sealed, error) {
	sp := &spool{max: MaxPayload}
	h := sha256.New()
	sums, err := c.sealDocuments(io.MultiWriter(sp, h), m.Documents, certs)
	if err != nil {
		sp.discard()
		return nil, fmt.Errorf("send: %w", err)
	}
	payload, file, err := sp.payload()
	if err != nil {
		return nil, fmt.Errorf("send: %w", err)
	}
	s := &Sealed{Payload: payload, file: file}
	if err := c.signEnvelope(s, m, hex.EncodeToString(h.Sum(nil)), sums); err != nil {
		s.Close()
		return nil, fmt.Errorf("send: %w", err)
	}
	return s, nil
}

// sealDocuments writes docs to w as the sealed payload: packed as tar,
// signed by the client's signer, encrypted to certs. It returns each
// document's SHA-256 (lowercase hex), in order.
func (c *Client) sealDocuments(w io.Writer, docs []Document, certs []*x509.Certificate) ([]string, error) {
	ew, err := cms.EncryptWriter(w, certs)
	if err != nil {
		return nil, fmt.Errorf("encrypt documents: %w", err)
	}
	sw, err := cms.SignWriter(ew, c.signer)
	if err != nil {
		return nil, fmt.Errorf("sign documents: %w", err)
	}
	sums, err := writeTar(sw, docs)
	if err != nil {
		return nil, err
	}
	if err := sw.Close(); err != nil {
		return nil, fmt.Errorf("sign documents: %w", err)
	}
	if err := ew.Close(); err != nil {
		return nil, fmt.Errorf("encrypt documents: %w", err)
	}
	return sums, nil
}

// signEnvelope builds the envelope of m for the payload of s, whose
// SHA-256 is sum and whose documents' digests are docSums, signs it and
// fills in s.
func (c *Client) signEnvelope(s *Sealed, m Message, sum string, docSums []string) error {
	id, err := envelope.NewID()
	if err != nil {
		return err
	}
	expires := m.Expires
	if expires == 0 {
		expires = DefaultExpiry
	}
	created := c.now().UTC()
	env := &envelope.Envelope{
		Version:       envelope.Version,
		ID:            id,
		From:          c.addr,
		To:            slices.Clone(m.To),
		Subject:       m.Subject,
		Type:          m.Type,
		Reference:     m.Reference,
		Created:       created,
		Expires:       created.Add(expires),
		PayloadSHA256: sum,
		PayloadSize:   s.PayloadSize(),
	}
	if len(docSums) != len(m.Documents) {
		return fmt.Errorf("%d document digests for %d documents", len(docSums), len(m.Documents))
	}
	for i, d := range m.Documents {
		env.Files = append(env.Files, envelope.File{Name: d.Name, Size: d.size(), SHA256: docSums[i]})
	}
	envBytes, err := env.Marshal()
	if err != nil {
		return err
	}
	sig, err := cms.SignDetached(envBytes, c.signer)
	if err != nil {
		return fmt.Errorf("sign envelope: %w", err)
	}
	s.ID, s.Envelope, s.Signature = id, envBytes, sig
	return nil
}

// validate checks m before any work is done, with messages that name the
// field at fault. The envelope checks the same rules again when it is
// built.
func validate(m Message) error {
	if len(m.To) == 0 {
		return errors.New("no recipient")
	}
	if len(m.To) > envelope.MaxRecipients {
		return fmt.Errorf("%d recipients, at most %d", len(m.To), envelope.MaxRecipients)
	}
	for i, to := range m.To {
		if _, err := address.Parse(to); err != nil {
			return fmt.Errorf("recipient: %w", err)
		}
		if slices.Contains(m.To[:i], to) {
			return fmt.Errorf("recipient %s named twice", to)
		}
	}
	if strings.TrimSpace(m.Subject) == "" {
		return errors.New("no subject")
	}
	for _, f := range []struct {
		name, text string
		max        int
	}{{"subject", m.Subject, envelope.MaxSubjectLen}, {"type", m.Type, envelope.MaxTypeLen}, {"reference", m.Reference, envelope.MaxReferenceLen}} {
		if err := envelope.CheckText(f.name, f.text, f.max); err != nil {
			return err
		}
	}
	if m.Expires < 0 {
		return fmt.Errorf("expires is negative (%s); give 0 for the default of %d days", m.Expires, DefaultExpiry/(24*time.Hour))
	}
	if len(m.Documents) == 0 {
		return errors.New("no documents")
	}
	if len(m.Documents) > envelope.MaxFiles {
		return fmt.Errorf("%d documents, at most %d", len(m.Documents), envelope.MaxFiles)
	}
	names := make(map[string]bool, len(m.Documents))
	var total int64
	for _, d := range m.Documents {
		if err := envelope.CheckFileName(d.Name); err != nil {
			return err
		}
		if names[d.Name] {
			return fmt.Errorf("two documents are named %q", d.Name)
		}
		names[d.Name] = true
		switch {
		case d.Reader != nil && d.Data != nil:
			return fmt.Errorf("document %q has both Data and a Reader; give one", d.Name)
		case d.Reader != nil && d.Size < 0:
			return fmt.Errorf("document %q has a negative size (%d)", d.Name, d.Size)
		case d.Reader == nil && d.Size != 0 && d.Size != int64(len(d.Data)):
			return fmt.Errorf("document %q has Size %d but %d bytes of Data", d.Name, d.Size, len(d.Data))
		}
		total += d.size()
	}
	if total > MaxPayload || total < 0 {
		return fmt.Errorf("the documents have %d bytes together, at most %d are allowed", total, MaxPayload)
	}
	return nil
}

// recipientCerts looks each recipient up in the directory and checks its
// encryption certificate before anything is encrypted to it.
func (c *Client) recipientCerts(ctx context.Context, to []string) ([]*x509.Certificate, error) {
	certs := make([]*x509.Certificate, 0, len(to))
	for _, addr := range to {
		e, err := c.Lookup(ctx, addr)
		if err != nil {
			return nil, err
		}
		certs = append(certs, e.EncryptionCert)
	}
	return certs, nil
}

// checkEncryptionCert checks the shape of a recipient's encryption
// certificate; the chain is the trust store's business.
func checkEncryptionCert(cert *x509.Certificate, addr string) error {
	if !slices.Equal(cert.EmailAddresses, []string{addr}) || len(cert.DNSNames)+len(cert.IPAddresses)+len(cert.URIs) > 0 {
		return fmt.Errorf("names %v, not exactly %s", cert.EmailAddresses, addr)
	}
	key, ok := cert.PublicKey.(*rsa.PublicKey)
	if !ok {
		return fmt.Errorf("has a %T key, want RSA", cert.PublicKey)
	}
	if n := key.N.BitLen(); n < minEncryptionBits {
		return fmt.Errorf("RSA key of %d bits, at least %d required", n, minEncryptionBits)
	}
	if cert.KeyUsage&x509.KeyUsageKeyEncipherment == 0 {
		return errors.New("does not allow key encipherment")
	}
	return nil
}

// tarTime is the modification time of every packed file, so that the
// same documents always make the same tar file.
var tarTime = time.Unix(0, 0).UTC()

// copyBuffer is the size of the pieces in which a document is read while
// it is sealed.
const copyBuffer = 256 << 10

// writeTar packs docs into w as a POSIX tar file of regular files, in
// order, reading each Reader once, and returns each document's SHA-256
// (lowercase hex) of the bytes it packed.
func writeTar(w io.Writer, docs []Document) ([]string, error) {
	tw := tar.NewWriter(w)
	var buf []byte
	sums := make([]string, 0, len(docs))
	h := sha256.New()
	for _, d := range docs {
		hdr := &tar.Header{
			Typeflag: tar.TypeReg,
			Name:     d.Name,
			Mode:     0o644,
			Size:     d.size(),
			ModTime:  tarTime,
			// No format: the writer picks USTAR, or PAX where a name needs
			// it (long or non-ASCII), never GNU for these headers.
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("pack %s: %w", d.Name, err)
		}
		h.Reset()
		dw := io.MultiWriter(tw, h)
		if d.Reader == nil {
			if _, err := dw.Write(d.Data); err != nil {
				return nil, fmt.Errorf("pack %s: %w", d.Name, err)
			}
		} else {
			if buf == nil {
				buf = make([]byte, copyBuffer)
			}
			if err := copyDocument(dw, d, buf); err != nil {
				return nil, fmt.Errorf("pack %s: %w", d.Name, err)
			}
		}
		sums = append(sums, hex.EncodeToString(h.Sum(nil)))
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("pack: %w", err)
	}
	return sums, nil
}

// copyDocument copies exactly d.Size bytes from d.Reader to w, through buf,
// and fails if the reader has fewer or more.
func copyDocument(w io.Writer, d Document, buf []byte) error {
	// A LimitedReader has no WriteTo, so CopyBuffer uses buf (an *os.File
	// would copy in 32 KiB pieces).
	n, err := io.CopyBuffer(w, io.LimitReader(d.Reader, d.Size), buf)
	if err != nil {
		return err
	}
	if n < d.Size {
		return fmt.Errorf("read %d of the %d bytes declared; did the file change?", n, d.Size)
	}
	if m, _ := io.ReadFull(d.Reader, buf[:1]); m > 0 {
		return fmt.Errorf("holds more than the %d bytes declared; did the file change?", d.Size)
	}
	return nil
}

// submitOnce makes one Submit call: the signed envelope, then the payload in
// chunks. The node may answer before reading the payload (a repeated
// message); then Send reports io.EOF and the answer is in CloseAndRecv.
func (c *Client) submitOnce(ctx context.Context, s *Sealed, progress func(sent, total int64)) (*kurierv1.SubmitResponse, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.mailbox.Submit(ctx)
	if err != nil {
		return nil, err
	}
	first := &kurierv1.SubmitRequest{Part: &kurierv1.SubmitRequest_Envelope{
		Envelope: &kurierv1.SignedEnvelope{Envelope: s.Envelope, Signature: s.Signature},
	}}
	if err := stream.Send(first); err != nil {
		if errors.Is(err, io.EOF) {
			return stream.CloseAndRecv()
		}
		return nil, err
	}
	total := s.PayloadSize()
	if progress != nil {
		progress(0, total)
	}
	for off := int64(0); off < total; off += chunkSize {
		chunk, err := s.chunk(off, int(min(chunkSize, total-off)))
		if err != nil {
			return nil, err
		}
		req := &kurierv1.SubmitRequest{Part: &kurierv1.SubmitRequest_Chunk{Chunk: chunk}}
		if err := stream.Send(req); err != nil {
			if errors.Is(err, io.EOF) {
				return stream.CloseAndRecv()
			}
			return nil, err
		}
		if progress != nil {
			progress(off+int64(len(chunk)), total)
		}
	}
	return stream.CloseAndRecv()
}

// receipt verifies the node's answer to the submission of env (signed as
// envBytes): every evidence signed by a node and issued under the domain
// its type requires (verifyEvidence), about this very envelope and
// payload, each recipient's chain intact and starting with a
// SubmissionAcceptance.
func (c *Client) receipt(env *envelope.Envelope, envBytes []byte, resp *kurierv1.SubmitResponse) (*Receipt, error) {
	id := env.ID
	if resp.GetMessageId() != id {
		return nil, fmt.Errorf("the node confirmed message %q instead", resp.GetMessageId())
	}
	envDigest := envelope.Digest(envBytes)
	r := &Receipt{MessageID: id}
	chains := map[string][]evidence.Link{}
	for i, pb := range resp.GetEvidence() {
		ev, err := c.verifyEvidence(pb, id)
		if err != nil {
			return nil, fmt.Errorf("evidence %d: %w", i+1, err)
		}
		st := ev.Statement
		switch {
		case st.Sender != c.addr, st.EnvelopeSHA256 != envDigest, st.PayloadSHA256 != env.PayloadSHA256:
			return nil, fmt.Errorf("evidence %d (%s) names another sender, envelope or payload", i+1, st.Type)
		case !slices.Contains(env.To, st.Recipient):
			return nil, fmt.Errorf("evidence %d (%s) is about %q, not a recipient of the message", i+1, st.Type, st.Recipient)
		}
		chains[st.Recipient] = append(chains[st.Recipient], ev.link())
		r.Evidence = append(r.Evidence, ev)
	}
	for _, to := range env.To {
		links := chains[to]
		if len(links) == 0 || links[0].Statement.Type != evidence.SubmissionAcceptance {
			return nil, fmt.Errorf("no SubmissionAcceptance for %s in the node's answer", to)
		}
		if err := evidence.CheckChain(links); err != nil {
			return nil, fmt.Errorf("evidence for %s: %w", to, err)
		}
	}
	return r, nil
}

// submitError turns a failed Submit into the error Send returns.
func (c *Client) submitError(id string, err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("send %s: %w", id, err)
	}
	for _, d := range st.Details() {
		rej, ok := d.(*kurierv1.SubmissionRejected)
		if !ok {
			continue
		}
		re := &RejectedError{MessageID: id, Code: st.Code(), Message: st.Message(), st: st, kinds: kindsOf(st)}
		ev, verr := c.verifyEvidence(rej.GetEvidence(), id)
		switch {
		case verr != nil:
			c.log.Warn("rejection evidence does not verify", slog.String(logKeyMsgID, id), slog.Any("err", verr))
		case ev.Type() != evidence.SubmissionRejection || ev.Statement.Sender != c.addr:
			c.log.Warn("rejection evidence is not a SubmissionRejection of ours", slog.String(logKeyMsgID, id), slog.String("type", string(ev.Type())))
		default:
			re.Evidence = &ev
		}
		return re
	}
	return fmt.Errorf("send %s: %w", id, err)
}
