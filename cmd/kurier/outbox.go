package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"kurier.dev/kurier/client"
)

// outboxJSON is one sent message as kurier outbox --json prints it.
type outboxJSON struct {
	ID         string          `json:"id"`
	Subject    string          `json:"subject"`
	Type       string          `json:"type"`
	Reference  string          `json:"reference"`
	Created    string          `json:"created"`
	Received   string          `json:"received"`
	Size       int64           `json:"size"`
	Recipients []recipientJSON `json:"recipients"`
}

// recipientJSON is where one recipient's copy stands.
type recipientJSON struct {
	Address  string `json:"address"`
	State    string `json:"state"`
	Evidence string `json:"evidence"`
	Time     string `json:"time"`
	Reason   string `json:"reason"`
}

func toOutboxJSON(m client.SentMessage) outboxJSON {
	out := outboxJSON{
		ID: m.ID, Subject: m.Subject, Type: m.Type, Reference: m.Reference,
		Created: m.Created.UTC().Format(time.RFC3339), Received: m.Received.UTC().Format(time.RFC3339), Size: m.Size,
		Recipients: make([]recipientJSON, 0, len(m.Recipients)),
	}
	for _, r := range m.Recipients {
		out.Recipients = append(out.Recipients, recipientJSON{
			Address: r.Address, State: r.State, Evidence: r.Evidence, Time: r.Time.UTC().Format(time.RFC3339), Reason: r.Reason,
		})
	}
	return out
}

// outbox is kurier outbox: the messages you sent, newest first, each with
// a line per recipient saying where its copy stands.
func (e *env) outbox(args []string) error {
	c := newCommand("outbox", e.stderr)
	mf := c.mailboxFlags()
	limit := c.Int("limit", 0, "list only the newest N messages (0: all)")
	pos, err := c.parse(args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return fmt.Errorf("outbox: unexpected arguments %q", pos)
	}
	if *limit < 0 {
		return fmt.Errorf("outbox: --limit %d: give a number of messages, or 0 for all; %w", *limit, errUsage)
	}
	cl, err := e.dial(mf)
	if err != nil {
		return err
	}
	defer cl.Close()
	sent, err := cl.Outbox(e.ctx, *limit)
	if err != nil {
		return err
	}
	if c.json {
		out := make([]outboxJSON, 0, len(sent))
		for _, m := range sent {
			out = append(out, toOutboxJSON(m))
		}
		return e.printJSON(out)
	}
	if len(sent) == 0 {
		_, err := fmt.Fprintln(e.stdout, "You have sent nothing through this node.")
		return err
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSENT\tSUBJECT\tRECIPIENT\tSTATE\tSINCE")
	for _, m := range sent {
		id, when, subject := printable(m.ID), m.Received.Local().Format("2006-01-02 15:04"), printable(m.Subject)
		if len(m.Recipients) == 0 {
			fmt.Fprintf(tw, "%s\t%s\t%s\t\t\t\n", id, when, subject)
		}
		for _, r := range m.Recipients {
			state := printable(r.State)
			if r.Reason != "" {
				state += " (" + shorten(printable(r.Reason), maxTableReason) + ")"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", id, when, subject, printable(r.Address), state, r.Time.Local().Format("2006-01-02 15:04"))
			id, when, subject = "", "", "" // the message's columns once, on its first line
		}
	}
	return tw.Flush()
}

// maxTableReason bounds how much of a reason the table shows, in
// characters: a reason may run to a kilobyte, which --json prints whole.
const maxTableReason = 60

// shorten cuts s to at most max characters, the last an ellipsis.
func shorten(s string, max int) string {
	r := []rune(s)
	if len(r) <= max {
		return s
	}
	return string(r[:max-1]) + "…"
}
