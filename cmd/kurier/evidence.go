package main

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"text/tabwriter"

	"kurier.dev/kurier/client"
	"kurier.dev/kurier/evidence"
	"kurier.dev/kurier/evidence/bundle"
)

type evidenceJSON struct {
	File      string `json:"file,omitempty"`
	Type      string `json:"type"`
	Recipient string `json:"recipient"`
	Issuer    string `json:"issuer"`
	Time      string `json:"time"`
	SHA256    string `json:"sha256"`
	Reason    string `json:"reason,omitempty"`
	// Log is the origin of the transparency log that holds the evidence,
	// LeafIndex its place there.
	Log       string `json:"log"`
	LeafIndex uint64 `json:"leaf_index"`
}

func toEvidenceJSON(ev client.Evidence, file string) evidenceJSON {
	st := ev.Statement
	return evidenceJSON{
		File: file, Type: string(st.Type), Recipient: st.Recipient, Issuer: st.Issuer,
		Time: st.Time.UTC().Format(evidence.TimeFormat), SHA256: ev.Digest(), Reason: st.Reason,
		Log: ev.Log, LeafIndex: ev.LeafIndex,
	}
}

func (e *env) evidence(args []string) error {
	c := newCommand("evidence", e.stderr)
	mf := c.mailboxFlags()
	out := c.String("o", "", "write each evidence into this folder as NN-Type.p7m (created if missing)")
	id, err := c.parseID(args)
	if err != nil {
		return err
	}
	cl, err := e.dial(mf)
	if err != nil {
		return err
	}
	defer cl.Close()
	evs, err := cl.Evidence(e.ctx, id)
	if err != nil {
		return err
	}
	evs = byRecipient(evs)
	files := make([]string, len(evs))
	if *out != "" {
		if files, err = writeEvidence(*out, evs); err != nil {
			return fmt.Errorf("evidence %s: %w", id, err)
		}
	}
	list := make([]evidenceJSON, 0, len(evs))
	for i, ev := range evs {
		list = append(list, toEvidenceJSON(ev, files[i]))
	}
	if c.json {
		return e.printJSON(list)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	first := "#"
	if *out != "" {
		first = "FILE"
	}
	fmt.Fprintf(tw, "%s\tTYPE\tRECIPIENT\tISSUER\tTIME\n", first)
	for i, j := range list {
		name := strconv.Itoa(i + 1)
		if j.File != "" {
			name = j.File
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", printable(name), j.Type, j.Recipient, j.Issuer, j.Time)
		if j.Reason != "" {
			fmt.Fprintf(tw, "\t  %s\t\t\t\n", printable(j.Reason))
		}
	}
	return tw.Flush()
}

// byRecipient orders evidence, given in order of issue, into one chain per
// recipient, recipients in the order they first appear: a message to
// several nodes' recipients has their chains interleaved in order of
// issue.
func byRecipient(evs []client.Evidence) []client.Evidence {
	rank := map[string]int{}
	for _, ev := range evs {
		if _, ok := rank[ev.Statement.Recipient]; !ok {
			rank[ev.Statement.Recipient] = len(rank)
		}
	}
	out := slices.Clone(evs)
	slices.SortStableFunc(out, func(a, b client.Evidence) int {
		return rank[a.Statement.Recipient] - rank[b.Statement.Recipient]
	})
	return out
}

// writeEvidence writes each evidence's DER into dir as NN-Type.p7m
// (bundle.EvidenceName), in order of issue, and returns the paths. A file that is already there with
// the same bytes is kept; one with other bytes stops everything before
// anything is written.
func writeEvidence(dir string, evs []client.Evidence) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	paths := make([]string, len(evs))
	skip := make([]bool, len(evs))
	for i, ev := range evs {
		paths[i] = filepath.Join(dir, bundle.EvidenceName(i, ev.Type()))
		have, err := os.ReadFile(paths[i])
		switch {
		case err == nil && bytes.Equal(have, ev.DER):
			skip[i] = true
		case err == nil:
			return nil, fmt.Errorf("%s already exists with other content; choose another folder", paths[i])
		case !errors.Is(err, fs.ErrNotExist):
			return nil, err
		}
	}
	for i, ev := range evs {
		if skip[i] {
			continue
		}
		if err := writeFileAtomic(paths[i], ev.DER); err != nil {
			return nil, err
		}
	}
	return paths, nil
}

// writeFileAtomic writes data to a temporary file beside path, syncs it and
// renames it into place.
func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".kurier-*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
