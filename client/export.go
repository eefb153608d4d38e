package client

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"kurier.dev/kurier/envelope"
	"kurier.dev/kurier/evidence"
	"kurier.dev/kurier/evidence/audit"
	"kurier.dev/kurier/evidence/bundle"
	"kurier.dev/kurier/pki/cms"
	kurierv1 "kurier.dev/kurier/proto/kurier/v1"
	"kurier.dev/kurier/tlog"
)

// ErrBundleUnverified is returned by Export when the bundle the node's
// answer makes does not pass verification; Export returns the report too.
var ErrBundleUnverified = errors.New("the exported bundle does not verify")

// ErrContentNotOfMessage is returned by ExportWith when the content given
// does not verify as the message's: other documents than its envelope
// lists, another payload than the one delivered, or a signature over the
// documents that does not hold (not the sender's, altered, or by a
// certificate not valid or revoked when it was made). The error says
// which. The bundle is not returned: a bundle must not pair a message's
// evidence with other documents.
var ErrContentNotOfMessage = errors.New("the content does not verify as the message's")

// ExportOptions say what ExportWith puts into a bundle besides the node's
// part.
type ExportOptions struct {
	// Since are older signed checkpoints of the node's log that the
	// caller keeps; the bundle then proves the current log consistent
	// with each.
	Since [][]byte
	// Signed, if not nil, is the sender-signed original of the message
	// (the SignedFile a fetch with FetchOptions.KeepSealed keeps, or the
	// sender's SignOriginal), added as the bundle's content/signed.p7m;
	// Sealed, optional, the payload as delivered (SealedFile), added as
	// content/payload.p7m. Both are verified to be this message's.
	Signed, Sealed []byte
}

// Export builds the evidence bundle of message id (format
// bundle.Version): the node's part (the signed envelope, the evidence the
// caller may see with inclusion proofs, the node's checkpoint and signed
// index, the checkpoint and vouched-for key of every other node's log
// that holds some of the evidence, the CRL) and the signers' certificates
// up to the client's trust anchors. since are older signed checkpoints of
// the node's log that the caller keeps; the bundle then proves the
// current log consistent with each.
//
// Export verifies the bundle as an offline verifier would
// (audit.Bundle, with the client's trust anchors and no network) and
// returns the report with it. If a check does not pass it returns the
// bundle and report with an error wrapping ErrBundleUnverified, so that a
// caller can keep what the node said as proof of what it said.
func (c *Client) Export(ctx context.Context, id string, since ...[]byte) (*bundle.Bundle, *audit.Report, error) {
	return c.ExportWith(ctx, id, ExportOptions{Since: since})
}

// ExportWith is Export with options: older checkpoints, and the
// message's content, so that the bundle proves what was delivered, not
// only that something with the envelope's digest was. The content is
// checked with the rest of the bundle: content/signed.p7m signed by the
// envelope's sender, holding exactly the documents the envelope lists
// (names, sizes and, in a version 3 envelope, SHA-256), content/payload.p7m
// with the payload's digest. If any of that fails, ExportWith returns the
// report and an error wrapping ErrContentNotOfMessage, and no bundle.
func (c *Client) ExportWith(ctx context.Context, id string, o ExportOptions) (*bundle.Bundle, *audit.Report, error) {
	since := o.Since
	if o.Sealed != nil && o.Signed == nil {
		return nil, nil, fmt.Errorf("export %s: the payload as delivered without the signed original proves nothing about the documents; give the signed original (%s) too", id, SignedFile)
	}
	if len(o.Signed) > bundle.MaxContentSize || len(o.Sealed) > bundle.MaxContentSize {
		return nil, nil, fmt.Errorf("export %s: the content is larger than the %d bytes a bundle holds of each part", id, bundle.MaxContentSize)
	}
	if err := envelope.CheckID(id); err != nil {
		return nil, nil, fmt.Errorf("export: %w", err)
	}
	req := &kurierv1.ExportMessageRequest{MessageId: id}
	for i, s := range since {
		n, err := tlog.PeekSize(s)
		if err != nil {
			return nil, nil, fmt.Errorf("export %s: older checkpoint %d: %w", id, i+1, err)
		}
		req.SinceTreeSizes = append(req.SinceTreeSizes, n)
	}
	resp, err := c.mailbox.ExportMessage(ctx, req)
	if err != nil {
		return nil, nil, fmt.Errorf("export %s: %w", id, err)
	}
	b, err := c.assemble(id, resp)
	if err != nil {
		return nil, nil, fmt.Errorf("export %s: %w", id, err)
	}
	if o.Signed != nil {
		// Only a version 3 envelope binds the documents; older ones
		// would leave the content forever indeterminate.
		if env, err := envelope.Parse(b.Envelope); err == nil && env.Version < envelope.Version {
			return nil, nil, fmt.Errorf("export %s: the message's envelope (version %d) lists no document digests, so no content can be proven to be the message's; export it without content", id, env.Version)
		}
	}
	b.Signed, b.Sealed = o.Signed, o.Sealed
	opts := audit.Options{Roots: c.id.Roots, Now: c.now}
	for i, s := range since {
		opts.Since = append(opts.Since, audit.File{Name: fmt.Sprintf("older checkpoint %d", i+1), Data: s})
	}
	r := audit.Bundle(id+".zip", b, opts)
	if why := contentFailures(r); why != "" {
		return nil, r, fmt.Errorf("export %s: %w: %s", id, ErrContentNotOfMessage, why)
	}
	if !r.OK() {
		var why []string
		for _, ch := range r.Failed() {
			why = append(why, fmt.Sprintf("%s %s: %s", ch.Name, ch.Subject, ch.Detail))
		}
		return b, r, fmt.Errorf("export %s: %w: %s", id, ErrBundleUnverified, strings.Join(why, "; "))
	}
	return b, r, nil
}

// contentFailures returns what the content checks of r found wrong, ""
// if nothing: first in a few words which part failed (the documents, the
// payload, the signature over the documents), then each failed check.
func contentFailures(r *audit.Report) string {
	var what, why []string
	for _, ch := range r.Failed() {
		var part string
		switch {
		case ch.Name == audit.CheckDocument:
			part = "the documents are not those the envelope lists"
		case ch.Name == audit.CheckSealedPayload:
			part = "the payload is not the one delivered"
		case ch.Name == audit.CheckContentSignature,
			ch.Name == audit.CheckRevocation && strings.HasPrefix(ch.Subject, bundle.FileContentSigned):
			part = "the signature over the documents does not hold"
		default:
			continue
		}
		if !slices.Contains(what, part) {
			what = append(what, part)
		}
		why = append(why, fmt.Sprintf("%s %s: %s", ch.Name, ch.Subject, ch.Detail))
	}
	if len(why) == 0 {
		return ""
	}
	return strings.Join(what, ", and ") + " (" + strings.Join(why, "; ") + ")"
}

// SignOriginal returns the sender-signed original of documents as the
// client sealed them for a message: their tar file, packed as Seal packs
// it, in CMS SignedData signed with the client's key. The sender, who
// cannot decrypt what it sent, adds it to an export (ExportOptions.Signed)
// to prove which documents it sent: the signature differs from the one
// the recipient holds, but a version 3 envelope lists each document's
// SHA-256, so a verifier checks the documents all the same. docs must be
// the message's documents, in the message's order; Readers are read once.
func (c *Client) SignOriginal(docs []Document) ([]byte, error) {
	var buf bytes.Buffer
	sw, err := cms.SignWriter(&buf, c.signer)
	if err != nil {
		return nil, fmt.Errorf("sign the original: %w", err)
	}
	if _, err := writeTar(sw, docs); err != nil {
		return nil, fmt.Errorf("sign the original: %w", err)
	}
	if err := sw.Close(); err != nil {
		return nil, fmt.Errorf("sign the original: %w", err)
	}
	if buf.Len() > bundle.MaxContentSize {
		return nil, fmt.Errorf("sign the original: %d bytes, more than the %d a bundle holds", buf.Len(), bundle.MaxContentSize)
	}
	return buf.Bytes(), nil
}

// LoadContent reads a message's kept originals for ExportOptions: path is
// the sender-signed original itself (a file), or a folder that holds it
// as SignedFile, and the payload as delivered as SealedFile if it is
// there (the folder of a fetch with KeepSealed and PerMessage).
func LoadContent(path string) (signed, sealed []byte, err error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, nil, fmt.Errorf("content: %w", err)
	}
	if !fi.IsDir() {
		signed, err = readContentFile(path)
		return signed, nil, err
	}
	if signed, err = readContentFile(filepath.Join(path, SignedFile)); err != nil {
		return nil, nil, err
	}
	sealedPath := filepath.Join(path, SealedFile)
	if _, err := os.Lstat(sealedPath); errors.Is(err, fs.ErrNotExist) {
		return signed, nil, nil
	}
	if sealed, err = readContentFile(sealedPath); err != nil {
		return nil, nil, err
	}
	return signed, sealed, nil
}

// readContentFile reads a regular file of at most bundle.MaxContentSize
// bytes.
func readContentFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("content: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	switch {
	case err != nil:
		return nil, fmt.Errorf("content: %w", err)
	case !fi.Mode().IsRegular():
		return nil, fmt.Errorf("content: %s is not a regular file", path)
	case fi.Size() > bundle.MaxContentSize:
		return nil, fmt.Errorf("content: %s has %d bytes, a bundle holds at most %d", path, fi.Size(), bundle.MaxContentSize)
	}
	data, err := io.ReadAll(io.LimitReader(f, bundle.MaxContentSize+1))
	if err != nil {
		return nil, fmt.Errorf("content: %s: %w", path, err)
	}
	if len(data) > bundle.MaxContentSize {
		return nil, fmt.Errorf("content: %s has grown beyond %d bytes", path, bundle.MaxContentSize)
	}
	return data, nil
}

// assemble turns the node's answer into a bundle, adding the certificates
// of every signer and the trust anchors. Each evidence goes with the log
// the node names for it (empty: the node's own), each other log with its
// checkpoint and key as the node passed them on; Export's verification
// checks them all.
func (c *Client) assemble(id string, resp *kurierv1.ExportMessageResponse) (*bundle.Bundle, error) {
	evs := resp.GetEvidence()
	proofs := resp.GetInclusionProofs()
	if len(proofs) != len(evs) {
		return nil, fmt.Errorf("the node sent %d evidence but %d inclusion proofs", len(evs), len(proofs))
	}
	if n := len(resp.GetLogs()); n > bundle.MaxLogs {
		return nil, fmt.Errorf("the node sent %d other logs, a bundle holds at most %d", n, bundle.MaxLogs)
	}
	b := &bundle.Bundle{
		Version:    bundle.Version,
		MessageID:  id,
		Envelope:   resp.GetEnvelope().GetEnvelope(),
		Signature:  resp.GetEnvelope().GetSignature(),
		Checkpoint: resp.GetCheckpoint(),
		Index:      resp.GetIndex(),
		CRL:        resp.GetCrl(),
	}
	var signers []*x509.Certificate
	addSigner := func(der []byte) {
		if v, err := cms.ParseSigned(der); err == nil {
			signers = append(signers, v.Signer)
		}
	}
	addSigner(b.Signature)
	addSigner(b.Index)
	for _, l := range resp.GetLogs() {
		b.Logs = append(b.Logs, bundle.Log{
			Origin: l.GetOrigin(), Checkpoint: l.GetCheckpoint(), LogKey: l.GetLogKey(), LogKeySignature: l.GetLogKeySignature(),
		})
		addSigner(l.GetLogKeySignature())
	}
	for i, pb := range evs {
		p := proofs[i]
		if p.GetLeafIndex() != pb.GetLeafIndex() {
			return nil, fmt.Errorf("inclusion proof %d is of leaf %d, evidence %d is leaf %d", i+1, p.GetLeafIndex(), i+1, pb.GetLeafIndex())
		}
		ev, err := evidence.Parse(pb.GetDer())
		if err != nil {
			return nil, fmt.Errorf("evidence %d: %w", i+1, err)
		}
		b.Evidence = append(b.Evidence, bundle.Evidence{
			Name: bundle.EvidenceName(i, ev.Statement.Type), DER: pb.GetDer(), Log: pb.GetLog(), LeafIndex: pb.GetLeafIndex(), Proof: p.GetHashes(),
		})
		signers = append(signers, ev.Signer)
	}
	for _, cp := range resp.GetConsistencyProofs() {
		b.Consistency = append(b.Consistency, bundle.Consistency{From: cp.GetFromSize(), Proof: cp.GetHashes()})
	}
	b.Certificates = distinct(append(append(signers, c.id.Chain...), c.id.Roots...))
	return b, nil
}

// distinct drops repeated certificates, keeping the first of each.
func distinct(certs []*x509.Certificate) []*x509.Certificate {
	var out []*x509.Certificate
	for _, c := range certs {
		if c != nil && !slices.ContainsFunc(out, func(o *x509.Certificate) bool { return o.Equal(c) }) {
			out = append(out, c)
		}
	}
	return out
}

// Checkpoint returns the node's current signed log checkpoint, unverified:
// it is for keeping, so that a later export can be proven consistent with
// it (Export's since, `kurier verify --since`). Its signature is checked
// against the log key that a verified bundle names.
func (c *Client) Checkpoint(ctx context.Context) ([]byte, error) {
	resp, err := c.tlog.GetCheckpoint(ctx, &kurierv1.GetCheckpointRequest{})
	if err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	if _, err := tlog.PeekSize(resp.GetCheckpoint()); err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	return resp.GetCheckpoint(), nil
}
