package audit

import (
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	"kurier.dev/kurier/address"
	"kurier.dev/kurier/envelope"
	"kurier.dev/kurier/evidence"
	"kurier.dev/kurier/evidence/bundle"
	"kurier.dev/kurier/pki"
	"kurier.dev/kurier/pki/cms"
	"kurier.dev/kurier/tlog"
)

// This file checks what binds the evidence to the logs: the exporting
// node's index, the checkpoints and keys of its log and of the others,
// the inclusion proofs and the consistency proofs.

// index checks the exporting node's signed index of the export. It
// returns the index if its signature verified (its content may still
// have failed the index check, and its signer's revocation check), and
// remembers the signer in v.exporter, and in v.exporterVouches whether
// its revocation check did not fail.
func (v *verifier) index(b *bundle.Bundle, env *envelope.Envelope) *bundle.Index {
	const file = bundle.FileIndex
	claimed, err := cms.ParseSigned(b.Index)
	if err != nil {
		v.r.fail(CheckIndexSignature, file, "%v", err)
		return nil
	}
	ix, err := bundle.ParseIndex(claimed.Content)
	if err != nil {
		if _, serr := cms.CheckSignature(b.Index); serr != nil {
			v.r.fail(CheckIndexSignature, file, "%v", serr) // altered after signing
			return nil
		}
		v.r.fail(CheckIndex, file, "%v", err)
		return nil
	}
	vs, err := cms.Verify(b.Index, cms.Policy{Trust: v.chainsWith(), At: ix.Time})
	if err != nil {
		v.r.fail(CheckIndexSignature, file, "%v", err)
		return nil
	}
	peer, err := pki.PeerOf(vs.Signer)
	if err != nil || !peer.Serves(ix.Domain()) {
		v.r.fail(CheckIndexSignature, file, "signed by %s, but only the node of %s may sign the index of its log", describe(vs.Signer), ix.Domain())
		return nil
	}
	v.exporter = peer
	v.r.pass(CheckIndexSignature, file, "signed by %s at %s; certificate serial %x", peer, stamp(ix.Time), vs.Signer.SerialNumber)
	v.exporterVouches = v.signed(signature(file, "index", vs.Signer, ix.Time), vs.Chain, ix.Time) != Fail
	if why := v.indexContent(b, env, ix); why != "" {
		v.r.fail(CheckIndex, file, "%s", why)
		return ix
	}
	others := ""
	if len(ix.Logs) > 0 {
		others = ", and the checkpoints of " + count(len(ix.Logs), "other log") + " it used"
	}
	v.r.pass(CheckIndex, file, "the node lists exactly the %d evidence files of the bundle, in this order, and its CRL, for %s at tree size %d%s", len(ix.Evidence), ix.RequestedBy, ix.TreeSize, others)
	return ix
}

// indexContent says why the index does not fit the bundle, or "".
func (v *verifier) indexContent(b *bundle.Bundle, env *envelope.Envelope, ix *bundle.Index) string {
	var got []string
	for _, e := range b.Evidence {
		got = append(got, evidence.Digest(e.DER))
	}
	switch {
	case ix.MessageID != b.MessageID:
		return fmt.Sprintf("the index is of message %s, the bundle of %s", ix.MessageID, b.MessageID)
	case env != nil && ix.RequestedBy != env.From && !slices.Contains(env.To, ix.RequestedBy):
		return fmt.Sprintf("exported for %s, who is neither sender nor recipient", ix.RequestedBy)
	case !slices.Equal(got, ix.Evidence):
		return indexMismatch(ix.Evidence, got, b.Evidence)
	case ix.CRLSHA256 != evidence.Digest(b.CRL):
		return fmt.Sprintf("the bundle's crl.der is not the CRL the node exported (SHA-256 %s)", short(ix.CRLSHA256))
	case ix.Version != v.version:
		return fmt.Sprintf("an index of format version %d in a bundle of version %d", ix.Version, v.version)
	case v.version == 1:
		return v.issuedElsewhere(b, ix)
	}
	if why := v.exportedElsewhere(b, ix); why != "" {
		return why
	}
	return logsMismatch(b, ix)
}

// issuedElsewhere (version 1) says why the index's signer cannot speak
// for the bundle's evidence: only the node that issued the node evidence
// keeps its log and may vouch that the list is complete; and it cannot
// have listed evidence dated after the index. It returns "" if nothing is
// amiss.
func (v *verifier) issuedElsewhere(b *bundle.Bundle, ix *bundle.Index) string {
	for i, e := range b.Evidence {
		p := v.claims[i].ev
		if p == nil {
			continue // reported with the evidence
		}
		st := p.Statement
		if !st.Type.ByRecipient() && !v.exporter.Serves(st.Issuer) {
			return fmt.Sprintf("the index is signed by %s, which does not serve %s, the issuer of evidence/%s: only the issuing node's log proves it", v.exporter, st.Issuer, e.Name)
		}
		if st.Time.After(ix.Time) {
			return fmt.Sprintf("the index is dated %s, before evidence/%s (%s) it lists", stamp(ix.Time), e.Name, stamp(st.Time))
		}
	}
	return ""
}

// exportedElsewhere (version 2) says why the index's signer cannot speak
// for the export: only the requester's own node exports for it (the one
// that holds the whole chain it may see, so that another node of the
// federation cannot vouch for a shortened list); and it cannot have listed
// evidence dated after the index. Which log may hold an evidence is the
// inclusion proof's check. It returns "" if nothing is amiss.
func (v *verifier) exportedElsewhere(b *bundle.Bundle, ix *bundle.Index) string {
	if d := address.DomainOf(ix.RequestedBy); !v.exporter.Serves(d) {
		return fmt.Sprintf("the index is signed by %s, which does not serve %s, the domain of %s who asked for the export: only a participant's own node exports its messages", v.exporter, d, ix.RequestedBy)
	}
	for i, e := range b.Evidence {
		if p := v.claims[i].ev; p != nil && p.Statement.Time.After(ix.Time) {
			return fmt.Sprintf("the index is dated %s, before evidence/%s (%s) it lists", stamp(ix.Time), e.Name, stamp(p.Statement.Time))
		}
	}
	return ""
}

// logsMismatch says how the bundle's other logs differ from those the
// index names, or "".
func logsMismatch(b *bundle.Bundle, ix *bundle.Index) string {
	for _, l := range ix.Logs {
		if !slices.ContainsFunc(b.Logs, func(bl bundle.Log) bool { return bl.Origin == l.Origin }) {
			return fmt.Sprintf("the node names the log %s at tree size %d, of which the bundle holds no checkpoint", l.Origin, l.TreeSize)
		}
	}
	for _, l := range b.Logs {
		if _, ok := ix.Log(l.Origin); !ok {
			return fmt.Sprintf("the bundle holds the checkpoint of the log %s, which the node does not name", l.Origin)
		}
	}
	return ""
}

// indexMismatch says how the bundle's evidence differs from the index.
func indexMismatch(want, got []string, evs []bundle.Evidence) string {
	for i, d := range got {
		if !slices.Contains(want, d) {
			return fmt.Sprintf("evidence/%s is not among the %d evidence files the node listed", evs[i].Name, len(want))
		}
	}
	for i, d := range want {
		if !slices.Contains(got, d) {
			return fmt.Sprintf("the node listed %d evidence files; the bundle lacks number %d (SHA-256 %s)", len(want), i+1, short(d))
		}
	}
	return fmt.Sprintf("the evidence files are not in the order the node listed them (%d files)", len(want))
}

// pins returns the log keys given for origin: those named by it.
func (v *verifier) pins(origin string) []string {
	var out []string
	for _, k := range v.o.LogKeys {
		if name, _, _ := strings.Cut(k, "+"); name == origin {
			out = append(out, k)
		}
	}
	return out
}

// pinned says how a log's key stands with the keys given: Pass with a
// phrase to add if one of them is the key or none were given,
// Indeterminate if keys were given but none for its origin.
func (v *verifier) pinned(origin string) (Status, string) {
	switch {
	case len(v.pins(origin)) > 0:
		return Pass, " and which was given as known"
	case len(v.o.LogKeys) > 0:
		return Indeterminate, fmt.Sprintf(", but none of the %d keys given is for %s, so it rests on the node's certificate alone: give its published log.vkey too", len(v.o.LogKeys), origin)
	}
	return Pass, ""
}

// checkpoint opens the bundle's checkpoint with the log key the index
// names.
func (v *verifier) checkpoint(b *bundle.Bundle, ix *bundle.Index) *tlog.Checkpoint {
	const file = bundle.FileCheckpoint
	if pins := v.pins(ix.Origin); len(pins) > 0 && !slices.Contains(pins, ix.LogKey) {
		v.r.fail(CheckCheckpoint, file, "the node's index names the log key %s, which is not among the %d keys given for %s: the node may have started another log", ix.LogKey, len(pins), ix.Origin)
		return nil
	}
	c, err := tlog.Open(b.Checkpoint, ix.LogKey)
	if err != nil {
		v.r.fail(CheckCheckpoint, file, "%v (the key is the one the node's index names)", err)
		return nil
	}
	if c.Origin != ix.Origin || c.Size != ix.TreeSize {
		v.r.fail(CheckCheckpoint, file, "checkpoint of %s at tree size %d, but the node's index names %s at %d", c.Origin, c.Size, ix.Origin, ix.TreeSize)
		return nil
	}
	if v.exporterVouches {
		v.r.Log = &LogState{Origin: c.Origin, TreeSize: c.Size, Root: hex.EncodeToString(c.Root), Key: ix.LogKey, Node: v.exporter.String()}
	}
	status, how := v.pinned(ix.Origin)
	v.r.add(CheckCheckpoint, file, status, "signed by the log key %s, which the node's index names%s; tree size %d, root %s", ix.LogKey, how, c.Size, short(hex.EncodeToString(c.Root)))
	return &c
}

// otherLog checks another node's log of the bundle: its key, vouched for
// by that node and named by the index, then its checkpoint; and records
// it in v.logs.
func (v *verifier) otherLog(l bundle.Log) {
	if v.ix != nil && l.Origin == v.ix.Origin {
		v.r.fail(CheckLogKey, bundle.LogFile(l.Origin, bundle.FileLogKeySignature),
			"%s is the exporting node's own log, whose checkpoint is %s: it cannot be another log as well", l.Origin, bundle.FileCheckpoint)
		return
	}
	ls := &logState{origin: l.Origin}
	v.logs[l.Origin] = ls
	keeper, ok, vouches := v.logKey(l)
	if !ok {
		v.r.fail(CheckCheckpoint, bundle.LogFile(l.Origin, bundle.FileLogCheckpoint), "no log key vouched for by the node of %s to open it with (see the log key check)", l.Origin)
		return
	}
	ls.keeper = keeper
	ls.cp = v.otherCheckpoint(l, keeper, vouches)
	ls.vouched = ls.cp != nil && vouches
}

// logKey checks that the node of l's origin vouched for l's key, at the
// index's time, and that the exporting node's index names the same key.
// It returns the node that signed it, whether the key is the one to open
// the checkpoint with, and whether the signer's revocation check did not
// fail (a revoked node vouches for nothing).
func (v *verifier) logKey(l bundle.Log) (pki.Peer, bool, bool) {
	file := bundle.LogFile(l.Origin, bundle.FileLogKeySignature)
	domain, _ := tlog.OriginDomain(l.Origin)
	if v.ix == nil {
		v.r.fail(CheckLogKey, file, "no verified index to date the key's signature and to confirm the key of %s with", l.Origin)
		return pki.Peer{}, false, false
	}
	at := v.ix.Time
	vd, err := cms.VerifyDetached(l.LogKeySignature, []byte(l.LogKey), cms.Policy{Trust: v.chainsWith(), At: at})
	if err != nil {
		v.r.fail(CheckLogKey, file, "%v (the signature of %s over %s)", err, file, bundle.LogFile(l.Origin, bundle.FileLogKey))
		return pki.Peer{}, false, false
	}
	peer, err := pki.PeerOf(vd.Signer)
	if err != nil || !peer.Serves(domain) {
		v.r.fail(CheckLogKey, file, "signed by %s, but only the node of %s may vouch for the key of its log", describe(vd.Signer), domain)
		return pki.Peer{}, false, false
	}
	il, named := v.ix.Log(l.Origin)
	switch {
	case !named:
		v.r.fail(CheckLogKey, file, "the exporting node's index does not name the log %s, so it has not signed that it used this checkpoint", l.Origin)
	case il.LogKey != l.LogKey:
		v.r.fail(CheckLogKey, file, "%s holds the key %s, but the exporting node's index names %s", bundle.LogFile(l.Origin, bundle.FileLogKey), l.LogKey, il.LogKey)
	default:
		v.r.pass(CheckLogKey, file, "the key %s of %s is vouched for by %s (certificate serial %x, valid at the index's time %s), and the exporting node's index names it", l.LogKey, l.Origin, peer, vd.Signer.SerialNumber, stamp(at))
	}
	vouches := v.signed(signature(file, "log key", vd.Signer, at), vd.Chain, at) != Fail
	return peer, named && il.LogKey == l.LogKey, vouches
}

// otherCheckpoint opens another log's checkpoint with its vouched-for
// key, for the tree size the index names; it names the log among the
// report's OtherLogs only if vouches, the key's signer not revoked.
func (v *verifier) otherCheckpoint(l bundle.Log, keeper pki.Peer, vouches bool) *tlog.Checkpoint {
	file := bundle.LogFile(l.Origin, bundle.FileLogCheckpoint)
	if pins := v.pins(l.Origin); len(pins) > 0 && !slices.Contains(pins, l.LogKey) {
		v.r.fail(CheckCheckpoint, file, "%s vouched for the log key %s, which is not among the %d keys given for %s: the node may have started another log", keeper, l.LogKey, len(pins), l.Origin)
		return nil
	}
	c, err := tlog.Open(l.Checkpoint, l.LogKey)
	if err != nil {
		v.r.fail(CheckCheckpoint, file, "%v (the key is the one %s vouched for)", err, keeper)
		return nil
	}
	il, _ := v.ix.Log(l.Origin)
	if c.Origin != l.Origin || c.Size != il.TreeSize {
		v.r.fail(CheckCheckpoint, file, "checkpoint of %s at tree size %d, but the exporting node's index names %s at %d", c.Origin, c.Size, l.Origin, il.TreeSize)
		return nil
	}
	if vouches {
		v.r.OtherLogs = append(v.r.OtherLogs, LogState{Origin: c.Origin, TreeSize: c.Size, Root: hex.EncodeToString(c.Root), Key: l.LogKey, Node: keeper.String()})
	}
	status, how := v.pinned(l.Origin)
	v.r.add(CheckCheckpoint, file, status, "signed by the log key %s, which %s vouched for and the exporting node's index names%s; tree size %d, root %s",
		l.LogKey, keeper, how, c.Size, short(hex.EncodeToString(c.Root)))
	return &c
}

// inclusion checks one evidence's inclusion proof in the checkpoint of
// its log; in version 2 also that the log is one its issuer's node
// keeps. claimed is the evidence as parsed, nil if it did not parse.
func (v *verifier) inclusion(file string, e bundle.Evidence, claimed *evidence.Evidence) {
	origin := e.Log
	if origin == "" && v.ix != nil {
		origin = v.ix.Origin // version 1, or a bundle built in memory
	}
	// Fail until the proof held against an established checkpoint.
	v.r.Entries = append(v.r.Entries, LogEntry{File: file, Log: origin, LeafIndex: e.LeafIndex, Status: Fail})
	entry := &v.r.Entries[len(v.r.Entries)-1]
	ls := v.logs[origin]
	own := v.ix == nil || origin == v.ix.Origin // as far as known
	switch {
	case ls == nil && own, ls != nil && ls.cp == nil && own:
		v.r.fail(CheckInclusion, file, "no verified checkpoint to prove leaf %d against", e.LeafIndex)
		return
	case ls == nil:
		v.r.fail(CheckInclusion, file, "leaf %d of the log %s, of which the bundle holds no checkpoint", e.LeafIndex, origin)
		return
	case ls.cp == nil:
		v.r.fail(CheckInclusion, file, "no verified checkpoint of the log %s to prove leaf %d against", origin, e.LeafIndex)
		return
	}
	if v.version > 1 && claimed != nil {
		if why := loggedBy(claimed.Statement, ls); why != "" {
			v.r.fail(CheckInclusion, file, "%s", why)
			return
		}
	}
	if err := tlog.VerifyInclusion(e.DER, e.LeafIndex, e.Proof, *ls.cp); err != nil {
		v.r.fail(CheckInclusion, file, "leaf %d: %v", e.LeafIndex, err)
		return
	}
	v.r.pass(CheckInclusion, file, "leaf %d of the %d in the log of %s", e.LeafIndex, ls.cp.Size, ls.cp.Origin)
	if ls.vouched {
		entry.Status = Pass
	}
}

// loggedBy says why log ls cannot hold an evidence, or "": a node logs
// the evidence it issued, and the Acknowledgements and Rejections of its
// recipients, which it receives first.
func loggedBy(st *evidence.Statement, ls *logState) string {
	domain, by := st.Issuer, "issued by "+st.Issuer
	if st.Type.ByRecipient() {
		domain, by = address.DomainOf(st.Recipient), "by "+st.Recipient
	}
	if ls.keeper.Serves(domain) {
		return ""
	}
	return fmt.Sprintf("a %s %s, but placed in the log %s, which %s keeps: only a node serving %s logs it", st.Type, by, ls.origin, ls.keeper, domain)
}

// consistency checks an older checkpoint against the bundle's.
func (v *verifier) consistency(f File, b *bundle.Bundle, ix *bundle.Index, cp tlog.Checkpoint) {
	older, err := tlog.Open(f.Data, ix.LogKey)
	if err != nil {
		v.r.fail(CheckOlderCheckpoint, f.Name, "%v (not a checkpoint of the bundle's log %s?)", err, ix.Origin)
		return
	}
	v.r.pass(CheckOlderCheckpoint, f.Name, "signed by the log key of %s; tree size %d, root %s", older.Origin, older.Size, short(hex.EncodeToString(older.Root)))
	if older.Size > cp.Size {
		// A bundle exported earlier than the checkpoint was kept: nothing
		// here proves either way, since checkpoints carry no time.
		v.r.add(CheckConsistency, f.Name, Indeterminate, "the given checkpoint (size %d) is newer than the bundle's (size %d): the bundle cannot prove that its tree is a prefix of it; export the bundle again to compare, or give an older checkpoint", older.Size, cp.Size)
		return
	}
	var proof [][]byte
	// Equal sizes and the empty tree need no proof (equal roots do).
	found := older.Size == cp.Size || older.Size == 0
	for _, c := range b.Consistency {
		if !found && c.From == older.Size {
			proof, found = c.Proof, true
			break
		}
	}
	if !found {
		v.r.fail(CheckConsistency, f.Name, "the bundle holds no consistency proof from tree size %d: export it again with --since %s", older.Size, f.Name)
		return
	}
	if err := tlog.VerifyConsistency(older, cp, proof); err != nil {
		v.r.fail(CheckConsistency, f.Name, "the log forked: the bundle's checkpoint (size %d) does not extend the older one (size %d): %v", cp.Size, older.Size, err)
		return
	}
	v.r.pass(CheckConsistency, f.Name, "the bundle's checkpoint (size %d) extends the older one (size %d): nothing logged was changed or removed", cp.Size, older.Size)
}
