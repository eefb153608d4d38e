package rpc

import (
	"context"
	"fmt"

	"kurier.dev/kurier/broker"
	kurierv1 "kurier.dev/kurier/proto/kurier/v1"
)

// GetCheckpoint returns the node's latest signed checkpoint.
func (s *service) GetCheckpoint(ctx context.Context, _ *kurierv1.GetCheckpointRequest) (*kurierv1.GetCheckpointResponse, error) {
	if _, err := callerOf(ctx); err != nil {
		return nil, err
	}
	signed, c, err := s.node.Checkpoint(ctx)
	if err != nil {
		s.logRefusal(ctx, "checkpoint", err)
		return nil, toStatus(err)
	}
	key, sig := s.node.LogKey()
	return &kurierv1.GetCheckpointResponse{Checkpoint: signed, TreeSize: c.Size, LogKey: key, LogKeySignature: sig}, nil
}

// GetInclusionProof proves one leaf in a tree size.
func (s *service) GetInclusionProof(ctx context.Context, req *kurierv1.GetInclusionProofRequest) (*kurierv1.GetInclusionProofResponse, error) {
	if _, err := callerOf(ctx); err != nil {
		return nil, err
	}
	p, size, err := s.node.InclusionProof(ctx, req.GetLeafIndex(), req.GetTreeSize())
	if err != nil {
		return nil, toStatus(err)
	}
	return &kurierv1.GetInclusionProofResponse{LeafIndex: req.GetLeafIndex(), TreeSize: size, Hashes: p}, nil
}

// GetConsistencyProof proves that one tree size extends another.
func (s *service) GetConsistencyProof(ctx context.Context, req *kurierv1.GetConsistencyProofRequest) (*kurierv1.GetConsistencyProofResponse, error) {
	if _, err := callerOf(ctx); err != nil {
		return nil, err
	}
	if req.GetFromSize() == 0 && req.GetToSize() == 0 {
		return nil, toStatus(fmt.Errorf("%w: from_size 0 needs no proof", broker.ErrInvalid))
	}
	p, size, err := s.node.ConsistencyProof(ctx, req.GetFromSize(), req.GetToSize())
	if err != nil {
		return nil, toStatus(err)
	}
	return &kurierv1.GetConsistencyProofResponse{FromSize: req.GetFromSize(), ToSize: size, Hashes: p}, nil
}
