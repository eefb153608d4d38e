package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"text/tabwriter"
	"time"

	"kurier.dev/kurier/client"
)

type inboxJSON struct {
	ID        string `json:"id"`
	From      string `json:"from"`
	Subject   string `json:"subject"`
	Type      string `json:"type"`
	Reference string `json:"reference"`
	Received  string `json:"received"`
	Size      int64  `json:"size"`
	State     string `json:"state"`
}

func toInboxJSON(m client.InboxEntry) inboxJSON {
	return inboxJSON{
		ID: m.ID, From: m.From, Subject: m.Subject, Type: m.Type, Reference: m.Reference,
		Received: m.Received.UTC().Format(time.RFC3339), Size: m.Size, State: m.State,
	}
}

func (e *env) inbox(args []string) error {
	c := newCommand("inbox", e.stderr)
	mf := c.mailboxFlags()
	pos, err := c.parse(args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return fmt.Errorf("inbox: unexpected arguments %q", pos)
	}
	cl, err := e.dial(mf)
	if err != nil {
		return err
	}
	defer cl.Close()
	entries, err := cl.Inbox(e.ctx)
	if err != nil {
		return err
	}
	if c.json {
		out := make([]inboxJSON, 0, len(entries))
		for _, m := range entries {
			out = append(out, toInboxJSON(m))
		}
		return e.printJSON(out)
	}
	if len(entries) == 0 {
		_, err := fmt.Fprintln(e.stdout, "The mailbox is empty.")
		return err
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tFROM\tRECEIVED\tSTATE\tSUBJECT")
	for _, m := range entries {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", printable(m.ID), printable(m.From), m.Received.Local().Format("2006-01-02 15:04"), printable(m.State), printable(m.Subject))
	}
	return tw.Flush()
}

// parseID parses the arguments of a command that takes one message id.
func (c *command) parseID(args []string) (string, error) {
	pos, err := c.parse(args)
	if err != nil {
		return "", err
	}
	switch len(pos) {
	case 0:
		return "", errors.New(c.name + ": no message id given")
	case 1:
		return pos[0], nil
	}
	return "", fmt.Errorf("%s: one message id expected, got %q", c.name, pos)
}

// watch is kurier watch: it prints every message that arrives in the
// mailbox until interrupted, one line each, or one JSON object a line
// with --json (so that a script reads them as they come). With --existing
// it first prints what the mailbox holds, once the subscription stands,
// so that nothing falls between the two.
func (e *env) watch(args []string) error {
	c := newCommand("watch", e.stderr)
	mf := c.mailboxFlags()
	existing := c.Bool("existing", false, "first list what the mailbox holds already")
	pos, err := c.parse(args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return fmt.Errorf("watch: unexpected arguments %q", pos)
	}
	cl, err := e.dial(mf)
	if err != nil {
		return err
	}
	defer cl.Close()
	enc := json.NewEncoder(e.stdout)
	enc.SetEscapeHTML(false)
	show := func(m client.InboxEntry) error {
		if c.json {
			return enc.Encode(toInboxJSON(m))
		}
		_, err := fmt.Fprintf(e.stdout, "%s  %s  %s  %s\n", m.Received.Local().Format("2006-01-02 15:04"), printable(m.ID), printable(m.From), printable(m.Subject))
		return err
	}
	listed := map[string]bool{} // printed from the listing: a notice of one is not printed again
	ready := func() error {
		if !*existing {
			return nil
		}
		entries, err := cl.Inbox(e.ctx)
		if err != nil {
			return err
		}
		for _, m := range entries {
			listed[m.ID] = true
			if err := show(m); err != nil {
				return err
			}
		}
		return nil
	}
	err = cl.Subscribe(e.ctx, func(m client.InboxEntry) error {
		if listed[m.ID] {
			return nil
		}
		return show(m)
	}, client.OnReady(ready))
	if errors.Is(err, context.Canceled) && e.ctx.Err() != nil {
		return nil // interrupted: the end of watching
	}
	return err
}
