package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"
)

type directoryJSON struct {
	Address     string `json:"address"`
	DisplayName string `json:"display_name"`
	Kind        string `json:"kind"`
	// The encryption certificate's subject, validity and SHA-256.
	Certificate string `json:"certificate"`
	NotAfter    string `json:"not_after"`
	SHA256      string `json:"certificate_sha256"`
}

// directory prints what the home node's directory answers for an address,
// of its own domains or another node's.
func (e *env) directory(args []string) error {
	c := newCommand("directory", e.stderr)
	mf := c.mailboxFlags()
	pos, err := c.parse(args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("directory: one address expected, got %q", pos)
	}
	cl, err := e.dial(mf)
	if err != nil {
		return err
	}
	defer cl.Close()
	entry, err := cl.Lookup(e.ctx, pos[0])
	if err != nil {
		return err
	}
	sum := sha256.Sum256(entry.EncryptionCert.Raw)
	out := directoryJSON{
		Address: entry.Address, DisplayName: entry.DisplayName, Kind: entry.Kind,
		Certificate: entry.EncryptionCert.Subject.String(),
		NotAfter:    entry.EncryptionCert.NotAfter.UTC().Format(time.RFC3339),
		SHA256:      hex.EncodeToString(sum[:]),
	}
	if c.json {
		return e.printJSON(out)
	}
	_, err = fmt.Fprintf(e.stdout, "%s\n  name:        %s\n  kind:        %s\n  encrypt to:  %s (valid until %s)\n  SHA-256:     %s\n",
		printable(out.Address), printable(out.DisplayName), printable(out.Kind), printable(out.Certificate), out.NotAfter, out.SHA256)
	return err
}
