package rpc

import (
	"context"
	"errors"
	"fmt"

	"kurier.dev/kurier/address"
	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/broker/node"
	"kurier.dev/kurier/pki"
	kurierv1 "kurier.dev/kurier/proto/kurier/v1"
)

const maxSearchQuery = 256

// Lookup answers whether an address has a mailbox and which certificate
// to encrypt to: for a participant of this node's domains, here or at the
// node of the address's domain; for anyone else, only for this node's own
// domains, so that nodes never ask each other in circles and nobody uses a
// node to question others.
func (s *service) Lookup(ctx context.Context, req *kurierv1.LookupRequest) (*kurierv1.LookupResponse, error) {
	caller, err := callerOf(ctx)
	if err != nil {
		return nil, err
	}
	a, err := address.Parse(req.GetAddress())
	if err != nil {
		return nil, toStatus(fmt.Errorf("%w: lookup: %v", broker.ErrInvalid, err))
	}
	if !s.node.Serves(a.Domain) {
		var err error
		switch {
		case caller.Kind == pki.KindNode:
			err = fmt.Errorf("%w: this node does not serve %s; the asking node's peers name the wrong node for it", broker.ErrState, a.Domain)
		case !s.node.Serves(address.DomainOf(caller.Address)):
			err = fmt.Errorf("%w: this node asks other nodes only for its own participants; ask your own node", broker.ErrForbidden)
		}
		if err != nil {
			s.logRefusal(ctx, "lookup refused", err)
			return nil, toStatus(err)
		}
	}
	p, err := s.node.Lookup(ctx, req.GetAddress())
	if errors.Is(err, broker.ErrNotFound) {
		return &kurierv1.LookupResponse{Exists: false}, nil
	}
	if err != nil {
		s.logRefusal(ctx, "lookup refused", err)
		return nil, toStatus(err)
	}
	return &kurierv1.LookupResponse{Exists: true, Entry: toEntry(p)}, nil
}

// Search lists directory entries matching a query.
func (s *service) Search(ctx context.Context, req *kurierv1.SearchRequest) (*kurierv1.SearchResponse, error) {
	if _, err := callerOf(ctx); err != nil {
		return nil, err
	}
	if len(req.GetQuery()) > maxSearchQuery {
		return nil, toStatus(fmt.Errorf("%w: search: query longer than %d bytes", broker.ErrInvalid, maxSearchQuery))
	}
	limit := int(req.GetLimit())
	if limit <= 0 || limit > 500 {
		limit = 50
	}
	resp := &kurierv1.SearchResponse{}
	for _, p := range s.node.Search(req.GetQuery(), limit) {
		resp.Entries = append(resp.Entries, toEntry(p))
	}
	return resp, nil
}

// GetCRL returns the CRL the node checks against.
func (s *service) GetCRL(ctx context.Context, _ *kurierv1.GetCRLRequest) (*kurierv1.GetCRLResponse, error) {
	if _, err := callerOf(ctx); err != nil {
		return nil, err
	}
	der, err := s.node.CRL()
	if err != nil {
		s.logRefusal(ctx, "crl", err)
		return nil, toStatus(err)
	}
	return &kurierv1.GetCRLResponse{Crl: der}, nil
}

func toEntry(p node.Participant) *kurierv1.DirectoryEntry {
	return &kurierv1.DirectoryEntry{
		Address:               p.Address,
		DisplayName:           p.DisplayName,
		Kind:                  p.Kind,
		EncryptionCertificate: p.EncryptionCert.Raw,
	}
}
