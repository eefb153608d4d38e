package main

import (
	"fmt"
	"path/filepath"
	"slices"

	"kurier.dev/kurier/client"
	"kurier.dev/kurier/envelope"
)

type fetchedJSON struct {
	ID        string       `json:"id"`
	From      string       `json:"from"`
	Subject   string       `json:"subject"`
	Type      string       `json:"type"`
	Reference string       `json:"reference"`
	Files     []string     `json:"files"`
	Retrieval evidenceJSON `json:"retrieval"`
	// Acknowledgement is set with --ack.
	Acknowledgement *evidenceJSON `json:"acknowledgement,omitempty"`
	// Sealed and Signed are the kept originals (--keep-sealed).
	Sealed string `json:"sealed,omitempty"`
	Signed string `json:"signed,omitempty"`
}

// kept lists the originals a fetch kept.
func kept(f *client.Fetched) []string {
	if f.Sealed == "" {
		return nil
	}
	return []string{f.Sealed, f.Signed}
}

func (e *env) fetch(args []string) error {
	c := newCommand("fetch", e.stderr)
	mf := c.mailboxFlags()
	out := c.String("o", ".", "folder to write the documents into; created if missing")
	ack := c.Bool("ack", false, "acknowledge the message (Empfangsbekenntnis) once it is opened and written")
	keep := c.Bool("keep-sealed", false, "also keep "+client.SealedFile+" (the payload as delivered, encrypted to you) and "+client.SignedFile+" (the sender-signed original) beside the documents, for the archive")
	perMessage := c.Bool("per-message", false, "write into a new folder DIR/ID, so that messages never share a folder")
	id, err := c.parseID(args)
	if err != nil {
		return err
	}
	if *perMessage {
		if err := envelope.CheckID(id); err != nil {
			return fmt.Errorf("fetch: %w", err)
		}
		*out = filepath.Join(*out, id)
	}
	cl, err := e.dial(mf)
	if err != nil {
		return err
	}
	defer cl.Close()
	f, err := cl.FetchWith(e.ctx, id, client.FetchOptions{Dir: *out, KeepSealed: *keep})
	if err != nil {
		return rejectHint(err, id)
	}
	var ackJ *evidenceJSON
	if *ack {
		ev, err := cl.Acknowledge(e.ctx, f)
		if err != nil {
			return fmt.Errorf("the documents are written, but: %w", err)
		}
		j := toEvidenceJSON(*ev, "")
		ackJ = &j
	}
	if c.json {
		return e.printJSON(fetchedJSON{
			ID: f.MessageID, From: f.Envelope.From, Subject: f.Envelope.Subject, Type: f.Envelope.Type,
			Reference: f.Envelope.Reference, Files: f.Files, Sealed: f.Sealed, Signed: f.Signed,
			Retrieval: toEvidenceJSON(*f.Retrieval, ""), Acknowledgement: ackJ,
		})
	}
	for _, p := range append(slices.Clip(f.Files), kept(f)...) {
		if _, err := fmt.Fprintln(e.stdout, printable(p)); err != nil {
			return err
		}
	}
	if ackJ != nil {
		_, err = fmt.Fprintf(e.stdout, "acknowledged %s at %s (evidence SHA-256 %s)\n", id, ackJ.Time, ackJ.SHA256)
	}
	return err
}
