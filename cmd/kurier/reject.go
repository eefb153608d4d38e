package main

import (
	"fmt"
	"strings"

	"kurier.dev/kurier/evidence"
)

// reject signs and sends the refusal (Zurückweisung) of a retrieved
// message, with a reason code and text.
func (e *env) reject(args []string) error {
	c := newCommand("reject", e.stderr)
	mf := c.mailboxFlags()
	codes := make([]string, len(evidence.RejectionCodes))
	for i, code := range evidence.RejectionCodes {
		codes[i] = string(code)
	}
	code := c.String("code", string(evidence.OtherRejection), "why, in one word: "+strings.Join(codes, ", "))
	text := c.String("reason", "", fmt.Sprintf("why, for the sender to read (at most %d bytes; needed for --code %s)", evidence.MaxRejectionText, evidence.OtherRejection))
	id, err := c.parseID(args)
	if err != nil {
		return err
	}
	cl, err := e.dial(mf)
	if err != nil {
		return err
	}
	defer cl.Close()
	ev, err := cl.Reject(e.ctx, id, evidence.RejectionCode(*code), *text)
	if err != nil {
		return err
	}
	return e.printAnswer(c, id, "rejected", *ev)
}
