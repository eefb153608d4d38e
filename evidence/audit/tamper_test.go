package audit_test

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/merkle/testonly"

	"kurier.dev/kurier/broker/daemon"
	"kurier.dev/kurier/evidence"
	"kurier.dev/kurier/evidence/audit"
	"kurier.dev/kurier/evidence/bundle"
	"kurier.dev/kurier/pki"
	"kurier.dev/kurier/pki/ca"
	"kurier.dev/kurier/pki/cms"
	"kurier.dev/kurier/pki/pkitest"
	"kurier.dev/kurier/tlog"
)

// The tests in this file change the fixture's bundle as a forger would,
// with the parts a forger could have (anything in the bundle, a
// participant's own key, even the node's log key), and check that the
// verification fails and names the check and the file that caught it.
// `go test ./... -run Tamper` runs them all.

// flipTimeDigit returns a copy of an evidence DER with the last digit of
// the statement's time changed: the statement still parses, but the
// signature no longer covers it.
func flipTimeDigit(t *testing.T, der []byte) []byte {
	t.Helper()
	const key = `"time":"`
	i := bytes.Index(der, []byte(key))
	if i < 0 {
		t.Fatal("no statement time in the evidence")
	}
	// 2006-01-02T15:04:05.000000Z: the last microsecond digit.
	i += len(key) + len(evidence.TimeFormat) - len("Z07:00") - 1
	if d := der[i]; d < '0' || d > '9' || der[i+1] != 'Z' {
		t.Fatalf("byte %d of the evidence is %q, not the time's last digit", i, d)
	}
	out := bytes.Clone(der)
	out[i] = '0' + (out[i]-'0'+1)%10
	if _, err := evidence.Parse(out); err != nil {
		t.Fatalf("the changed evidence no longer parses: %v", err)
	}
	return out
}

func TestTamper_EvidenceByte(t *testing.T) {
	const file = "evidence/02-Delivery.p7m"
	for name, change := range map[string]func(*testing.T, []byte) []byte{
		"statement still valid": flipTimeDigit,
		"statement no longer valid": func(t *testing.T, der []byte) []byte {
			out := bytes.Clone(der)
			i := bytes.Index(out, []byte(`"type":"Delivery"`))
			if i < 0 {
				t.Fatal("no statement type in the Delivery")
			}
			out[i+len(`"type":"D`)] = 'E' // "DElivery"
			return out
		},
		"signature value": func(_ *testing.T, der []byte) []byte {
			out := bytes.Clone(der)
			out[len(out)-1] ^= 0x01
			return out
		},
	} {
		t.Run(name, func(t *testing.T) {
			b := fresh(t)
			b.Evidence[1].DER = change(t, b.Evidence[1].DER)
			r := verify(t, b, roots())
			wantFail(t, r, audit.CheckEvidenceSignature, file, "")
			wantFail(t, r, audit.CheckIndex, bundle.FileIndex, file+" is not among")
			wantFail(t, r, audit.CheckInclusion, file, "")
			for _, f := range evidenceFiles {
				if f != file {
					wantCheck(t, r, audit.CheckEvidenceSignature, f, audit.Pass, "")
				}
			}
		})
	}
}

func TestTamper_DropEvidence(t *testing.T) {
	t.Run("middle", func(t *testing.T) {
		b := fresh(t)
		b.Evidence = append(b.Evidence[:1:1], b.Evidence[2:]...) // without the Delivery
		r := verify(t, b, roots())
		wantFail(t, r, audit.CheckIndex, bundle.FileIndex, "the bundle lacks number 2")
		wantFail(t, r, audit.CheckChain, courtChain, "does not name the SHA-256 of evidence 1")
	})
	t.Run("last", func(t *testing.T) {
		b := fresh(t)
		b.Evidence = b.Evidence[:3] // without the Acknowledgement
		r := verify(t, b, roots())
		wantFail(t, r, audit.CheckIndex, bundle.FileIndex, "the bundle lacks number 4")
		// What is left is a chain of its own: only the index tells that
		// the message's history went on.
		wantCheck(t, r, audit.CheckChain, courtChain, audit.Pass, "SubmissionAcceptance → Delivery → Retrieval:")
	})
	t.Run("first", func(t *testing.T) {
		b := fresh(t)
		b.Evidence = b.Evidence[1:]
		r := verify(t, b, roots())
		wantFail(t, r, audit.CheckIndex, bundle.FileIndex, "the bundle lacks number 1")
		wantFail(t, r, audit.CheckChain, courtChain, "starts the chain")
	})
}

func TestTamper_SwapEvidence(t *testing.T) {
	b := fresh(t)
	b.Evidence[1], b.Evidence[2] = b.Evidence[2], b.Evidence[1]
	r := verify(t, b, roots())
	wantFail(t, r, audit.CheckChain, courtChain, "does not name the SHA-256 of evidence 1")
	wantFail(t, r, audit.CheckIndex, bundle.FileIndex, "not in the order the node listed them")
	// Each file on its own is intact.
	for _, f := range evidenceFiles {
		wantCheck(t, r, audit.CheckEvidenceSignature, f, audit.Pass, "")
		wantCheck(t, r, audit.CheckInclusion, f, audit.Pass, "")
	}
}

func TestTamper_Envelope(t *testing.T) {
	b := fresh(t)
	i := bytes.Index(b.Envelope, []byte("Vorgang 2"))
	if i < 0 {
		t.Fatal("the subject is not in envelope.json")
	}
	b.Envelope[i] = 'W' // "Worgang 2"
	r := verify(t, b, roots())
	wantFail(t, r, audit.CheckEnvelopeSignature, bundle.FileSignature, "")
	if r.MessageVerified {
		t.Errorf("the tampered subject %q is reported as what the sender signed", r.Subject)
	}
	for _, f := range evidenceFiles {
		wantFail(t, r, audit.CheckEnvelopeDigest, f, "the bundle's envelope has")
	}
}

func TestTamper_InclusionProof(t *testing.T) {
	const file = "evidence/03-Retrieval.p7m"
	t.Run("hash", func(t *testing.T) {
		b := fresh(t)
		if len(b.Evidence[2].Proof) == 0 {
			t.Fatal("the Retrieval has an empty inclusion proof")
		}
		b.Evidence[2].Proof[0][0] ^= 0x80
		r := verify(t, b, roots())
		wantFail(t, r, audit.CheckInclusion, file, "proof leads to root")
		if n := len(r.Failed()); n != 1 {
			t.Errorf("%d checks failed, want only the inclusion proof:\n%s", n, dump(r))
		}
	})
	t.Run("leaf index", func(t *testing.T) {
		b := fresh(t)
		b.Evidence[2].LeafIndex = b.Evidence[1].LeafIndex
		r := verify(t, b, roots())
		wantFail(t, r, audit.CheckInclusion, file, "")
	})
}

// forged returns a checkpoint of the node's log signed with the node's
// real log key: of size size with a root that is not the log's.
func forged(t *testing.T, origin string, size uint64) []byte {
	t.Helper()
	root := sha256.Sum256([]byte("a fork of the log"))
	c, err := tlog.Sign(tlog.Checkpoint{Origin: origin, Size: size, Root: root[:]}, fx.logKey)
	if err != nil {
		t.Fatalf("sign a forked checkpoint: %v", err)
	}
	return c
}

func TestTamper_ForkedCheckpoint(t *testing.T) {
	b := fresh(t)
	real := checkpoint(t, b.Checkpoint)
	b.Checkpoint = forged(t, real.Origin, real.Size)
	r := verify(t, b, roots())
	// The signature is the log's own, the size the index's: only the
	// proofs show that the tree is another.
	wantCheck(t, r, audit.CheckCheckpoint, bundle.FileCheckpoint, audit.Pass, "")
	for _, f := range evidenceFiles {
		wantFail(t, r, audit.CheckInclusion, f, "proof leads to root")
	}
}

func TestTamper_ForkedOlderCheckpoint(t *testing.T) {
	before := checkpoint(t, fx.before)
	o := roots()
	o.Since = []audit.File{{Name: "forked.checkpoint", Data: forged(t, before.Origin, before.Size)}}
	r := verify(t, fresh(t), o)
	wantCheck(t, r, audit.CheckOlderCheckpoint, "forked.checkpoint", audit.Pass, "")
	wantFail(t, r, audit.CheckConsistency, "forked.checkpoint", "the log forked")
}

func TestTamper_OlderCheckpointOtherKey(t *testing.T) {
	before := checkpoint(t, fx.before)
	skey, _, err := tlog.GenerateKey(before.Origin)
	if err != nil {
		t.Fatal(err)
	}
	c, err := tlog.Sign(before, skey)
	if err != nil {
		t.Fatal(err)
	}
	o := roots()
	o.Since = []audit.File{{Name: "other.checkpoint", Data: c}}
	r := verify(t, fresh(t), o)
	wantFail(t, r, audit.CheckOlderCheckpoint, "other.checkpoint", "not a checkpoint of the bundle's log")
}

func TestTamper_CheckpointOtherKey(t *testing.T) {
	b := fresh(t)
	real := checkpoint(t, b.Checkpoint)
	skey, _, err := tlog.GenerateKey(real.Origin)
	if err != nil {
		t.Fatal(err)
	}
	if b.Checkpoint, err = tlog.Sign(real, skey); err != nil {
		t.Fatal(err)
	}
	r := verify(t, b, roots())
	wantFail(t, r, audit.CheckCheckpoint, bundle.FileCheckpoint, "the key is the one the node's index names")
	wantFail(t, r, audit.CheckInclusion, evidenceFiles[0], "no verified checkpoint")
}

func TestTamper_RolledBackCheckpoint(t *testing.T) {
	// A genuine checkpoint of the same log, from before the court
	// acknowledged: the Acknowledgement cannot be in its tree.
	b := fresh(t)
	b.Checkpoint = bytes.Clone(fx.beforeAck)
	r := verify(t, b, roots())
	wantFail(t, r, audit.CheckCheckpoint, bundle.FileCheckpoint, "but the node's index names")
	for _, f := range evidenceFiles {
		wantFail(t, r, audit.CheckInclusion, f, "no verified checkpoint")
	}
}

func TestTamper_RolledBackLog(t *testing.T) {
	// The verifier holds a checkpoint newer than the bundle's. An honest
	// bundle exported earlier looks the same, since checkpoints carry no
	// time: the bundle cannot prove anything either way, which is not a
	// pass.
	o := roots()
	o.Since = []audit.File{{Name: "after.checkpoint", Data: fx.after}}
	r := verify(t, fresh(t), o)
	wantCheck(t, r, audit.CheckOlderCheckpoint, "after.checkpoint", audit.Pass, "")
	wantCheck(t, r, audit.CheckConsistency, "after.checkpoint", audit.Indeterminate, "is newer than the bundle's")
	if r.OK() {
		t.Error("report OK")
	}
}

// TestTamper_ForeignNodeIndex is a complete-looking bundle that another
// certified node made: its own log, its own key, holding the evidence
// without the Acknowledgement, and an index it signed listing just those.
func TestTamper_ForeignNodeIndex(t *testing.T) {
	authority := copyCA(t)
	evil, err := authority.IssueNode(filepath.Join(t.TempDir(), "evil"), []string{"evil.example"})
	if err != nil {
		t.Fatal(err)
	}
	origin := tlog.Origin("evil.example")
	skey, vkey, err := tlog.GenerateKey(origin)
	if err != nil {
		t.Fatal(err)
	}
	b := fresh(t)
	b.Evidence = b.Evidence[:3]
	tree := testonly.New(rfc6962.DefaultHasher)
	var digests []string
	for _, e := range b.Evidence {
		tree.AppendData(e.DER)
		digests = append(digests, evidence.Digest(e.DER))
	}
	for i := range b.Evidence {
		p, err := tree.InclusionProof(uint64(i), tree.Size())
		if err != nil {
			t.Fatal(err)
		}
		b.Evidence[i].Log, b.Evidence[i].LeafIndex, b.Evidence[i].Proof = origin, uint64(i), p
	}
	b.Consistency = nil
	if b.Checkpoint, err = tlog.Sign(tlog.Checkpoint{Origin: origin, Size: tree.Size(), Root: tree.Hash()}, skey); err != nil {
		t.Fatal(err)
	}
	ix := bundle.Index{
		Version: bundle.IndexVersion, MessageID: b.MessageID, RequestedBy: daemon.DevAgency,
		Time: time.Now().UTC(), Origin: origin, LogKey: vkey, TreeSize: tree.Size(), Evidence: digests,
		CRLSHA256: evidence.Digest(b.CRL),
	}
	js, err := ix.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if b.Index, err = cms.Sign(js, pkitest.Signer(evil)); err != nil {
		t.Fatal(err)
	}
	r := verify(t, b, roots())
	wantCheck(t, r, audit.CheckIndexSignature, bundle.FileIndex, audit.Pass, "evil.example")
	wantFail(t, r, audit.CheckIndex, bundle.FileIndex, "does not serve stadt.example")
	// Nor does its log prove evidence it did not issue.
	wantFail(t, r, audit.CheckInclusion, evidenceFiles[0], "issued by stadt.example, but placed in the log evil.example/kurier-log")
}

// TestTamper_CRLSwapped replaces the exported CRL by another genuine one of
// the CA.
func TestTamper_CRLSwapped(t *testing.T) {
	authority := copyCA(t)
	path, err := authority.WriteCRL(time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pemCRL, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(pemCRL)
	b := fresh(t)
	b.CRL = block.Bytes
	r := verify(t, b, roots())
	wantCheck(t, r, audit.CheckCRL, "", audit.Pass, "")
	wantFail(t, r, audit.CheckIndex, bundle.FileIndex, "not the CRL the node exported")
}

func TestTamper_NoConsistencyProof(t *testing.T) {
	b := fresh(t)
	b.Consistency = nil
	o := roots()
	o.Since = []audit.File{{Name: "before.checkpoint", Data: fx.before}}
	r := verify(t, b, o)
	wantFail(t, r, audit.CheckConsistency, "before.checkpoint", "no consistency proof")
}

func TestTamper_RevokedSigner(t *testing.T) {
	// A copy of the development CA, so that the running node keeps its
	// CRL: the same CA key signs a CRL on which the court is revoked.
	authority := copyCA(t)
	if err := authority.Revoke(fx.court.Cert.SerialNumber, 0); err != nil {
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
	r := verify(t, fresh(t), o)
	wantCheck(t, r, audit.CheckCRL, "", audit.Pass, "lists 1 revoked")
	wantFail(t, r, audit.CheckRevocation, "evidence/04-Acknowledgement.p7m", "is revoked on CRL")
	for _, f := range append([]string{bundle.FileSignature, bundle.FileIndex}, evidenceFiles[:3]...) {
		wantCheck(t, r, audit.CheckRevocation, f, audit.Pass, "")
	}

	// So does a single evidence file.
	ack := fresh(t).Evidence[3]
	r = audit.Verify(ack.Name, ack.DER, o)
	wantFail(t, r, audit.CheckRevocation, ack.Name, "is revoked on CRL")
}

func TestTamper_SenderSignsDelivery(t *testing.T) {
	const file = "evidence/02-Delivery.p7m"
	b := fresh(t)
	signed, err := cms.ParseSigned(b.Evidence[1].DER)
	if err != nil {
		t.Fatal(err)
	}
	if b.Evidence[1].DER, err = cms.Sign(signed.Content, pkitest.Signer(fx.agency)); err != nil {
		t.Fatal(err)
	}
	r := verify(t, b, roots())
	// A valid signature by a valid certificate, but not one that may
	// attest a delivery.
	wantCheck(t, r, audit.CheckEvidenceSignature, file, audit.Pass, "")
	wantFail(t, r, audit.CheckSignerRole, file, "must be signed by the node of amtsgericht.example")
}

// TestTamper_NodeSignsAcknowledgement has the recipient's node sign the
// recipient's answer in its name: its Acknowledgement as it stands, or a
// Rejection put in its place. Only the recipient's own certificate may
// sign either.
func TestTamper_NodeSignsAcknowledgement(t *testing.T) {
	const file = "evidence/04-Acknowledgement.p7m"
	node, err := pki.LoadIdentity(filepath.Join(fx.dir, "node"))
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		edit func(st []byte) []byte
		want string
	}{
		"Acknowledgement": {func(st []byte) []byte { return st }, "Acknowledgement must be signed by its recipient"},
		"Rejection": {func(st []byte) []byte {
			st = bytes.Replace(st, []byte(`"type":"Acknowledgement"`), []byte(`"type":"Rejection"`), 1)
			return bytes.Replace(st, []byte(`"reason":""`), []byte(`"reason":"cannot-open"`), 1)
		}, "Rejection must be signed by its recipient"},
	} {
		t.Run(name, func(t *testing.T) {
			b := fresh(t)
			signed, err := cms.ParseSigned(b.Evidence[3].DER)
			if err != nil {
				t.Fatal(err)
			}
			if b.Evidence[3].DER, err = cms.Sign(tc.edit(signed.Content), pkitest.Signer(node)); err != nil {
				t.Fatal(err)
			}
			r := verify(t, b, roots())
			wantFail(t, r, audit.CheckSignerRole, file, tc.want)
		})
	}
}

func TestTamper_IndexSignedByParticipant(t *testing.T) {
	for name, id := range map[string]*pki.Identity{"sender": fx.agency, "recipient": fx.court} {
		t.Run(name, func(t *testing.T) {
			b := fresh(t)
			signed, err := cms.ParseSigned(b.Index)
			if err != nil {
				t.Fatal(err)
			}
			if b.Index, err = cms.Sign(signed.Content, pkitest.Signer(id)); err != nil {
				t.Fatal(err)
			}
			r := verify(t, b, roots())
			wantFail(t, r, audit.CheckIndexSignature, bundle.FileIndex, "only the node of stadt.example may sign")
		})
	}
}

func TestTamper_IndexByte(t *testing.T) {
	for name, change := range map[string]func(ix []byte) int{
		"index still valid": func(ix []byte) int {
			i := bytes.Index(ix, []byte(`"tree_size":`)) + len(`"tree_size":`)
			ix[i] = '0' + (ix[i]-'0'+1)%10
			if ix[i] == '0' {
				ix[i] = '1' // no leading zero, or the index would not be canonical
			}
			return i
		},
		"index no longer valid": func(ix []byte) int {
			i := bytes.Index(ix, []byte(`"tree_size":`)) + 1
			ix[i] = 'T' // "Tree_size" decodes, but is not the canonical form
			return i
		},
	} {
		t.Run(name, func(t *testing.T) {
			b := fresh(t)
			if i := change(b.Index); i <= len(`"tree_size":`) {
				t.Fatal("no tree size in the index")
			}
			r := verify(t, b, roots())
			wantFail(t, r, audit.CheckIndexSignature, bundle.FileIndex, "")
		})
	}
}

// The node signed a statement or an index that is not in canonical form:
// intact files, but not what the protocol lets a node sign.
func TestTamper_SignedMalformed(t *testing.T) {
	node, err := pki.LoadIdentity(filepath.Join(fx.dir, "node"))
	if err != nil {
		t.Fatal(err)
	}
	indented := func(t *testing.T, der []byte) []byte {
		t.Helper()
		signed, err := cms.ParseSigned(der)
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if err := json.Indent(&buf, signed.Content, "", "  "); err != nil {
			t.Fatal(err)
		}
		out, err := cms.Sign(buf.Bytes(), pkitest.Signer(node))
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	t.Run("statement", func(t *testing.T) {
		const file = "evidence/02-Delivery.p7m"
		b := fresh(t)
		b.Evidence[1].DER = indented(t, b.Evidence[1].DER)
		r := verify(t, b, roots())
		wantFail(t, r, audit.CheckStatement, file, "not in canonical form")
		if cs := find(r, audit.CheckEvidenceSignature, file); len(cs) != 0 {
			t.Errorf("an intact file reported with %+v", cs)
		}
	})
	t.Run("index", func(t *testing.T) {
		b := fresh(t)
		b.Index = indented(t, b.Index)
		r := verify(t, b, roots())
		wantFail(t, r, audit.CheckIndex, bundle.FileIndex, "not in canonical form")
		if cs := find(r, audit.CheckIndexSignature, bundle.FileIndex); len(cs) != 0 {
			t.Errorf("an intact index reported with %+v", cs)
		}
	})
}

func TestTamper_OtherMessage(t *testing.T) {
	// The bundle claims to be about another of the agency's messages.
	b := fresh(t)
	b.MessageID = fx.otherID
	r := verify(t, b, roots())
	wantFail(t, r, audit.CheckEnvelope, bundle.FileEnvelope, "the bundle of "+b.MessageID)
	wantFail(t, r, audit.CheckIndex, bundle.FileIndex, "the index is of message "+fx.id)
}

func TestTamper_ForeignCA(t *testing.T) {
	// Verified against another federation's CA, nothing in the bundle is
	// trusted.
	other, err := ca.Init(filepath.Join(t.TempDir(), "ca"), "Fremde CA")
	if err != nil {
		t.Fatal(err)
	}
	r := verify(t, fresh(t), audit.Options{Roots: []*x509.Certificate{other.Certificate()}})
	wantFail(t, r, audit.CheckEnvelopeSignature, bundle.FileSignature, "")
	wantFail(t, r, audit.CheckIndexSignature, bundle.FileIndex, "")
	for _, f := range evidenceFiles {
		wantFail(t, r, audit.CheckEvidenceSignature, f, "")
	}
}

func TestTamper_UnknownLogKey(t *testing.T) {
	_, otherKey, err := tlog.GenerateKey(tlog.Origin("stadt.example"))
	if err != nil {
		t.Fatal(err)
	}
	o := roots()
	o.LogKeys = []string{otherKey}
	r := verify(t, fresh(t), o)
	wantFail(t, r, audit.CheckCheckpoint, bundle.FileCheckpoint, "not among the 1 keys given")

	o.LogKeys = []string{otherKey, fx.logVKey}
	if r := verify(t, fresh(t), o); !r.OK() {
		t.Errorf("with the node's own key among those given: %+v", r.Failed())
	}
}

// copyCA returns a copy of the development CA, so that a test can revoke
// and sign CRLs with the same key while the running node keeps its CRL.
func copyCA(t *testing.T) *ca.CA {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "ca")
	if err := os.CopyFS(dir, os.DirFS(filepath.Join(fx.dir, "ca"))); err != nil {
		t.Fatal(err)
	}
	authority, err := ca.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	return authority
}
