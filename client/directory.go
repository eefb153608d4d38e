package client

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"kurier.dev/kurier/address"
	kurierv1 "kurier.dev/kurier/proto/kurier/v1"
)

// ErrNoMailbox is returned by Lookup for an address without a mailbox.
var ErrNoMailbox = errors.New("no mailbox")

// noMailbox is the error for an address without a mailbox: it wraps
// ErrNoMailbox, and status.Code reads it as NotFound, as the node's own
// refusals of unknown recipients are.
type noMailbox struct{ addr string }

func (e *noMailbox) Error() string { return ErrNoMailbox.Error() + " " + e.addr }

// Unwrap makes it both ErrNoMailbox and, as the node's refusal of the
// same address is, ErrUnknownRecipient.
func (e *noMailbox) Unwrap() []error { return []error{ErrNoMailbox, ErrUnknownRecipient} }

// GRPCStatus makes the error NotFound for status.Code.
func (e *noMailbox) GRPCStatus() *status.Status { return status.New(codes.NotFound, e.Error()) }

// Entry is a directory entry, as the home node answers for an address of
// its own domains or of another node's.
type Entry struct {
	Address     string
	DisplayName string
	Kind        string
	// EncryptionCert is the certificate senders encrypt to, checked.
	EncryptionCert *x509.Certificate
}

// Lookup asks the home node's directory about addr; the node asks the
// node of addr's domain where that is another. It returns an error
// wrapping ErrNoMailbox if there is no such mailbox.
//
// Security: the encryption certificate is checked before it is returned:
// issued under the trust anchors, valid now, for emailProtection and key
// encipherment, naming exactly addr, RSA of at least 3072 bits. This is
// what stops a node (or a directory entry gone wrong) from substituting a
// key.
func (c *Client) Lookup(ctx context.Context, addr string) (*Entry, error) {
	if _, err := address.Parse(addr); err != nil {
		return nil, fmt.Errorf("look up: %w", err)
	}
	resp, err := c.directory.Lookup(ctx, &kurierv1.LookupRequest{Address: addr})
	if err != nil {
		return nil, fmt.Errorf("look up %s: %w", addr, err)
	}
	if !resp.GetExists() {
		return nil, &noMailbox{addr}
	}
	entry := resp.GetEntry()
	if entry.GetAddress() != addr {
		return nil, fmt.Errorf("look up %s: the directory answered for %q", addr, entry.GetAddress())
	}
	cert, err := x509.ParseCertificate(entry.GetEncryptionCertificate())
	if err != nil {
		return nil, fmt.Errorf("encryption certificate of %s: %w", addr, err)
	}
	if err := checkEncryptionCert(cert, addr); err != nil {
		return nil, fmt.Errorf("encryption certificate of %s: %w", addr, err)
	}
	if _, err := c.trustStore().Verify(cert, nil, c.now(), emailProtection...); err != nil {
		return nil, fmt.Errorf("encryption certificate of %s: %w", addr, err)
	}
	return &Entry{Address: addr, DisplayName: entry.GetDisplayName(), Kind: entry.GetKind(), EncryptionCert: cert}, nil
}
