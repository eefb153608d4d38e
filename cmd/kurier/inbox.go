package main

import (
	"errors"
	"fmt"
	"text/tabwriter"
	"time"
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
			out = append(out, inboxJSON{
				ID: m.ID, From: m.From, Subject: m.Subject, Type: m.Type, Reference: m.Reference,
				Received: m.Received.UTC().Format(time.RFC3339), Size: m.Size, State: m.State,
			})
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
