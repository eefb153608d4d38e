package main

import (
	"fmt"
	"os"
)

type fetchedJSON struct {
	ID        string       `json:"id"`
	From      string       `json:"from"`
	Subject   string       `json:"subject"`
	Type      string       `json:"type"`
	Reference string       `json:"reference"`
	Files     []string     `json:"files"`
	Retrieval evidenceJSON `json:"retrieval"`
}

func (e *env) fetch(args []string) error {
	c := newCommand("fetch", e.stderr)
	mf := c.mailboxFlags()
	out := c.String("o", ".", "folder to write the documents into; created if missing")
	pos, err := c.parse(args)
	if err != nil {
		return err
	}
	id, err := oneID("fetch", pos)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*out, 0o700); err != nil {
		return fmt.Errorf("fetch: %w", err)
	}
	cl, err := e.dial(mf)
	if err != nil {
		return err
	}
	defer cl.Close()
	f, err := cl.Fetch(e.ctx, id, *out)
	if err != nil {
		return err
	}
	if c.json {
		return e.printJSON(fetchedJSON{
			ID: f.MessageID, From: f.Envelope.From, Subject: f.Envelope.Subject, Type: f.Envelope.Type,
			Reference: f.Envelope.Reference, Files: f.Files, Retrieval: toEvidenceJSON(*f.Retrieval, ""),
		})
	}
	for _, p := range f.Files {
		if _, err := fmt.Fprintln(e.stdout, p); err != nil {
			return err
		}
	}
	return nil
}

type ackJSON struct {
	ID     string `json:"id"`
	Type   string `json:"type"`
	SHA256 string `json:"sha256"`
	Time   string `json:"time"`
}

func (e *env) ack(args []string) error {
	c := newCommand("ack", e.stderr)
	mf := c.mailboxFlags()
	pos, err := c.parse(args)
	if err != nil {
		return err
	}
	id, err := oneID("ack", pos)
	if err != nil {
		return err
	}
	cl, err := e.dial(mf)
	if err != nil {
		return err
	}
	defer cl.Close()
	ev, err := cl.Acknowledge(e.ctx, id)
	if err != nil {
		return err
	}
	j := toEvidenceJSON(*ev, "")
	if c.json {
		return e.printJSON(ackJSON{ID: id, Type: j.Type, SHA256: j.SHA256, Time: j.Time})
	}
	_, err = fmt.Fprintf(e.stdout, "acknowledged %s at %s (evidence SHA-256 %s)\n", id, j.Time, j.SHA256)
	return err
}
