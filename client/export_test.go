package client

import (
	"context"
	"io"
	"os"
	"path/filepath"

	"kurier.dev/kurier/envelope"
	"kurier.dev/kurier/evidence/bundle"
	"kurier.dev/kurier/pki/cms"
	kurierv1 "kurier.dev/kurier/proto/kurier/v1"
)

// VerifyEvidence runs the client's checks of one evidence file about
// message id, as every evidence the client accepts goes through them.
func (c *Client) VerifyEvidence(der []byte, id string) (Evidence, error) {
	return c.verifyEvidence(&kurierv1.Evidence{Der: der}, id)
}

// Open runs the recipient's checks of Fetch on a message given as bytes
// and writes its documents into dir, as Fetch does: the payload goes
// through the same receive path, streamed in chunks and followed by an
// evidence frame, which Open does not check.
func (c *Client) Open(envBytes, sig, payload []byte, dir string) ([]string, error) {
	env, err := c.checkEnvelope(envBytes, sig)
	if err != nil {
		return nil, err
	}
	staging, err := os.MkdirTemp(dir, stagingPrefix)
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(staging)
	f, _, err := receive(newFrames(payload), env, filepath.Join(staging, "payload.p7m"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, _, err := c.unpack(env, f, staging, true, "")
	if err != nil {
		return nil, err
	}
	return commit(filepath.Join(staging, stagedFiles), dir, names)
}

// frames is a Fetch stream held in memory.
type frames []*kurierv1.FetchResponse

// newFrames returns the frames a node sends for payload: its chunks, then
// an (empty) evidence frame.
func newFrames(payload []byte) *frames {
	var f frames
	for off := 0; off < len(payload); off += chunkSize {
		end := min(off+chunkSize, len(payload))
		f = append(f, &kurierv1.FetchResponse{Part: &kurierv1.FetchResponse_Chunk{Chunk: payload[off:end]}})
	}
	f = append(f, &kurierv1.FetchResponse{Part: &kurierv1.FetchResponse_Evidence{Evidence: &kurierv1.Evidence{}}})
	return &f
}

// Recv returns the next frame, then io.EOF.
func (f *frames) Recv() (*kurierv1.FetchResponse, error) {
	if len(*f) == 0 {
		return nil, io.EOF
	}
	r := (*f)[0]
	*f = (*f)[1:]
	return r, nil
}

// Reseal returns s with its envelope's subject replaced and signed anew:
// the same message id for different content.
func (c *Client) Reseal(s *Sealed, subject string) (*Sealed, error) {
	env, err := envelope.Parse(s.Envelope)
	if err != nil {
		return nil, err
	}
	env.Subject = subject
	envBytes, err := env.Marshal()
	if err != nil {
		return nil, err
	}
	sig, err := cms.SignDetached(envBytes, c.signer)
	if err != nil {
		return nil, err
	}
	return &Sealed{ID: s.ID, Envelope: envBytes, Signature: sig, Payload: s.Payload, file: s.file}, nil
}

// ExportResponse returns the node's answer to the export of id, as Export
// gets it.
func (c *Client) ExportResponse(ctx context.Context, id string) (*kurierv1.ExportMessageResponse, error) {
	return c.mailbox.ExportMessage(ctx, &kurierv1.ExportMessageRequest{MessageId: id})
}

// Assemble turns a node's export answer into a bundle, as Export does.
func (c *Client) Assemble(id string, resp *kurierv1.ExportMessageResponse) (*bundle.Bundle, error) {
	return c.assemble(id, resp)
}
