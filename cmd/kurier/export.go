package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"kurier.dev/kurier/client"
	"kurier.dev/kurier/evidence/audit"
	"kurier.dev/kurier/evidence/bundle"
	"kurier.dev/kurier/tlog"
)

// fileList is a repeatable flag of file names.
type fileList []string

func (l *fileList) String() string { return fmt.Sprint(*l) }

// Set adds one file.
func (l *fileList) Set(v string) error { *l = append(*l, v); return nil }

type exportJSON struct {
	File      string `json:"file"`
	MessageID string `json:"message_id"`
	Evidence  int    `json:"evidence"`
	Log       string `json:"log"`
	TreeSize  uint64 `json:"tree_size"`
	// OtherLogs are the origins of the other nodes' logs that hold some
	// of the evidence (a relayed message's).
	OtherLogs []string `json:"other_logs,omitempty"`
	// Content lists the content files the bundle carries
	// (content/signed.p7m, content/payload.p7m), and Documents how many
	// documents of them were checked against the envelope.
	Content   []string `json:"content,omitempty"`
	Documents int      `json:"documents_checked,omitempty"`
	Checks    int      `json:"checks"`
}

func (e *env) export(args []string) error {
	c := newCommand("export", e.stderr)
	mf := c.mailboxFlags()
	out := c.String("o", "", "write the bundle (a zip file) here; default ID.zip")
	var since, docs fileList
	c.Var(&since, "since", "an older checkpoint (or bundle) of the node's log to prove consistency with; repeatable")
	content := c.String("with-content", "", "add the message's content: the kept "+client.SignedFile+" (fetch --keep-sealed), or the folder holding it (and "+client.SealedFile+", added too if there)")
	c.Var(&docs, "with-document", "as the sender, add the content by signing the message's documents again: each document FILE in the message's order; repeatable")
	id, err := c.parseID(args)
	if err != nil {
		return err
	}
	if *content != "" && len(docs) > 0 {
		return errors.New("export: give either --with-content (the kept original) or --with-document (the documents, signed again), not both")
	}
	if *out == "" {
		*out = id + ".zip"
	}
	// An earlier bundle is proof too: never replace one.
	if _, err := os.Lstat(*out); err == nil {
		return fmt.Errorf("export: %s already exists; choose another file name", *out)
	}
	var older [][]byte
	for _, f := range since {
		cp, err := readCheckpoint(f)
		if err != nil {
			return fmt.Errorf("export: --since %s: %w", f, err)
		}
		older = append(older, cp)
	}
	o := client.ExportOptions{Since: older}
	if *content != "" {
		if o.Signed, o.Sealed, err = client.LoadContent(*content); err != nil {
			return fmt.Errorf("export: --with-content: %w", err)
		}
	}
	cl, err := e.dial(mf)
	if err != nil {
		return err
	}
	defer cl.Close()
	if len(docs) > 0 {
		if o.Signed, err = signDocuments(cl, docs); err != nil {
			return fmt.Errorf("export: --with-document: %w", err)
		}
	}
	b, r, err := cl.ExportWith(e.ctx, id, o)
	if err != nil {
		if errors.Is(err, client.ErrContentNotOfMessage) {
			printChecks(e.stderr, r)
			// err says which part failed, and why.
			return fmt.Errorf("%w; see the checks marked FAIL above; nothing written", err)
		}
		if errors.Is(err, client.ErrBundleUnverified) {
			printChecks(e.stderr, r)
			return fmt.Errorf("export %s: the bundle does not verify (see the checks marked FAIL above); nothing written", id)
		}
		return err
	}
	var buf bytes.Buffer
	if err := b.Write(&buf, r.Verified); err != nil {
		return err
	}
	if err := writeFileAtomic(*out, buf.Bytes()); err != nil {
		return fmt.Errorf("export %s: %w", id, err)
	}
	j := exportJSON{File: *out, MessageID: id, Evidence: len(b.Evidence), Checks: len(r.Checks)}
	if r.Log != nil {
		j.Log, j.TreeSize = r.Log.Origin, r.Log.TreeSize
	}
	others := ""
	for _, l := range r.OtherLogs {
		j.OtherLogs = append(j.OtherLogs, l.Origin)
		others += fmt.Sprintf(", %s at %d", l.Origin, l.TreeSize)
	}
	if b.Signed != nil {
		j.Content = append(j.Content, bundle.FileContentSigned)
		if b.Sealed != nil {
			j.Content = append(j.Content, bundle.FileContentSealed)
		}
		for _, d := range r.Documents {
			if d.Content == audit.Pass {
				j.Documents++
			}
		}
		others += fmt.Sprintf(", with the content (%d documents checked against the envelope)", j.Documents)
	}
	if c.json {
		return e.printJSON(j)
	}
	fmt.Fprintf(e.stdout, "wrote %s: message %s, %d evidence, log %s at tree size %d%s; all %d checks passed\n",
		j.File, id, j.Evidence, j.Log, j.TreeSize, others, j.Checks)
	return nil
}

func (e *env) checkpoint(args []string) error {
	c := newCommand("checkpoint", e.stderr)
	mf := c.mailboxFlags()
	out := c.String("o", "", "write the checkpoint here (default: print it)")
	pos, err := c.parse(args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return fmt.Errorf("checkpoint: unexpected arguments %q", pos)
	}
	cl, err := e.dial(mf)
	if err != nil {
		return err
	}
	defer cl.Close()
	cp, err := cl.Checkpoint(e.ctx)
	if err != nil {
		return err
	}
	size, err := tlog.PeekSize(cp)
	if err != nil {
		return err
	}
	if *out == "" {
		if c.json {
			return e.printJSON(map[string]any{"checkpoint": string(cp), "tree_size": size})
		}
		_, err := e.stdout.Write(cp)
		return err
	}
	if err := writeFileAtomic(*out, cp); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	if c.json {
		return e.printJSON(map[string]any{"file": *out, "tree_size": size})
	}
	fmt.Fprintf(e.stdout, "wrote %s: tree size %d\n", *out, size)
	return nil
}

// signDocuments signs the documents in files again as the sender's
// original (client.SignOriginal), under their base names.
func signDocuments(cl *client.Client, files []string) ([]byte, error) {
	var docs []client.Document
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			return nil, err
		}
		defer fh.Close()
		fi, err := fh.Stat()
		if err != nil {
			return nil, err
		}
		if !fi.Mode().IsRegular() {
			return nil, fmt.Errorf("%s is not a regular file", f)
		}
		docs = append(docs, client.Document{Name: filepath.Base(f), Reader: fh, Size: fi.Size()})
	}
	return cl.SignOriginal(docs)
}

// readCheckpoint reads a signed checkpoint from a file that holds one, or
// takes the checkpoint of a bundle.
func readCheckpoint(path string) ([]byte, error) {
	data, err := readBounded(path, bundle.MaxSizeWithContent)
	if err != nil {
		return nil, err
	}
	return audit.CheckpointOf(data)
}

// readBounded reads a file of at most max bytes.
func readBounded(path string, max int64) ([]byte, error) {
	f, err := os.Open(filepath.Clean(path))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	if fi.Size() > max {
		return nil, fmt.Errorf("%s has %d bytes, at most %d", path, fi.Size(), max)
	}
	data := make([]byte, fi.Size())
	if _, err := io.ReadFull(f, data); err != nil {
		return nil, err
	}
	return data, nil
}
