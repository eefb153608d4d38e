package rpc

import (
	"context"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"kurier.dev/kurier/broker/node"
	kurierv1 "kurier.dev/kurier/proto/kurier/v1"
)

// maxSentPageSize bounds a page of ListSent lower than the inbox's,
// because each entry carries every recipient's state.
const maxSentPageSize = 100

// maxSentPageBytes bounds a page's encoded size well below what clients
// take in one gRPC message (16 MiB): a node whose max_recipients is the
// envelope's 1000 can have messages of over a megabyte each in the list.
// One message always fits: 1000 recipients with the longest addresses and
// reasons are under 1.3 MB.
// (A variable, so that a test can make it small.)
var maxSentPageBytes = 4 << 20

// ListSent lists one page of the messages the caller sent, newest first.
func (s *service) ListSent(ctx context.Context, req *kurierv1.ListSentRequest) (*kurierv1.ListSentResponse, error) {
	caller, err := callerOf(ctx)
	if err != nil {
		return nil, err
	}
	size, err := pageArgs(req.GetPageSize(), maxSentPageSize, req.GetPageToken())
	if err != nil {
		return nil, toStatus(err)
	}
	for {
		sent, next, err := s.node.Sent(ctx, caller, req.GetPageToken(), size)
		if err != nil {
			return nil, toStatus(err)
		}
		resp := &kurierv1.ListSentResponse{NextPageToken: next, Messages: make([]*kurierv1.SentMessage, 0, len(sent))}
		for _, m := range sent {
			resp.Messages = append(resp.Messages, toSent(m))
		}
		// A page over the budget is asked for again with half as many
		// messages: the cursor is the store's, so the page cannot simply
		// be cut.
		if size == 1 || proto.Size(resp) <= maxSentPageBytes {
			return resp, nil
		}
		size /= 2
	}
}

// toSent converts one entry of the outbox.
func toSent(m node.SentMessage) *kurierv1.SentMessage {
	h := m.Message.Header
	out := &kurierv1.SentMessage{
		MessageId:   h.ID,
		Subject:     h.Subject,
		Type:        h.Type,
		Reference:   h.Reference,
		Created:     timestamppb.New(h.Created),
		Received:    timestamppb.New(m.Message.Received),
		PayloadSize: h.PayloadSize,
		Recipients:  make([]*kurierv1.RecipientState, 0, len(m.Recipients)),
	}
	for _, r := range m.Recipients {
		out.Recipients = append(out.Recipients, &kurierv1.RecipientState{
			Address:      r.Address,
			State:        string(r.State),
			EvidenceType: string(r.Evidence),
			Time:         timestamppb.New(r.Time),
			Reason:       r.Reason,
		})
	}
	return out
}
