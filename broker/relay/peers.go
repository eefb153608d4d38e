// Package relay is the node's side of the federation that reaches out: it
// dials the nodes of other domains over mutual TLS with the node's own
// certificate, asks their directories about recipients, relays queued
// messages to them with retries and backoff, and sends evidence back to
// senders' nodes. The decisions (what to relay, what an answer proves) are
// broker/node's; this package moves bytes and keeps the schedule.
package relay

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"kurier.dev/kurier/address"
	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/broker/node"
	"kurier.dev/kurier/pki"
	kurierv1 "kurier.dev/kurier/proto/kurier/v1"
	"kurier.dev/kurier/tlog"
)

// Transport settings, as for clients: 256 KiB chunks, large windows.
const (
	chunkSize        = 256 << 10
	maxRecvMsgSize   = 16 << 20
	streamWindowSize = 8 << 20
	connWindowSize   = 16 << 20
	// lookupTimeout bounds a directory question to another node, so that a
	// node that does not answer delays a submission only this long.
	lookupTimeout = 5 * time.Second
	// DefaultWakeWait is how long a failed connection may take to come up
	// again before a call is tried on it.
	DefaultWakeWait = 2 * time.Second
)

// Peers holds a connection to each configured peer node and implements
// node.Peers. Its methods are safe for concurrent use.
type Peers struct {
	id    *pki.Identity
	trust *pki.TrustStore
	addrs map[string]string // domain → host:port

	// WakeWait is how long a connection that failed before may take to
	// come up again before a call is made on it (see conn); default
	// DefaultWakeWait. Set it before the first call.
	WakeWait time.Duration

	mu     sync.Mutex
	conns  map[string]*grpc.ClientConn
	closed bool
}

var _ node.Peers = (*Peers)(nil)

// NewPeers returns the peers at addrs (domain → host:port), reached as the
// node id. Each peer must prove a node certificate for its domain that
// verifies under trust and is not revoked. Connections are made on first
// use.
func NewPeers(id *pki.Identity, trust *pki.TrustStore, addrs map[string]string) (*Peers, error) {
	if pr, err := id.Peer(); err != nil || pr.Kind != pki.KindNode {
		return nil, fmt.Errorf("peers: the identity is not a node's: %v", err)
	}
	for d, a := range addrs {
		if err := address.CheckDomain(d); err != nil || a == "" {
			return nil, fmt.Errorf("peers: %q → %q is not a domain and an address", d, a)
		}
	}
	return &Peers{id: id, trust: trust, addrs: maps.Clone(addrs), WakeWait: DefaultWakeWait, conns: map[string]*grpc.ClientConn{}}, nil
}

// Knows reports whether a node is configured for domain.
func (p *Peers) Knows(domain string) bool { _, ok := p.addrs[domain]; return ok }

// Domains returns the configured peer domains, sorted.
func (p *Peers) Domains() []string { return slices.Sorted(maps.Keys(p.addrs)) }

// conn returns the connection to the node of domain. A connection that
// failed before is woken first and given WakeWait to come up: the relay
// worker spaces its tries itself, and gRPC's own reconnect backoff (up to
// two minutes) would only delay the first try after a peer comes back. A
// connection still down after that fails the call at once.
func (p *Peers) conn(ctx context.Context, domain string) (*grpc.ClientConn, error) {
	c, err := p.cached(domain)
	if err != nil {
		return nil, err
	}
	if c.GetState() == connectivity.TransientFailure {
		c.ResetConnectBackoff()
		ctx, cancel := context.WithTimeout(ctx, p.WakeWait)
		defer cancel()
		c.WaitForStateChange(ctx, connectivity.TransientFailure)
	}
	return c, nil
}

// cached returns the connection to the node of domain, made on first use.
func (p *Peers) cached(domain string) (*grpc.ClientConn, error) {
	addr, ok := p.addrs[domain]
	if !ok {
		return nil, fmt.Errorf("%w: no node is configured for domain %s", broker.ErrNotFound, domain)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, fmt.Errorf("%w: the node is stopping", broker.ErrUnavailable)
	}
	if c := p.conns[domain]; c != nil {
		return c, nil
	}
	c, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(credentials.NewTLS(pki.ClientTLS(p.id, p.trust, domain))),
		grpc.WithInitialWindowSize(streamWindowSize),
		grpc.WithInitialConnWindowSize(connWindowSize),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxRecvMsgSize)),
	)
	if err != nil {
		return nil, fmt.Errorf("dial the node of %s at %s: %w", domain, addr, err)
	}
	p.conns[domain] = c
	return c, nil
}

// Close ends every connection; calls after it fail as Unavailable.
func (p *Peers) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	var errs []error
	for d, c := range p.conns {
		errs = append(errs, c.Close())
		delete(p.conns, d)
	}
	return errors.Join(errs...)
}

// Lookup asks the node of addr's domain for addr's directory entry.
func (p *Peers) Lookup(ctx context.Context, addr string) (node.Participant, bool, error) {
	domain := address.DomainOf(addr)
	c, err := p.conn(ctx, domain)
	if err != nil {
		return node.Participant{}, false, err
	}
	ctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	resp, err := kurierv1.NewDirectoryServiceClient(c).Lookup(ctx, &kurierv1.LookupRequest{Address: addr})
	if err != nil {
		// Whatever the other node says, the sender cannot change it: the
		// operators of the two nodes can. Until then, try again later.
		return node.Participant{}, false, fmt.Errorf("%w: the directory of %s: %w", broker.ErrUnavailable, domain, err)
	}
	if !resp.GetExists() {
		return node.Participant{}, false, nil
	}
	e := resp.GetEntry()
	cert, err := x509.ParseCertificate(e.GetEncryptionCertificate())
	if err != nil {
		return node.Participant{}, false, fmt.Errorf("%w: the directory of %s sent an unreadable certificate for %s: %v", broker.ErrSignature, domain, addr, err)
	}
	return node.Participant{Address: e.GetAddress(), DisplayName: e.GetDisplayName(), Kind: e.GetKind(), EncryptionCert: cert}, true, nil
}

// remoteError keeps another node's status and marks those worth trying
// again later with broker.ErrUnavailable.
func remoteError(err error) error {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted, codes.Aborted, codes.Internal, codes.Unknown:
		return fmt.Errorf("%w: %w", broker.ErrUnavailable, err)
	}
	return err
}

// permanent reports whether another node's refusal will not change when
// the same request is made again.
func permanent(err error) bool {
	switch status.Code(err) {
	case codes.InvalidArgument, codes.PermissionDenied, codes.NotFound, codes.AlreadyExists, codes.Unauthenticated:
		return true
	}
	return false
}

// peerOf returns who the server of a finished call was, from its verified
// certificate, checked against the current CRL: a connection may be older
// than a revocation, and its handshake was the last check until now.
func (p *Peers) peerOf(pr *peer.Peer) (pki.Peer, error) {
	info, ok := pr.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return pki.Peer{}, errors.New("no verified server certificate")
	}
	chain := info.State.VerifiedChains[0]
	if err := p.trust.CheckRevoked(chain); err != nil {
		return pki.Peer{}, fmt.Errorf("%w: %v", broker.ErrSignature, err)
	}
	return pki.PeerOf(chain[0])
}

func toEvidence(ev broker.Evidence) *kurierv1.Evidence {
	return &kurierv1.Evidence{Der: ev.DER, Type: ev.Type, Recipient: ev.Recipient, LeafIndex: ev.LeafIndex, Log: ev.Log}
}

func fromEvidence(pb *kurierv1.Evidence) broker.Evidence {
	return broker.Evidence{DER: pb.GetDer(), Type: pb.GetType(), Recipient: pb.GetRecipient(), LeafIndex: pb.GetLeafIndex(), Log: pb.GetLog()}
}

// LogProofs asks the node whose log has origin for its current checkpoint
// and an inclusion proof of each leaf in it, and checks them: the
// checkpoint must open with the log key the node names and carry that
// origin. (That the key is the node's is checked by whoever relies on it,
// through the node's signature over it.)
func (p *Peers) LogProofs(ctx context.Context, origin string, leaves []uint64) (node.RemoteLog, [][][]byte, error) {
	domain, err := tlog.OriginDomain(origin)
	if err != nil {
		return node.RemoteLog{}, nil, fmt.Errorf("%w: %v", broker.ErrInvalid, err)
	}
	c, err := p.conn(ctx, domain)
	if err != nil {
		return node.RemoteLog{}, nil, err
	}
	logs := kurierv1.NewLogServiceClient(c)
	cp, err := logs.GetCheckpoint(ctx, &kurierv1.GetCheckpointRequest{})
	if err != nil {
		return node.RemoteLog{}, nil, fmt.Errorf("the log of %s: %w", domain, remoteError(err))
	}
	opened, err := tlog.Open(cp.GetCheckpoint(), cp.GetLogKey())
	if err != nil || opened.Origin != origin {
		return node.RemoteLog{}, nil, fmt.Errorf("%w: the node of %s sent a checkpoint of %q that does not open with its log key: %v", broker.ErrSignature, domain, opened.Origin, err)
	}
	rl := node.RemoteLog{Origin: origin, Checkpoint: cp.GetCheckpoint(), TreeSize: opened.Size, LogKey: cp.GetLogKey(), LogKeySignature: cp.GetLogKeySignature()}
	proofs := make([][][]byte, len(leaves))
	for i, leaf := range leaves {
		resp, err := logs.GetInclusionProof(ctx, &kurierv1.GetInclusionProofRequest{LeafIndex: leaf, TreeSize: opened.Size})
		if err != nil {
			return node.RemoteLog{}, nil, fmt.Errorf("the log of %s, leaf %d: %w", domain, leaf, remoteError(err))
		}
		proofs[i] = resp.GetHashes()
	}
	return rl, proofs, nil
}
