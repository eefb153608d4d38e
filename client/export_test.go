package client

import (
	"context"
	"os"
	"path/filepath"

	"kurier.dev/kurier/pki/cms"
)

// Sealed exposes a sealed message to the tests in package client_test.
type Sealed struct{ s *sealed }

// EnvelopeBytes returns the signed envelope bytes.
func (s Sealed) EnvelopeBytes() []byte { return s.s.envBytes }

// Seal seals m as Send would, without submitting it.
func (c *Client) Seal(ctx context.Context, m Message) (Sealed, error) {
	s, err := c.seal(ctx, m)
	return Sealed{s}, err
}

// Submit submits a sealed message as Send would.
func (c *Client) Submit(ctx context.Context, s Sealed) (*Receipt, error) {
	return c.submit(ctx, s.s, nil)
}

// Open runs the recipient's checks of Fetch on a message given as bytes
// and writes its documents into dir, as Fetch does after the transfer.
func (c *Client) Open(envBytes, sig, payload []byte, dir string) ([]string, error) {
	env, err := c.checkEnvelope(envBytes, sig)
	if err != nil {
		return nil, err
	}
	if err := checkPayload(env, payload); err != nil {
		return nil, err
	}
	staging, err := os.MkdirTemp(dir, stagingPrefix)
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(staging)
	names, _, err := c.unpack(env, payload, staging)
	if err != nil {
		return nil, err
	}
	return commit(filepath.Join(staging, stagedFiles), dir, names)
}

// Reseal returns s with its envelope's subject replaced and signed anew:
// the same message id for different content.
func (c *Client) Reseal(s Sealed, subject string) (Sealed, error) {
	env := *s.s.env
	env.Subject = subject
	envBytes, err := env.Marshal()
	if err != nil {
		return Sealed{}, err
	}
	sig, err := cms.SignDetached(envBytes, c.signer)
	if err != nil {
		return Sealed{}, err
	}
	return Sealed{&sealed{env: &env, envBytes: envBytes, sig: sig, payload: s.s.payload}}, nil
}
