package rpc

import (
	"context"
	"fmt"

	"google.golang.org/grpc"

	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/broker/node"
	"kurier.dev/kurier/pki"
	kurierv1 "kurier.dev/kurier/proto/kurier/v1"
)

// requireNode refuses every caller of the relay service but a node.
func requireNode(ctx context.Context) (pki.Peer, error) {
	caller, err := callerOf(ctx)
	if err != nil {
		return pki.Peer{}, err
	}
	if caller.Kind != pki.KindNode {
		return pki.Peer{}, toStatus(fmt.Errorf("%w: the relay service is for the federation's nodes, not for %s; participants use MailboxService", broker.ErrForbidden, caller))
	}
	return caller, nil
}

// Relay reads the relay header, then hands the chunk stream to the node
// as a reader.
func (s *service) Relay(stream grpc.ClientStreamingServer[kurierv1.RelayRequest, kurierv1.RelayResponse]) error {
	ctx := stream.Context()
	caller, err := requireNode(ctx)
	if err != nil {
		s.logRefusal(ctx, "relay refused", err)
		return err
	}
	first, err := stream.Recv()
	if err != nil {
		if ctx.Err() != nil {
			return toStatus(ctx.Err())
		}
		return toStatus(fmt.Errorf("%w: relay: no header received: %v", broker.ErrInvalid, err))
	}
	h := first.GetHeader()
	if h == nil || h.GetEnvelope() == nil {
		return toStatus(fmt.Errorf("%w: relay: the first frame must carry the header with the signed envelope", broker.ErrInvalid))
	}
	in := node.Incoming{Envelope: h.GetEnvelope().GetEnvelope(), Signature: h.GetEnvelope().GetSignature()}
	if h.GetExpires() != nil {
		in.Expires = h.GetExpires().AsTime()
	}
	if len(h.GetRecipients()) > node.MaxRelayRecipients {
		return toStatus(fmt.Errorf("%w: relay: %d recipients, at most %d", broker.ErrTooLarge, len(h.GetRecipients()), node.MaxRelayRecipients))
	}
	for _, r := range h.GetRecipients() {
		in.Recipients = append(in.Recipients, r.GetAddress())
		var chain []broker.Evidence
		for _, e := range r.GetChain() {
			chain = append(chain, fromEvidence(e))
		}
		in.Chains = append(in.Chains, chain)
	}
	payload := newChunkReader(ctx, stream.Recv, func(req *kurierv1.RelayRequest) ([]byte, bool) {
		if c, ok := req.GetPart().(*kurierv1.RelayRequest_Chunk); ok {
			return c.Chunk, true
		}
		return nil, false
	}, s.upload)
	outcomes, err := s.node.Receive(ctx, caller, in, payload)
	if err != nil {
		s.logRefusal(ctx, "relay refused", err)
		return toStatus(err)
	}
	resp := &kurierv1.RelayResponse{}
	for i, evs := range outcomes {
		resp.Outcomes = append(resp.Outcomes, &kurierv1.RelayOutcome{Address: in.Recipients[i], Evidence: s.toEvidenceList(evs)})
	}
	return stream.SendAndClose(resp)
}

// PushEvidence stores evidence a recipient's node sends back.
func (s *service) PushEvidence(ctx context.Context, req *kurierv1.PushEvidenceRequest) (*kurierv1.PushEvidenceResponse, error) {
	caller, err := requireNode(ctx)
	if err != nil {
		s.logRefusal(ctx, "evidence refused", err)
		return nil, err
	}
	if req.GetEvidence() == nil {
		return nil, toStatus(fmt.Errorf("%w: no evidence", broker.ErrInvalid))
	}
	if err := s.node.ReceiveEvidence(ctx, caller, fromEvidence(req.GetEvidence())); err != nil {
		s.logRefusal(ctx, "evidence refused", err)
		return nil, toStatus(err)
	}
	return &kurierv1.PushEvidenceResponse{}, nil
}
