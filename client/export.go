package client

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
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
	opts := audit.Options{Roots: c.id.Roots, Now: c.now}
	for i, s := range since {
		opts.Since = append(opts.Since, audit.File{Name: fmt.Sprintf("older checkpoint %d", i+1), Data: s})
	}
	r := audit.Bundle(id+".zip", b, opts)
	if !r.OK() {
		var why []string
		for _, ch := range r.Failed() {
			why = append(why, fmt.Sprintf("%s %s: %s", ch.Name, ch.Subject, ch.Detail))
		}
		return b, r, fmt.Errorf("export %s: %w: %s", id, ErrBundleUnverified, strings.Join(why, "; "))
	}
	return b, r, nil
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
