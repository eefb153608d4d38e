package main

import "fmt"

type ackJSON struct {
	ID     string `json:"id"`
	Type   string `json:"type"`
	SHA256 string `json:"sha256"`
	Time   string `json:"time"`
}

// ack signs and sends the acknowledgement (Empfangsbekenntnis) of a
// fetched message.
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
