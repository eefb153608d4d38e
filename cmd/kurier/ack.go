package main

import (
	"errors"
	"fmt"

	"kurier.dev/kurier/client"
	"kurier.dev/kurier/evidence"
)

type ackJSON struct {
	ID     string `json:"id"`
	Type   string `json:"type"`
	SHA256 string `json:"sha256"`
	Time   string `json:"time"`
	Reason string `json:"reason,omitempty"`
}

// ack signs and sends the acknowledgement (Empfangsbekenntnis) of a
// message. The client signs only for what it has opened and verified, so
// the message is fetched and checked again first (nothing is written).
func (e *env) ack(args []string) error {
	c := newCommand("ack", e.stderr)
	mf := c.mailboxFlags()
	id, err := c.parseID(args)
	if err != nil {
		return err
	}
	cl, err := e.dial(mf)
	if err != nil {
		return err
	}
	defer cl.Close()
	f, err := cl.Check(e.ctx, id)
	if err != nil {
		return fmt.Errorf("acknowledge %s: %w", id, rejectHint(err, id))
	}
	return e.acknowledge(c, cl, f)
}

// acknowledge acknowledges the fetched message f and prints the evidence.
func (e *env) acknowledge(c *command, cl *client.Client, f *client.Fetched) error {
	ev, err := cl.Acknowledge(e.ctx, f)
	if err != nil {
		return err
	}
	return e.printAnswer(c, f.MessageID, "acknowledged", *ev)
}

// printAnswer prints the recipient's own evidence about message id.
func (e *env) printAnswer(c *command, id, what string, ev client.Evidence) error {
	j := toEvidenceJSON(ev, "")
	if c.json {
		return e.printJSON(ackJSON{ID: id, Type: j.Type, SHA256: j.SHA256, Time: j.Time, Reason: j.Reason})
	}
	_, err := fmt.Fprintf(e.stdout, "%s %s at %s (evidence SHA-256 %s)\n", what, id, j.Time, j.SHA256)
	return err
}

// rejectHint adds to the error of a message handed over but not opened
// how to refuse it, and to the error of a message that opened but whose
// documents could not be written that nothing is wrong with the message.
func rejectHint(err error, id string) error {
	var oe *client.OpenError
	if errors.As(err, &oe) {
		return fmt.Errorf("%w\nit cannot be acknowledged; to refuse it: kurier reject %s --code %s", err, id, evidence.CannotOpen)
	}
	var we *client.WriteError
	if errors.As(err, &we) {
		return fmt.Errorf("%w\nthe message itself opened and verified; free space or fix the folder, then fetch it again: kurier fetch %s -o FOLDER", err, id)
	}
	return err
}
