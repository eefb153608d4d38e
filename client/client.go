package client

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"kurier.dev/kurier/address"
	"kurier.dev/kurier/pki"
	"kurier.dev/kurier/pki/cms"
	kurierv1 "kurier.dev/kurier/proto/kurier/v1"
)

// MaxPayload is the largest sealed payload the client sends or opens: the
// node's default limit. It bounds the temporary files of sealing and
// opening, not memory, which does not grow with the payload.
const MaxPayload = 256 << 20

// Transport settings: payload chunks of 256 KiB, the fastest over loopback
// mutual TLS, with windows large enough to keep a long link busy. A message
// from the node may have up to 16 MiB, room for a page of 1000 inbox
// summaries.
const (
	chunkSize        = 256 << 10
	maxRecvMsgSize   = 16 << 20
	streamWindowSize = 8 << 20
	connWindowSize   = 16 << 20
	logKeyMsgID      = "msg_id"
	logKeyAttempt    = "attempt"
)

// DefaultRetryFor is how long Send, Seal and Submit keep trying while the
// node cannot be reached (WithRetry).
const DefaultRetryFor = 2 * time.Minute

// emailProtection is the usage that participant signatures and encryption
// certificates carry.
var emailProtection = []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}

// Client is a participant's connection to its home node. Its methods are
// safe for concurrent use.
type Client struct {
	conn      *grpc.ClientConn
	mailbox   kurierv1.MailboxServiceClient
	directory kurierv1.DirectoryServiceClient
	tlog      kurierv1.LogServiceClient
	id        *pki.Identity
	addr      string
	signer    cms.Signer
	log       *slog.Logger
	now       func() time.Time
	retryFor  time.Duration

	// crlFromNode: no WithCRL was given, so signatures are checked against
	// the CRL the node serves (see refreshCRL).
	crlFromNode bool
	trustMu     sync.Mutex // guards trust and crlAt
	trust       *pki.TrustStore
	crlAt       time.Time // when trust's CRL was fetched from the node
}

// crlRefresh is how long a CRL fetched from the node is used before the
// client asks for the current one again.
const crlRefresh = 10 * time.Minute

// Option configures Dial.
type Option func(*options)

type options struct {
	crl      string
	logger   *slog.Logger
	now      func() time.Time
	retryFor *time.Duration
}

// WithRetry sets how long Send, Seal and Submit keep trying while the node
// cannot be reached or a try's outcome is unknown; default
// DefaultRetryFor, 0 for one try only.
func WithRetry(d time.Duration) Option { return func(o *options) { o.retryFor = &d } }

// WithCRL makes the client check the node's certificate at the handshake,
// and every signer's certificate, against the CA's CRL at path (PEM or
// DER). The file is re-read when it changes; a missing, forged or stale CRL
// fails every check. Without it the client checks signers against the CRL
// its node serves (signed by the CA, so the node cannot forge it), but
// cannot check the node's own certificate at the handshake.
func WithCRL(path string) Option { return func(o *options) { o.crl = path } }

// WithLogger sets the logger for retries and other events worth noting;
// default slog.Default().
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithClock sets the clock used for certificate checks and the times the
// client signs; default time.Now.
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// Dial returns a client of the node at node (host:port) acting as the
// participant id. The node must prove a certificate for the domain of id's
// own address, whatever host name or IP node names. Dial does not wait for
// the connection; the first call makes it.
//
// node may list several processes of the same node,
// host1:port,host2:port (see ParseNodes): the client keeps a connection
// to each and spreads its calls over those that answer, so it keeps
// working while one process is stopped or dead, and a call retried
// (WithRetry) goes to another. Each of them must prove the same
// certificate check.
func Dial(ctx context.Context, node string, id *pki.Identity, opts ...Option) (*Client, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if o.logger == nil {
		o.logger = slog.Default()
	}
	if o.now == nil {
		o.now = time.Now
	}
	if id == nil || id.Cert == nil || id.Key == nil {
		return nil, errors.New("dial: no identity")
	}
	nodes, err := ParseNodes(node)
	if err != nil {
		return nil, fmt.Errorf("dial: node %q: %w", node, err)
	}
	peer, err := id.Peer()
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	if peer.Kind != pki.KindParticipant {
		return nil, fmt.Errorf("dial: the identity is a %s; mailboxes need a participant identity", peer)
	}
	trust, err := pki.NewTrustStore(id.Roots, o.crl)
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	tlsConfig := pki.ClientTLS(id, trust, address.DomainOf(peer.Address))
	target, listOpts := dialTarget(nodes)
	conn, err := grpc.NewClient(target, append(listOpts,
		grpc.WithTransportCredentials(credentials.NewTLS(tlsConfig)),
		grpc.WithInitialWindowSize(streamWindowSize),
		grpc.WithInitialConnWindowSize(connWindowSize),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxRecvMsgSize)),
		grpc.WithChainUnaryInterceptor(unaryRefusals),
		grpc.WithChainStreamInterceptor(streamRefusals),
	)...)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", node, err)
	}
	return &Client{
		conn:      conn,
		mailbox:   kurierv1.NewMailboxServiceClient(conn),
		directory: kurierv1.NewDirectoryServiceClient(conn),
		tlog:      kurierv1.NewLogServiceClient(conn),
		id:        id,
		addr:      peer.Address,
		signer:    cms.Signer{Cert: id.Cert, Key: id.Key, Chain: id.Chain},
		log:       o.logger,
		now:       o.now,
		retryFor:  retryFor(o.retryFor),

		crlFromNode: o.crl == "",
		trust:       trust,
	}, nil
}

func retryFor(d *time.Duration) time.Duration {
	if d == nil {
		return DefaultRetryFor
	}
	return max(*d, 0)
}

// refreshCRL makes sure that, unless WithCRL was given, signatures are
// checked against the CRL the node serves, fetched again every crlRefresh.
// The CRL is signed by the CA, so taking it from the node needs no trust in
// the node. A CRL that cannot be had fails the call: revocation is never
// skipped silently.
func (c *Client) refreshCRL(ctx context.Context) error {
	if !c.crlFromNode {
		return nil
	}
	c.trustMu.Lock()
	defer c.trustMu.Unlock()
	if !c.crlAt.IsZero() && c.now().Sub(c.crlAt) < crlRefresh {
		return nil
	}
	resp, err := c.directory.GetCRL(ctx, &kurierv1.GetCRLRequest{})
	if err != nil {
		return fmt.Errorf("get the CA's CRL from the node: %w", err)
	}
	t, err := pki.NewTrustStoreWithCRL(c.id.Roots, resp.GetCrl())
	if err != nil {
		return fmt.Errorf("the CRL the node sent: %w", err)
	}
	c.trust, c.crlAt = t, c.now()
	return nil
}

// trustStore returns the trust store signatures are checked with.
func (c *Client) trustStore() *pki.TrustStore {
	c.trustMu.Lock()
	defer c.trustMu.Unlock()
	return c.trust
}

// Close ends the connection to the node.
func (c *Client) Close() error { return c.conn.Close() }

// Address returns the participant's own address, as its certificate names
// it.
func (c *Client) Address() string { return c.addr }

// participantPolicy is the policy for signatures by participants: a chain
// to the trust anchors now, with the emailProtection usage.
func (c *Client) participantPolicy(maxSize int) cms.Policy {
	return cms.Policy{Trust: c.trustStore(), At: c.now(), KeyUsages: emailProtection, MaxSize: maxSize}
}

// signedBy checks that cert is a participant certificate of addr.
func signedBy(cert *x509.Certificate, addr string) error {
	p, err := pki.PeerOf(cert)
	if err != nil {
		return err
	}
	if p.Kind != pki.KindParticipant || p.Address != addr {
		return fmt.Errorf("signed by %s, not by %s", p, addr)
	}
	return nil
}

// sleep waits for d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
