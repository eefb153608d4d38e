package audit_test

import (
	"archive/zip"
	"bytes"
	"crypto/sha256"
	"io"
	"math/big"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"kurier.dev/kurier/broker/daemon"
	"kurier.dev/kurier/evidence/audit"
	"kurier.dev/kurier/evidence/bundle"
	"kurier.dev/kurier/pki"
	"kurier.dev/kurier/pki/cms"
	"kurier.dev/kurier/pki/pkitest"
	"kurier.dev/kurier/tlog"
)

// The tests in this file tamper with fx2, the bundle of a message relayed
// between two nodes whose evidence sits in two logs, as a forger holding
// the bundle's parts, the nodes' own keys or the exporting node would.

// wantAmtsUnproven fails t unless every evidence in the court's node's log
// failed its inclusion proof with detail, and the one in the sender's
// node's log passed.
func wantAmtsUnproven(t *testing.T, r *audit.Report, detail string) {
	t.Helper()
	for _, f := range amtsFiles {
		wantFail(t, r, audit.CheckInclusion, f, detail)
	}
	wantCheck(t, r, audit.CheckInclusion, relaySA, audit.Pass, "")
}

func TestTamper_ForeignCheckpointForked(t *testing.T) {
	// The court's node signs, with its real log key, a checkpoint of the
	// same size as the one the index names, over another tree.
	b := fresh2(t)
	root := sha256.Sum256([]byte("a fork of amtsgericht.example's log"))
	forkedCP, err := tlog.Sign(tlog.Checkpoint{Origin: amtsOrigin, Size: fx2.amtsTree.Size(), Root: root[:]}, fx2.amtsKey)
	if err != nil {
		t.Fatal(err)
	}
	b.Logs[0].Checkpoint = forkedCP
	r := verify(t, b, roots())
	wantCheck(t, r, audit.CheckLogKey, amtsKeySig, audit.Pass, "")
	wantCheck(t, r, audit.CheckCheckpoint, amtsCP, audit.Pass, "")
	wantAmtsUnproven(t, r, "proof leads to root")
}

func TestTamper_ForeignLogKeyWrongSigner(t *testing.T) {
	// The court's node's log key, vouched for by someone else than that
	// node: the exporting node, or the court itself. With the exporting
	// node's word alone, a node could carry a key of its own making for
	// the other node's log.
	for name, id := range map[string]*pki.Identity{"exporting node": fx2.stadt, "recipient": fx.court} {
		t.Run(name, func(t *testing.T) {
			b := fresh2(t)
			var err error
			if b.Logs[0].LogKeySignature, err = cms.SignDetached([]byte(b.Logs[0].LogKey), pkitest.Signer(id)); err != nil {
				t.Fatal(err)
			}
			r := verify(t, b, roots())
			wantFail(t, r, audit.CheckLogKey, amtsKeySig, "only the node of amtsgericht.example may vouch for the key of its log")
			wantFail(t, r, audit.CheckCheckpoint, amtsCP, "no log key vouched for")
			wantAmtsUnproven(t, r, "no verified checkpoint of the log "+amtsOrigin)
		})
	}
}

func TestTamper_ForeignLogKeyOtherKey(t *testing.T) {
	skey, vkey, err := tlog.GenerateKey(amtsOrigin)
	if err != nil {
		t.Fatal(err)
	}
	otherSig, err := cms.SignDetached([]byte(vkey), pkitest.Signer(fx2.amts))
	if err != nil {
		t.Fatal(err)
	}
	t.Run("signature over another key", func(t *testing.T) {
		// The node's genuine signature, but over another key than log.vkey.
		b := fresh2(t)
		b.Logs[0].LogKeySignature = otherSig
		r := verify(t, b, roots())
		wantFail(t, r, audit.CheckLogKey, amtsKeySig, "detached signature")
		wantAmtsUnproven(t, r, "no verified checkpoint")
	})
	t.Run("another vouched-for key", func(t *testing.T) {
		// Key, signature and a checkpoint signed with it, all genuine
		// work of the court's node (a second log it started), swapped in
		// together: the exporting node's index names the key it used.
		b := fresh2(t)
		b.Logs[0].LogKey, b.Logs[0].LogKeySignature = vkey, otherSig
		if b.Logs[0].Checkpoint, err = signedHead(fx2.amtsTree, amtsOrigin, skey); err != nil {
			t.Fatal(err)
		}
		r := verify(t, b, roots())
		wantFail(t, r, audit.CheckLogKey, amtsKeySig, "but the exporting node's index names "+fx2.amtsVKey)
		wantAmtsUnproven(t, r, "no verified checkpoint")
	})
}

func TestTamper_EvidenceInWrongLog(t *testing.T) {
	for _, tt := range []struct {
		name, file, log, want string
	}{
		// The Delivery claimed to be in the sender's node's log, where its
		// leaf index holds the SubmissionAcceptance.
		{"node evidence into the exporting node's log", relayDel, stadtOrigin, "a Delivery issued by amtsgericht.example, but placed in the log " + stadtOrigin},
		{"acknowledgement into the exporting node's log", relayAck, stadtOrigin, "by " + daemon.DevCourt + ", but placed in the log " + stadtOrigin},
		{"submission into the other node's log", relaySA, amtsOrigin, "a SubmissionAcceptance issued by stadt.example, but placed in the log " + amtsOrigin},
		{"into a log the bundle lacks", relayRet, tlog.Origin("landgericht.example"), "of which the bundle holds no checkpoint"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := fresh2(t)
			i := slices.Index(relayFiles, tt.file)
			b.Evidence[i].Log = tt.log
			r := verify(t, b, roots())
			wantFail(t, r, audit.CheckInclusion, tt.file, tt.want)
			if n := len(r.Failed()); n != 1 {
				t.Errorf("%d checks failed, want only the inclusion proof:\n%s", n, dump(r))
			}
		})
	}
	t.Run("the proof of the other log", func(t *testing.T) {
		// An evidence of the court's node claimed by the sender's node's
		// log, with a leaf index and proof that log could have: it is not
		// in that tree.
		b := fresh2(t)
		b.Evidence[2].Log, b.Evidence[2].LeafIndex, b.Evidence[2].Proof = stadtOrigin, b.Evidence[0].LeafIndex, b.Evidence[0].Proof
		r := verify(t, b, roots())
		wantFail(t, r, audit.CheckInclusion, relayDel, "")
	})
}

func TestTamper_ForeignCheckpointDropped(t *testing.T) {
	t.Run("log", func(t *testing.T) {
		b := fresh2(t)
		b.Logs = nil
		r := verify(t, b, roots())
		wantFail(t, r, audit.CheckIndex, bundle.FileIndex, "names the log "+amtsOrigin)
		wantAmtsUnproven(t, r, "of which the bundle holds no checkpoint")
	})
	t.Run("and from the index", func(t *testing.T) {
		// The exporting node itself leaves the other log out: the
		// evidence in it is then proven nowhere.
		b := fresh2(t)
		b.Logs = nil
		reindex(t, b, func(ix *bundle.Index) { ix.Logs = nil })
		r := verify(t, b, roots())
		wantCheck(t, r, audit.CheckIndex, bundle.FileIndex, audit.Pass, "")
		wantAmtsUnproven(t, r, "of which the bundle holds no checkpoint")
	})
	t.Run("file", func(t *testing.T) {
		fs := entryFiles(t, fx2.zip)
		r := audit.Verify("relayed.zip", zipFiles(t, slices.DeleteFunc(fs, func(f entryFile) bool { return f.name == amtsCP })), roots())
		wantFail(t, r, audit.CheckFormat, "relayed.zip", "lacks "+amtsCP)
	})
	t.Run("unnamed in the index", func(t *testing.T) {
		// A log the exporting node did not say it used.
		b := fresh2(t)
		reindex(t, b, func(ix *bundle.Index) { ix.Logs = nil })
		r := verify(t, b, roots())
		wantFail(t, r, audit.CheckIndex, bundle.FileIndex, "which the node does not name")
		wantFail(t, r, audit.CheckLogKey, amtsKeySig, "does not name the log "+amtsOrigin)
		wantAmtsUnproven(t, r, "no verified checkpoint")
	})
}

func TestTamper_ForeignCheckpointRolledBack(t *testing.T) {
	// A genuine checkpoint of the court's node's log, from before the
	// court acknowledged: the Acknowledgement cannot be in its tree.
	b := fresh2(t)
	b.Logs[0].Checkpoint = fx2.amtsBeforeAck
	r := verify(t, b, roots())
	wantCheck(t, r, audit.CheckLogKey, amtsKeySig, audit.Pass, "")
	wantFail(t, r, audit.CheckCheckpoint, amtsCP, "but the exporting node's index names "+amtsOrigin)
	wantAmtsUnproven(t, r, "no verified checkpoint")

	// Nor may the exporting node name the older one: that it used an
	// older checkpoint than the Acknowledgement's shows in the proof.
	reindex(t, b, func(ix *bundle.Index) { ix.Logs[0].TreeSize = fx2.amtsTree.Size() - 2 })
	r = verify(t, b, roots())
	wantCheck(t, r, audit.CheckCheckpoint, amtsCP, audit.Pass, "")
	wantFail(t, r, audit.CheckInclusion, relayAck, "is not in a tree of size")
}

func TestTamper_ForeignLogIsOwn(t *testing.T) {
	// The exporting node's own log given again as another log.
	b := fresh2(t)
	sig, err := cms.SignDetached([]byte(fx2.stadtVKey), pkitest.Signer(fx2.stadt))
	if err != nil {
		t.Fatal(err)
	}
	b.Logs = append(b.Logs, bundle.Log{Origin: stadtOrigin, Checkpoint: b.Checkpoint, LogKey: fx2.stadtVKey, LogKeySignature: sig})
	r := verify(t, b, roots())
	wantFail(t, r, audit.CheckLogKey, bundle.LogFile(stadtOrigin, bundle.FileLogKeySignature), "is the exporting node's own log")
}

func TestTamper_ForeignNodeRevoked(t *testing.T) {
	r := verify(t, fresh2(t), revokedOptions(t, fx2.amts.Cert.SerialNumber))
	wantFail(t, r, audit.CheckRevocation, amtsKeySig, "is revoked on CRL")
	for _, f := range amtsFiles[:3] {
		wantFail(t, r, audit.CheckRevocation, f, "is revoked on CRL")
	}
	wantCheck(t, r, audit.CheckRevocation, relaySA, audit.Pass, "")
}

func TestTamper_TwoLogsPinnedKeys(t *testing.T) {
	_, otherAmts, err := tlog.GenerateKey(amtsOrigin)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		keys []string
		file string // the checkpoint whose check is looked at
		want audit.Status
	}{
		{"both known", []string{fx2.stadtVKey, fx2.amtsVKey}, amtsCP, audit.Pass},
		{"other node's key unknown", []string{fx2.stadtVKey, otherAmts}, amtsCP, audit.Fail},
		{"other node's key not given", []string{fx2.stadtVKey}, amtsCP, audit.Indeterminate},
		{"exporting node's key not given", []string{fx2.amtsVKey}, bundle.FileCheckpoint, audit.Indeterminate},
	} {
		t.Run(tt.name, func(t *testing.T) {
			o := roots()
			o.LogKeys = tt.keys
			r := verify(t, fresh2(t), o)
			wantCheck(t, r, audit.CheckCheckpoint, tt.file, tt.want, "")
			if ok := tt.want == audit.Pass; r.OK() != ok {
				t.Errorf("report OK = %v, want %v:\n%s", r.OK(), ok, dump(r))
			}
		})
	}
}

// entryFile is one entry of a zip file.
type entryFile struct {
	name string
	data []byte
}

// entryFiles returns the entries of the zip file data, in order.
func entryFiles(t *testing.T, data []byte) []entryFile {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	var fs []entryFile
	for _, f := range zr.File {
		rc, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		fs = append(fs, entryFile{f.Name, b})
	}
	return fs
}

// zipFiles zips fs.
func zipFiles(t *testing.T, fs []entryFile) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, f := range fs {
		w, err := zw.Create(f.name)
		if err == nil {
			_, err = w.Write(f.data)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestTamper_TwoLogsIndexByParticipant(t *testing.T) {
	// Without a verified index nothing dates the log key's signature or
	// confirms the key: no log is established.
	b := fresh2(t)
	signed, err := cms.ParseSigned(b.Index)
	if err != nil {
		t.Fatal(err)
	}
	if b.Index, err = cms.Sign(signed.Content, pkitest.Signer(fx.agency)); err != nil {
		t.Fatal(err)
	}
	r := verify(t, b, roots())
	wantFail(t, r, audit.CheckIndexSignature, bundle.FileIndex, "only the node of stadt.example may sign")
	wantFail(t, r, audit.CheckLogKey, amtsKeySig, "no verified index")
	wantFail(t, r, audit.CheckCheckpoint, amtsCP, "no log key vouched for")
	wantFail(t, r, audit.CheckInclusion, relaySA, "no verified checkpoint")
	for _, f := range amtsFiles {
		wantFail(t, r, audit.CheckInclusion, f, "no verified checkpoint")
	}
}

// A checkpoint whose tree size is not the one the node's index names
// fails its check, and its values are not the report's Log: neither the
// JSON nor the page shows that log as vouched for by the node.
func TestTamper_LogOfFailedCheckpointNotShown(t *testing.T) {
	b := fresh2(t)
	reindex(t, b, func(ix *bundle.Index) { ix.TreeSize-- })
	r := verify(t, b, roots())
	wantFail(t, r, audit.CheckCheckpoint, bundle.FileCheckpoint, "but the node's index names")
	if r.Log != nil {
		t.Errorf("Report.Log = %+v although its checkpoint check failed", *r.Log)
	}
	page := pageOf(t, r)
	if strings.Contains(page, "Log (exportierende Stelle)") {
		t.Errorf("the page shows the exporting node's log as established")
	}
	// Its entries are shown only marked.
	for _, e := range r.Entries {
		if e.Log == stadtOrigin && e.Status != audit.Fail {
			t.Errorf("entry %s in the unproven log %s has status %s", e.File, e.Log, e.Status)
		}
	}
	entries := page[strings.Index(page, "Log-Einträge"):]
	row := entries[strings.Index(entries, relaySA):]
	if row = row[:strings.Index(row, "</tr>")]; !strings.Contains(row, "nicht verifiziert") {
		t.Errorf("the log entry of %s is not marked unverified: %s", relaySA, row)
	}
}

// revokedOptions returns the options with a CRL of fx's CA on which the
// certificate of serial is revoked.
func revokedOptions(t *testing.T, serial *big.Int) audit.Options {
	t.Helper()
	authority := copyCA(t)
	if err := authority.Revoke(serial, 1); err != nil {
		t.Fatal(err)
	}
	path, err := authority.WriteCRL(time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	o := roots()
	if o.CRL, err = os.ReadFile(path); err != nil {
		t.Fatal(err)
	}
	return o
}

// A revoked node vouches for nothing: its log is not among the report's
// logs, its signatures are marked revoked in JSON and in the table of
// signatures, and the entries of its log are marked unverified.
func TestTamper_RevokedNodeNotShownAsVouching(t *testing.T) {
	t.Run("court's node, the key of its log", func(t *testing.T) {
		r := verify(t, fresh2(t), revokedOptions(t, fx2.amts.Cert.SerialNumber))
		wantFail(t, r, audit.CheckRevocation, amtsKeySig, "is revoked on CRL")
		for _, l := range r.OtherLogs {
			t.Errorf("OtherLogs shows %s vouched for by %s, whose certificate is revoked", l.Origin, l.Node)
		}
		if r.Log == nil || r.Log.Origin != stadtOrigin {
			t.Errorf("the exporting node's log, established, is not shown: %+v", r.Log)
		}
		wantRevokedShown(t, r, amtsKeySig, amtsFiles[0])
		page := pageOf(t, r)
		if strings.Contains(page, "Log (andere Stelle)") {
			t.Error("the page shows the revoked node's log as established")
		}
	})
	t.Run("exporting node, its index", func(t *testing.T) {
		r := verify(t, fresh2(t), revokedOptions(t, fx2.stadt.Cert.SerialNumber))
		wantFail(t, r, audit.CheckRevocation, bundle.FileIndex, "is revoked on CRL")
		if r.Log != nil {
			t.Errorf("Report.Log = %+v, vouched for by the revoked exporting node", *r.Log)
		}
		if len(r.OtherLogs) != 1 || r.OtherLogs[0].Origin != amtsOrigin {
			t.Errorf("OtherLogs = %+v, want the court's node's log, which that node vouched for", r.OtherLogs)
		}
		wantRevokedShown(t, r, bundle.FileIndex, relaySA)
		if page := pageOf(t, r); strings.Contains(page, "Log (exportierende Stelle)") {
			t.Error("the page shows the revoked exporting node's log as established")
		}
	})
}

// wantRevokedShown fails t unless the signature of file is marked revoked
// in the report and in the page's table of signatures, and the log entry
// of entry is marked as not established.
func wantRevokedShown(t *testing.T, r *audit.Report, file, entry string) {
	t.Helper()
	i := slices.IndexFunc(r.Signatures, func(s audit.Signature) bool { return s.File == file })
	if i < 0 || r.Signatures[i].Status != audit.Fail || !r.Signatures[i].Revoked {
		t.Errorf("signature of %s: %+v, want status fail and revoked", file, r.Signatures)
	}
	for _, e := range r.Entries {
		if e.File == entry && e.Status != audit.Fail {
			t.Errorf("log entry of %s: status %s, want fail", entry, e.Status)
		}
	}
	page := pageOf(t, r)
	sigs := page[strings.Index(page, `id="signatures-0"`):]
	sigs = sigs[:strings.Index(sigs, "</details>")]
	row := sigs[strings.Index(sigs, "<code>"+file+"</code>"):]
	row = row[:strings.Index(row, "</tr>")]
	for _, want := range []string{"nicht verifiziert", "widerrufen"} {
		if !strings.Contains(row, want) {
			t.Errorf("the signatures table's row of %s lacks %q: %s", file, want, row)
		}
	}
}
