package rpc

import (
	"crypto/rand"
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	kurierv1 "kurier.dev/kurier/proto/kurier/v1"
)

// The hand-decoded chunk frames decode exactly as the proto codec decodes
// them, and every other frame is left to the proto codec.
func TestHostileChunkFrames(t *testing.T) {
	chunk := make([]byte, 256<<10)
	rand.Read(chunk)
	frame := func(m proto.Message) []byte {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	submit := frame(&kurierv1.SubmitRequest{Part: &kurierv1.SubmitRequest_Chunk{Chunk: chunk}})
	relay := frame(&kurierv1.RelayRequest{Part: &kurierv1.RelayRequest_Chunk{Chunk: chunk}})
	withUnknown := protowire.AppendVarint(protowire.AppendTag(append([]byte(nil), submit...), 9, protowire.VarintType), 1)
	envelope := frame(&kurierv1.SubmitRequest{Part: &kurierv1.SubmitRequest_Envelope{Envelope: &kurierv1.SignedEnvelope{Envelope: chunk}}})
	short := frame(&kurierv1.SubmitRequest{Part: &kurierv1.SubmitRequest_Chunk{Chunk: chunk[:100]}})
	tests := []struct {
		name string
		data mem.BufferSlice
		msg  func() proto.Message
		hand bool
	}{
		{"submit chunk", mem.BufferSlice{mem.SliceBuffer(submit)}, func() proto.Message { return &kurierv1.SubmitRequest{} }, true},
		{"relay chunk", mem.BufferSlice{mem.SliceBuffer(relay)}, func() proto.Message { return &kurierv1.RelayRequest{} }, true},
		{"chunk in pieces", mem.BufferSlice{mem.SliceBuffer(submit[:7]), mem.SliceBuffer(submit[7:1000]), mem.SliceBuffer(submit[1000:])}, func() proto.Message { return &kurierv1.SubmitRequest{} }, true},
		{"tag split from its length", mem.BufferSlice{mem.SliceBuffer(submit[:1]), mem.SliceBuffer(submit[1:])}, func() proto.Message { return &kurierv1.SubmitRequest{} }, false},
		{"chunk and an unknown field", mem.BufferSlice{mem.SliceBuffer(withUnknown)}, func() proto.Message { return &kurierv1.SubmitRequest{} }, false},
		{"envelope", mem.BufferSlice{mem.SliceBuffer(envelope)}, func() proto.Message { return &kurierv1.SubmitRequest{} }, false},
		{"small chunk", mem.BufferSlice{mem.SliceBuffer(short)}, func() proto.Message { return &kurierv1.SubmitRequest{} }, false},
		{"length beyond the frame", mem.BufferSlice{mem.SliceBuffer(submit[:len(submit)-1])}, func() proto.Message { return &kurierv1.SubmitRequest{} }, false},
		{"another message", mem.BufferSlice{mem.SliceBuffer(submit)}, func() proto.Message { return &kurierv1.FetchRequest{} }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.msg()
			if hand := decodeChunk(tt.data, got); hand != tt.hand {
				t.Fatalf("decoded by hand: %v, want %v", hand, tt.hand)
			}
			if !tt.hand {
				return
			}
			want := tt.msg()
			if err := proto.Unmarshal(tt.data.Materialize(), want); err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(got, want) {
				t.Error("decoded otherwise than the proto codec decodes it")
			}
			var c []byte
			switch m := got.(type) {
			case *kurierv1.SubmitRequest:
				c = m.GetChunk()
			case *kurierv1.RelayRequest:
				c = m.GetChunk()
			}
			releaseChunk(c)
			// A buffer handed back is written whole before it is used again.
			again := tt.msg()
			if !decodeChunk(tt.data, again) || !proto.Equal(again, want) {
				t.Error("a frame decoded into a reused buffer differs")
			}
		})
	}
}
