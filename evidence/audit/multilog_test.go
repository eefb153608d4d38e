package audit_test

import (
	"bytes"
	"crypto/x509"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/merkle/testonly"

	"kurier.dev/kurier/broker/daemon"
	"kurier.dev/kurier/envelope"
	"kurier.dev/kurier/evidence"
	"kurier.dev/kurier/evidence/audit"
	"kurier.dev/kurier/evidence/bundle"
	"kurier.dev/kurier/pki"
	"kurier.dev/kurier/pki/ca"
	"kurier.dev/kurier/pki/cms"
	"kurier.dev/kurier/pki/pkitest"
	"kurier.dev/kurier/tlog"
)

// fx2 is a relayed message's bundle with two logs, built for real: the
// message of fx.id, sent by the agency at the node of stadt.example and
// relayed to the court at the node of amtsgericht.example, two nodes with
// certificates of their own from the development CA and logs of their
// own. Its chain is SubmissionAcceptance (logged at stadt.example) →
// RelayAcceptance → Delivery → Retrieval → Acknowledgement (all logged at
// amtsgericht.example, the Acknowledgement signed by the court), and the
// sender's node exported it: its own log in checkpoint, the court's
// node's under logs/amtsgericht.example/.
var fx2 struct {
	stadt, amts         *pki.Identity // the two nodes
	stadtKey, amtsKey   string        // their log signing keys
	stadtVKey, amtsVKey string        // and verifier keys
	zip                 []byte        // the bundle as written
	stadtBefore         []byte        // stadt.example's checkpoint before the message; the bundle proves consistency with it
	amtsBeforeAck       []byte        // amtsgericht.example's genuine checkpoint before the Acknowledgement
	amtsTree, stadtTree *testonly.Tree
}

// The files of fx2's bundle.
const (
	amtsDir      = "logs/amtsgericht.example/"
	amtsCP       = amtsDir + "checkpoint"
	amtsKeySig   = amtsDir + "log.vkey.p7s"
	relaySA      = "evidence/01-SubmissionAcceptance.p7m"
	relayRA      = "evidence/02-RelayAcceptance.p7m"
	relayDel     = "evidence/03-Delivery.p7m"
	relayRet     = "evidence/04-Retrieval.p7m"
	relayAck     = "evidence/05-Acknowledgement.p7m"
	stadtOrigin  = "stadt.example/kurier-log"
	amtsOrigin   = "amtsgericht.example/kurier-log"
	stadtLeaves  = 2 // leaves in stadt.example's log before the message
	amtsLeavesAt = 1 // leaves in amtsgericht.example's log before it
)

// relayFiles are fx2's evidence files, and amtsFiles those in the log of
// amtsgericht.example.
var (
	relayFiles = []string{relaySA, relayRA, relayDel, relayRet, relayAck}
	amtsFiles  = relayFiles[1:]
)

// setUpTwoLogs builds fx2 in dir from fx's message and CA.
func setUpTwoLogs(dir string) error {
	caDir := filepath.Join(dir, "ca-two-logs")
	if err := os.CopyFS(caDir, os.DirFS(filepath.Join(fx.dir, "ca"))); err != nil {
		return err
	}
	authority, err := ca.Open(caDir)
	if err != nil {
		return err
	}
	if fx2.stadt, err = authority.IssueNode(filepath.Join(dir, "node-stadt"), []string{"stadt.example"}); err != nil {
		return err
	}
	if fx2.amts, err = authority.IssueNode(filepath.Join(dir, "node-amtsgericht"), []string{"amtsgericht.example"}); err != nil {
		return err
	}
	if fx2.stadtKey, fx2.stadtVKey, err = tlog.GenerateKey(stadtOrigin); err != nil {
		return err
	}
	if fx2.amtsKey, fx2.amtsVKey, err = tlog.GenerateKey(amtsOrigin); err != nil {
		return err
	}
	one, err := bundle.Read(bytes.NewReader(fx.zip), int64(len(fx.zip)))
	if err != nil {
		return err
	}
	chain, err := relayChain(one.Envelope)
	if err != nil {
		return err
	}
	b, err := twoLogBundle(one, chain)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	if err := b.Write(&buf, time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)); err != nil {
		return err
	}
	fx2.zip = buf.Bytes()
	return nil
}

// relayChain signs the relayed message's chain, each evidence by its
// issuer, a millisecond apart.
func relayChain(envBytes []byte) ([][]byte, error) {
	env, err := envelope.Parse(envBytes)
	if err != nil {
		return nil, err
	}
	t := time.Now().UTC().Truncate(time.Microsecond)
	steps := []struct {
		typ    evidence.Type
		issuer string
		signer *pki.Identity
	}{
		{evidence.SubmissionAcceptance, "stadt.example", fx2.stadt},
		{evidence.RelayAcceptance, "amtsgericht.example", fx2.amts},
		{evidence.Delivery, "amtsgericht.example", fx2.amts},
		{evidence.Retrieval, "amtsgericht.example", fx2.amts},
		{evidence.Acknowledgement, daemon.DevCourt, fx.court},
	}
	var chain [][]byte
	prev := ""
	for i, s := range steps {
		st := &evidence.Statement{
			Version: evidence.StatementVersion, Type: s.typ, MessageID: env.ID,
			EnvelopeSHA256: envelope.Digest(envBytes), PayloadSHA256: env.PayloadSHA256,
			Sender: env.From, Recipient: daemon.DevCourt, Issuer: s.issuer,
			Time: t.Add(time.Duration(i) * time.Millisecond), PreviousSHA256: prev,
		}
		der, err := evidence.Sign(st, pkitest.Signer(s.signer))
		if err != nil {
			return nil, err
		}
		chain = append(chain, der)
		prev = evidence.Digest(der)
	}
	return chain, nil
}

// twoLogBundle logs the chain, the SubmissionAcceptance at stadt.example
// and the rest at amtsgericht.example, each after some earlier leaves and
// before a later one, and makes the sender's node's bundle of it.
func twoLogBundle(one *bundle.Bundle, chain [][]byte) (*bundle.Bundle, error) {
	fx2.stadtTree, fx2.amtsTree = testonly.New(rfc6962.DefaultHasher), testonly.New(rfc6962.DefaultHasher)
	for i := range stadtLeaves {
		fx2.stadtTree.AppendData(fmt.Appendf(nil, "earlier evidence %d at stadt.example", i))
	}
	var err error
	if fx2.stadtBefore, err = signedHead(fx2.stadtTree, stadtOrigin, fx2.stadtKey); err != nil {
		return nil, err
	}
	for i := range amtsLeavesAt {
		fx2.amtsTree.AppendData(fmt.Appendf(nil, "earlier evidence %d at amtsgericht.example", i))
	}
	b := &bundle.Bundle{
		Version: bundle.Version, MessageID: one.MessageID, Envelope: one.Envelope, Signature: one.Signature, CRL: one.CRL,
		Certificates: append([]*x509.Certificate{fx2.stadt.Cert, fx2.amts.Cert, fx.agency.Cert, fx.court.Cert}, fx.agency.Roots...),
	}
	for i, der := range chain {
		tree, log := fx2.amtsTree, amtsOrigin
		if i == 0 {
			tree, log = fx2.stadtTree, stadtOrigin
		}
		if i == len(chain)-1 {
			if fx2.amtsBeforeAck, err = signedHead(fx2.amtsTree, amtsOrigin, fx2.amtsKey); err != nil {
				return nil, err
			}
		}
		tree.AppendData(der)
		st, err := evidence.Parse(der)
		if err != nil {
			return nil, err
		}
		b.Evidence = append(b.Evidence, bundle.Evidence{Name: bundle.EvidenceName(i, st.Statement.Type), DER: der, Log: log, LeafIndex: tree.Size() - 1})
	}
	fx2.stadtTree.AppendData([]byte("later evidence at stadt.example"))
	fx2.amtsTree.AppendData([]byte("later evidence at amtsgericht.example"))
	if err := proveAndSign(b); err != nil {
		return nil, err
	}
	return b, nil
}

// proveAndSign adds the inclusion and consistency proofs, the two
// checkpoints, the court's node's signature over its log key, and the
// sender's node's index.
func proveAndSign(b *bundle.Bundle) error {
	for i, e := range b.Evidence {
		tree := fx2.amtsTree
		if e.Log == stadtOrigin {
			tree = fx2.stadtTree
		}
		p, err := tree.InclusionProof(e.LeafIndex, tree.Size())
		if err != nil {
			return err
		}
		b.Evidence[i].Proof = p
	}
	p, err := fx2.stadtTree.ConsistencyProof(stadtLeaves, fx2.stadtTree.Size())
	if err != nil {
		return err
	}
	b.Consistency = []bundle.Consistency{{From: stadtLeaves, Proof: p}}
	if b.Checkpoint, err = signedHead(fx2.stadtTree, stadtOrigin, fx2.stadtKey); err != nil {
		return err
	}
	l := bundle.Log{Origin: amtsOrigin, LogKey: fx2.amtsVKey}
	if l.Checkpoint, err = signedHead(fx2.amtsTree, amtsOrigin, fx2.amtsKey); err != nil {
		return err
	}
	if l.LogKeySignature, err = cms.SignDetached([]byte(l.LogKey), pkitest.Signer(fx2.amts)); err != nil {
		return err
	}
	b.Logs = []bundle.Log{l}
	last, err := evidence.Parse(b.Evidence[len(b.Evidence)-1].DER)
	if err != nil {
		return err
	}
	ix := twoLogIndex(b, last.Statement.Time.Add(time.Millisecond))
	b.Index, err = signIndex(ix, fx2.stadt)
	return err
}

// twoLogIndex returns the index the sender's node signs for b at t.
func twoLogIndex(b *bundle.Bundle, t time.Time) *bundle.Index {
	ix := &bundle.Index{
		Version: bundle.IndexVersion, MessageID: b.MessageID, RequestedBy: daemon.DevAgency, Time: t,
		Origin: stadtOrigin, LogKey: fx2.stadtVKey, TreeSize: fx2.stadtTree.Size(),
		Logs:      []bundle.IndexLog{{Origin: amtsOrigin, LogKey: fx2.amtsVKey, TreeSize: fx2.amtsTree.Size()}},
		CRLSHA256: evidence.Digest(b.CRL),
	}
	for _, e := range b.Evidence {
		ix.Evidence = append(ix.Evidence, evidence.Digest(e.DER))
	}
	return ix
}

func signIndex(ix *bundle.Index, node *pki.Identity) ([]byte, error) {
	js, err := ix.Marshal()
	if err != nil {
		return nil, err
	}
	return cms.Sign(js, pkitest.Signer(node))
}

// signedHead returns tree's current checkpoint signed with skey.
func signedHead(tree *testonly.Tree, origin, skey string) ([]byte, error) {
	return tlog.Sign(tlog.Checkpoint{Origin: origin, Size: tree.Size(), Root: tree.Hash()}, skey)
}

// fresh2 returns a copy of fx2's bundle.
func fresh2(t *testing.T) *bundle.Bundle {
	t.Helper()
	b, err := bundle.Read(bytes.NewReader(fx2.zip), int64(len(fx2.zip)))
	if err != nil {
		t.Fatalf("read the two-log bundle: %v", err)
	}
	return b
}

// reindex signs b's index anew by the sender's node after edit changed it.
func reindex(t *testing.T, b *bundle.Bundle, edit func(ix *bundle.Index)) {
	t.Helper()
	signed, err := cms.ParseSigned(b.Index)
	if err != nil {
		t.Fatal(err)
	}
	ix, err := bundle.ParseIndex(signed.Content)
	if err != nil {
		t.Fatal(err)
	}
	edit(ix)
	if b.Index, err = signIndex(ix, fx2.stadt); err != nil {
		t.Fatal(err)
	}
}

func TestVerify_TwoLogs(t *testing.T) {
	o := roots()
	o.Since = []audit.File{{Name: "stadt.checkpoint", Data: fx2.stadtBefore}}
	r := audit.Verify("relayed.zip", fx2.zip, o)
	if !r.OK() {
		t.Fatalf("the two-log bundle does not verify:\n%s", dump(r))
	}
	for _, f := range relayFiles {
		for _, name := range []string{audit.CheckEvidenceSignature, audit.CheckSignerRole, audit.CheckRevocation, audit.CheckStatement, audit.CheckInclusion} {
			wantCheck(t, r, name, f, audit.Pass, "")
		}
	}
	wantCheck(t, r, audit.CheckInclusion, relaySA, audit.Pass, "in the log of "+stadtOrigin)
	for _, f := range amtsFiles {
		wantCheck(t, r, audit.CheckInclusion, f, audit.Pass, "in the log of "+amtsOrigin)
	}
	wantCheck(t, r, audit.CheckLogKey, amtsKeySig, audit.Pass, "vouched for by node amtsgericht.example")
	wantCheck(t, r, audit.CheckRevocation, amtsKeySig, audit.Pass, "")
	wantCheck(t, r, audit.CheckCheckpoint, amtsCP, audit.Pass, fx2.amtsVKey)
	wantCheck(t, r, audit.CheckCheckpoint, bundle.FileCheckpoint, audit.Pass, fx2.stadtVKey)
	wantCheck(t, r, audit.CheckIndex, bundle.FileIndex, audit.Pass, "and the checkpoints of 1 other log it used")
	wantCheck(t, r, audit.CheckConsistency, "stadt.checkpoint", audit.Pass, "")
	wantCheck(t, r, audit.CheckChain, courtChain, audit.Pass, "SubmissionAcceptance → RelayAcceptance → Delivery → Retrieval → Acknowledgement")

	// The report names both logs and where each evidence is.
	if r.Log == nil || r.Log.Origin != stadtOrigin || r.Log.Key != fx2.stadtVKey || r.Log.Node != "node stadt.example" {
		t.Errorf("exporting node's log = %+v", r.Log)
	}
	if len(r.OtherLogs) != 1 || r.OtherLogs[0].Origin != amtsOrigin || r.OtherLogs[0].TreeSize != fx2.amtsTree.Size() ||
		r.OtherLogs[0].Key != fx2.amtsVKey || r.OtherLogs[0].Node != "node amtsgericht.example" {
		t.Errorf("other logs = %+v", r.OtherLogs)
	}
	var where []string
	for _, e := range r.Entries {
		where = append(where, fmt.Sprintf("%s %s %d", e.File, e.Log, e.LeafIndex))
	}
	want := []string{
		relaySA + " " + stadtOrigin + " 2", relayRA + " " + amtsOrigin + " 1", relayDel + " " + amtsOrigin + " 2",
		relayRet + " " + amtsOrigin + " 3", relayAck + " " + amtsOrigin + " 4",
	}
	if !slices.Equal(where, want) {
		t.Errorf("log entries = %q, want %q", where, want)
	}
	if !slices.ContainsFunc(r.Signatures, func(s audit.Signature) bool {
		return s.File == amtsKeySig && s.What == "log key" && s.Signer == "node amtsgericht.example"
	}) {
		t.Errorf("signatures lack the log key's: %+v", r.Signatures)
	}

	t.Run("html", func(t *testing.T) {
		var buf bytes.Buffer
		if err := audit.WriteHTML(&buf, []*audit.Report{r}); err != nil {
			t.Fatal(err)
		}
		key := strings.ReplaceAll(fx2.amtsVKey, "+", "&#43;") // as html/template writes it
		for _, s := range []string{key, "vouched for by node amtsgericht.example", "Log-Einträge", amtsOrigin} {
			if !bytes.Contains(buf.Bytes(), []byte(s)) {
				t.Errorf("the report page lacks %q", s)
			}
		}
	})
}

// TestTwoLogs_OpenSSL checks a log key's signature as README.txt tells a
// person to, with OpenSSL alone.
func TestTwoLogs_OpenSSL(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl not on PATH")
	}
	dir := t.TempDir()
	for _, f := range entryFiles(t, fx2.zip) {
		if strings.HasPrefix(f.name, amtsDir) {
			if err := os.WriteFile(filepath.Join(dir, filepath.Base(f.name)), f.data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	run := func(content string) error {
		cmd := exec.Command(openssl, "cms", "-verify", "-inform", "DER", "-in", "log.vkey.p7s", "-content", content,
			"-binary", "-CAfile", filepath.Join(fx.dir, "ca", "ca.pem"), "-out", os.DevNull)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	}
	if err := run("log.vkey"); err != nil {
		t.Errorf("openssl cms -verify of log.vkey.p7s: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "other.vkey"), []byte(fx2.stadtVKey), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := run("other.vkey"); err == nil {
		t.Error("openssl accepts log.vkey.p7s over another key")
	}
}
