package pki

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
)

// Log attribute keys.
const (
	logKeyPeer    = "peer"
	logKeyReason  = "reason"
	logKeyResumed = "resumed"
)

// ServerTLS returns the TLS configuration of a node's listener: TLS 1.3
// only, a client certificate required and verified against t's roots, and
// id as the server certificate.
//
// Its VerifyConnection checks that the client certificate is a participant
// or a node (PeerOf) and not revoked (t.CheckRevoked). It runs on every
// handshake, including TLS 1.3 session resumption, which skips
// VerifyPeerCertificate: a client revoked after its first connection cannot
// come back on a session ticket. A refused client only sees "broken pipe"
// or "bad certificate", so the reason is logged here at Warn with the
// peer's subject. What a peer may do is decided later, from PeerOf.
func ServerTLS(id *Identity, t *TrustStore, logger *slog.Logger) *tls.Config {
	if logger == nil {
		logger = slog.Default()
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    t.Roots(),
		Certificates: []tls.Certificate{id.TLSCertificate()},
		VerifyConnection: func(cs tls.ConnectionState) error {
			err := verifyClient(cs, t)
			if err != nil {
				subject := "(no certificate)"
				if len(cs.PeerCertificates) > 0 {
					subject = cs.PeerCertificates[0].Subject.String()
				}
				logger.LogAttrs(context.Background(), slog.LevelWarn, "tls client refused",
					slog.String(logKeyPeer, subject),
					slog.Bool(logKeyResumed, cs.DidResume),
					slog.String(logKeyReason, err.Error()))
			}
			return err
		},
	}
}

func verifyClient(cs tls.ConnectionState, t *TrustStore) error {
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return errors.New("client certificate not verified")
	}
	leaf := cs.VerifiedChains[0][0]
	p, err := PeerOf(leaf)
	if err != nil {
		return fmt.Errorf("client certificate: %w", err)
	}
	if err := t.CheckRevoked(cs.VerifiedChains[0]); err != nil {
		return fmt.Errorf("client %s: %w", p, err)
	}
	return nil
}

// ClientTLS returns the TLS configuration for connecting to a node: TLS
// 1.3, id as the client certificate, t's roots, and serverDomain as the
// name the server must prove. Clients name their home node by the domain of
// their own address (stadt.example), whatever address they dial; nodes name
// the peer node by the recipient's domain.
//
// Its VerifyConnection checks that the server certificate is a node (PeerOf)
// that serves serverDomain and, when t has a CRL, that it is not revoked.
func ClientTLS(id *Identity, t *TrustStore, serverDomain string) *tls.Config {
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		RootCAs:    t.Roots(),
		ServerName: serverDomain,
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyServer(cs, t, serverDomain)
		},
	}
	if id != nil {
		cfg.Certificates = []tls.Certificate{id.TLSCertificate()}
	}
	return cfg
}

func verifyServer(cs tls.ConnectionState, t *TrustStore, serverDomain string) error {
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return errors.New("server certificate not verified")
	}
	leaf := cs.VerifiedChains[0][0]
	p, err := PeerOf(leaf)
	if err != nil {
		return fmt.Errorf("server certificate: %w", err)
	}
	if p.Kind != KindNode {
		return fmt.Errorf("server certificate is a %s's, not a node's: %w", p.Kind, ErrUnknownIdentity)
	}
	if !p.Serves(serverDomain) {
		return fmt.Errorf("server %s does not serve %s", p, serverDomain)
	}
	if err := t.CheckRevoked(cs.VerifiedChains[0]); err != nil {
		return fmt.Errorf("server %s: %w", p, err)
	}
	return nil
}
