package main

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"kurier.dev/kurier/client"
)

// progressThreshold is the size above which send draws a progress bar.
const progressThreshold = 1 << 20

// addressList is a repeatable flag; each use may also list several
// addresses separated by commas.
type addressList []string

// String returns the addresses separated by commas.
func (l *addressList) String() string { return strings.Join(*l, ",") }

// Set adds the addresses of one use of the flag.
func (l *addressList) Set(v string) error {
	for _, a := range strings.Split(v, ",") {
		if a = strings.TrimSpace(a); a != "" {
			*l = append(*l, a)
		}
	}
	return nil
}

// parseExpiry reads the value of --expires: a Go duration such as 36h or
// 90m, or a whole number of days such as 14d. It must be positive.
func parseExpiry(s string) (time.Duration, error) {
	const day = 24 * time.Hour
	const maxDays = math.MaxInt64 / int64(day)
	var d time.Duration
	if n, ok := strings.CutSuffix(s, "d"); ok && n != "" && strings.Trim(n, "0123456789") == "" {
		days, err := strconv.ParseInt(n, 10, 64)
		if err != nil || days > maxDays {
			return 0, fmt.Errorf("at most %dd", maxDays)
		}
		d = time.Duration(days) * day
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return 0, errors.New("not a duration; give one like 36h or 90m, or whole days like 14d")
		}
	}
	if d <= 0 {
		return 0, errors.New("not a positive duration; give one like 36h, 90m or 14d")
	}
	return d, nil
}

type sentJSON struct {
	ID       string         `json:"id"`
	Evidence []evidenceJSON `json:"evidence"`
}

func (e *env) send(args []string) error {
	c := newCommand("send", e.stderr)
	mf := c.mailboxFlags()
	var to addressList
	c.Var(&to, "to", "recipient address (repeat, or separate by commas, for several)")
	subject := c.String("subject", "", "subject (required)")
	typ := c.String("type", "", "message type, e.g. Schriftsatz")
	ref := c.String("reference", "", "case reference (Aktenzeichen)")
	c.retryFlag(mf)
	save := c.String("save", "", "save the sealed message in this `file` before submitting it, to submit it again with kurier resubmit")
	var expires time.Duration
	c.Func("expires", fmt.Sprintf("how long the message may take to reach the recipients' nodes: a `duration` like 36h, or whole days like 14d (default %dd; the node may cap it)", client.DefaultExpiry/(24*time.Hour)), func(v string) error {
		d, err := parseExpiry(v)
		expires = d
		return err
	})
	files, err := c.parse(args)
	if err != nil {
		return err
	}
	if len(files) == 0 {
		return errors.New("send: no files given")
	}
	docs, total, closeDocs, err := openDocuments(files)
	if err != nil {
		return fmt.Errorf("send: %w", err)
	}
	defer closeDocs()
	cl, err := e.dial(mf)
	if err != nil {
		return err
	}
	defer cl.Close()
	var progress func(sent, total int64)
	var bar *progressBar
	if !c.json && total > progressThreshold && isTerminal(e.stderr) {
		bar = &progressBar{w: e.stderr}
		progress = bar.update
	}
	sealed, err := cl.Seal(e.ctx, client.Message{To: to, Subject: *subject, Type: *typ, Reference: *ref, Documents: docs, Expires: expires})
	closeDocs()
	if err != nil {
		return err
	}
	defer sealed.Close()
	if *save != "" {
		if err := saveSealed(*save, sealed); err != nil {
			return fmt.Errorf("send: %w", err)
		}
	}
	r, err := cl.Submit(e.ctx, sealed, progress)
	bar.finish() // end the bar's line before anything else is printed
	if err != nil {
		if *save != "" {
			return fmt.Errorf("%w; the sealed message is in %s: kurier resubmit %s", err, *save, *save)
		}
		return err
	}
	return e.printSent(c.json, r)
}

// resubmit submits a message saved with send --save again: the same
// bytes, so the node answers a repeat with the first receipt.
func (e *env) resubmit(args []string) error {
	c := newCommand("resubmit", e.stderr)
	mf := c.mailboxFlags()
	c.retryFlag(mf)
	pos, err := c.parse(args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("resubmit: one file expected, got %q", pos)
	}
	sealed, err := client.OpenSealed(pos[0])
	if err != nil {
		return fmt.Errorf("resubmit %s: %w", pos[0], err)
	}
	defer sealed.Close()
	cl, err := e.dial(mf)
	if err != nil {
		return err
	}
	defer cl.Close()
	r, err := cl.Submit(e.ctx, sealed, nil)
	if err != nil {
		return err
	}
	return e.printSent(c.json, r)
}

// saveSealed writes a sealed message to a new file, synced, never over
// an existing one.
func saveSealed(path string, s *client.Sealed) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := s.WriteTo(f); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// printSent prints a receipt: the message id, or with --json the id and
// its evidence.
func (e *env) printSent(asJSON bool, r *client.Receipt) error {
	if asJSON {
		out := sentJSON{ID: r.MessageID, Evidence: []evidenceJSON{}}
		for _, ev := range r.Evidence {
			out.Evidence = append(out.Evidence, toEvidenceJSON(ev, ""))
		}
		return e.printJSON(out)
	}
	_, err := fmt.Fprintln(e.stdout, r.MessageID)
	return err
}

// openDocuments opens the files to send, each under its base name, to be
// read while the message is sealed; sizes are those of now (sealing fails
// if a file changes meanwhile). closeAll closes them; calling it again
// does nothing.
func openDocuments(paths []string) (docs []client.Document, total int64, closeAll func(), err error) {
	var sizes []int64
	for _, p := range paths {
		fi, err := os.Stat(p) // before opening: opening a FIFO would block
		if err != nil {
			return nil, 0, nil, err
		}
		if !fi.Mode().IsRegular() {
			return nil, 0, nil, fmt.Errorf("%s is not a regular file", p)
		}
		if total += fi.Size(); total > client.MaxPayload {
			return nil, 0, nil, fmt.Errorf("the files have more than %d bytes together", client.MaxPayload)
		}
		sizes = append(sizes, fi.Size())
	}
	var files []*os.File
	closeAll = func() {
		for _, f := range files {
			f.Close()
		}
		files = nil
	}
	for i, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			closeAll()
			return nil, 0, nil, err
		}
		files = append(files, f)
		docs = append(docs, client.Document{Name: filepath.Base(p), Reader: f, Size: sizes[i]})
	}
	return docs, total, closeAll, nil
}

// progressBar draws the upload on a terminal, at most ten times a second.
type progressBar struct {
	w     io.Writer
	last  time.Time
	drawn bool
}

func (p *progressBar) update(sent, total int64) {
	now := time.Now()
	if total <= 0 || (sent < total && now.Sub(p.last) < 100*time.Millisecond) {
		return
	}
	p.last, p.drawn = now, true
	const width = 30
	filled := int(sent * width / total)
	fmt.Fprintf(p.w, "\rsending [%s%s] %3d%%  %.1f / %.1f MiB", strings.Repeat("=", filled), strings.Repeat(" ", width-filled),
		sent*100/total, float64(sent)/(1<<20), float64(total)/(1<<20))
}

// finish ends the bar's line, if one was drawn; p may be nil.
func (p *progressBar) finish() {
	if p != nil && p.drawn {
		fmt.Fprintln(p.w)
		p.drawn = false
	}
}
