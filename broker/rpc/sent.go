package rpc

import (
	"context"

	"google.golang.org/protobuf/types/known/timestamppb"

	"kurier.dev/kurier/broker/node"
	kurierv1 "kurier.dev/kurier/proto/kurier/v1"
)

// maxSentPageSize bounds a page of ListSent lower than the inbox's,
// because each entry carries every recipient's state: 100 messages of up
// to 100 recipients each stay well within one gRPC message.
const maxSentPageSize = 100

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
	sent, next, err := s.node.Sent(ctx, caller, req.GetPageToken(), size)
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &kurierv1.ListSentResponse{NextPageToken: next, Messages: make([]*kurierv1.SentMessage, 0, len(sent))}
	for _, m := range sent {
		resp.Messages = append(resp.Messages, toSent(m))
	}
	return resp, nil
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
