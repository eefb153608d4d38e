package loadgen

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"kurier.dev/kurier/address"
	"kurier.dev/kurier/client"
	"kurier.dev/kurier/envelope"
	"kurier.dev/kurier/evidence"
	"kurier.dev/kurier/pki"
	"kurier.dev/kurier/pki/cms"
	kurierv1 "kurier.dev/kurier/proto/kurier/v1"
)

// recipient takes a submitted message through the rest of its lifecycle:
// it fetches the message and acknowledges it.
type recipient interface {
	take(ctx context.Context, id string) error
	Close() error
}

// opener is the recipient as the client is one: it opens and verifies each
// message (client.Check) and acknowledges what it opened.
type opener struct{ *client.Client }

func (o opener) take(ctx context.Context, id string) error {
	f, err := o.Check(ctx, id)
	if err != nil {
		return fmt.Errorf("fetch %s: %w", id, err)
	}
	if _, err := o.Acknowledge(ctx, f); err != nil {
		return fmt.Errorf("acknowledge %s: %w", id, err)
	}
	return nil
}

// digestChecker stands for a recipient system that checks what it fetched
// against the envelope's payload digest, hands it on to be opened
// elsewhere, and acknowledges it: it speaks the MailboxService directly,
// because the client acknowledges only what it opened itself. It does not
// verify the envelope's or the node's signatures, so it must only ever be
// pointed at a node under test.
type digestChecker struct {
	conn    *grpc.ClientConn
	mailbox kurierv1.MailboxServiceClient
	signer  cms.Signer
	addr    string
}

// dialDigestChecker connects as id to node, over mutual TLS as the client
// does; crl, if set, is the CRL file to check the node's certificate
// against.
func dialDigestChecker(node string, id *pki.Identity, crl string) (*digestChecker, error) {
	peer, err := id.Peer()
	if err != nil {
		return nil, fmt.Errorf("bench: recipient: %w", err)
	}
	trust, err := pki.NewTrustStore(id.Roots, crl)
	if err != nil {
		return nil, fmt.Errorf("bench: recipient: %w", err)
	}
	tlsConfig := pki.ClientTLS(id, trust, address.DomainOf(peer.Address))
	conn, err := grpc.NewClient(node, grpc.WithTransportCredentials(credentials.NewTLS(tlsConfig)),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(client.MaxPayload+1<<20)))
	if err != nil {
		return nil, fmt.Errorf("bench: connect the recipient to %s: %w", node, err)
	}
	return &digestChecker{conn: conn, mailbox: kurierv1.NewMailboxServiceClient(conn),
		signer: cms.Signer{Cert: id.Cert, Key: id.Key, Chain: id.Chain}, addr: peer.Address}, nil
}

func (d *digestChecker) Close() error { return d.conn.Close() }

func (d *digestChecker) take(ctx context.Context, id string) error {
	retrieval, err := d.fetch(ctx, id)
	if err != nil {
		return fmt.Errorf("fetch %s: %w", id, err)
	}
	ps := retrieval.Statement
	now := time.Now().UTC().Truncate(time.Microsecond)
	if now.Before(ps.Time) {
		now = ps.Time // the node's clock ahead: the answer must not precede it
	}
	st := &evidence.Statement{
		Version:        evidence.StatementVersion,
		Type:           evidence.Acknowledgement,
		MessageID:      id,
		EnvelopeSHA256: ps.EnvelopeSHA256,
		PayloadSHA256:  ps.PayloadSHA256,
		Sender:         ps.Sender,
		Recipient:      d.addr,
		Issuer:         d.addr,
		Time:           now,
		PreviousSHA256: retrieval.Digest(),
	}
	der, err := evidence.Sign(st, d.signer)
	if err != nil {
		return fmt.Errorf("acknowledge %s: %w", id, err)
	}
	if _, err := d.mailbox.Acknowledge(ctx, &kurierv1.AcknowledgeRequest{Evidence: der}); err != nil {
		return fmt.Errorf("acknowledge %s: %w", id, err)
	}
	return nil
}

// fetch reads message id's Fetch stream, checks the payload against the
// envelope's size and SHA-256, and returns the Retrieval evidence that ends
// it, parsed.
func (d *digestChecker) fetch(ctx context.Context, id string) (*evidence.Evidence, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := d.mailbox.Fetch(ctx, &kurierv1.FetchRequest{MessageId: id})
	if err != nil {
		return nil, err
	}
	first, err := stream.Recv()
	if err != nil {
		return nil, err
	}
	env, err := envelope.Parse(first.GetEnvelope().GetEnvelope())
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	var n int64
	var last *kurierv1.Evidence
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		switch part := resp.GetPart().(type) {
		case *kurierv1.FetchResponse_Chunk:
			n += int64(len(part.Chunk))
			h.Write(part.Chunk)
		case *kurierv1.FetchResponse_Evidence:
			last = part.Evidence
		}
	}
	if n != env.PayloadSize || hex.EncodeToString(h.Sum(nil)) != env.PayloadSHA256 {
		return nil, errors.New("the payload does not match the size and SHA-256 the envelope declares")
	}
	ev, err := evidence.Parse(last.GetDer())
	if err != nil {
		return nil, fmt.Errorf("retrieval evidence: %w", err)
	}
	if ev.Statement.Type != evidence.Retrieval || ev.Statement.Recipient != d.addr || ev.Statement.PayloadSHA256 != env.PayloadSHA256 {
		return nil, fmt.Errorf("retrieval evidence: got a %s about %s's copy, want the Retrieval of %s's copy of this payload", ev.Statement.Type, ev.Statement.Recipient, d.addr)
	}
	return ev, nil
}
