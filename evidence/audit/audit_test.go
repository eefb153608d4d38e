package audit_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"kurier.dev/kurier/broker/daemon"
	"kurier.dev/kurier/broker/daemon/daemontest"
	"kurier.dev/kurier/client"
	"kurier.dev/kurier/evidence/audit"
	"kurier.dev/kurier/evidence/bundle"
	"kurier.dev/kurier/pki"
	"kurier.dev/kurier/pki/ca"
	"kurier.dev/kurier/tlog"
)

// fx is the fixture every test in this package shares: one message from
// the agency to the court, delivered, retrieved and acknowledged on a real
// development node, exported by the agency, and checkpoints of the node's
// log from before, during and after that message's history.
var fx struct {
	dir    string        // the development directory: CA, node, identities
	agency *pki.Identity // poststelle@stadt.example, the sender
	court  *pki.Identity // eingang@amtsgericht.example, the recipient
	crl    []byte        // the CA's CRL (PEM) as the node uses it

	id      string // the message
	otherID string // another message from the agency to the court
	zip     []byte // id's bundle, as the agency exported it, written as a zip

	// Signed checkpoints of the node's log: taken before the message was
	// sent (the bundle proves consistency with it), after the court
	// retrieved it but before it acknowledged it, and after the export,
	// once the log had grown by another message.
	before, beforeAck, after []byte
	// logKey is the node's checkpoint signing key, logVKey its verifier key.
	logKey, logVKey string
	// signed and sealed are the court's kept originals of id (fetch
	// --keep-sealed): the sender-signed original and the payload as
	// delivered; otherSigned and otherSealed those of otherID.
	signed, sealed, otherSigned, otherSealed []byte
}

// The evidence files of the bundle, in order.
var evidenceFiles = []string{
	"evidence/01-SubmissionAcceptance.p7m",
	"evidence/02-Delivery.p7m",
	"evidence/03-Retrieval.p7m",
	"evidence/04-Acknowledgement.p7m",
}

const courtChain = "chain for " + daemon.DevCourt

func TestMain(m *testing.M) { daemontest.Main(m, setUp) }

// setUp runs the message's history on node n and fills fx.
func setUp(n *daemontest.Node) error {
	dir := n.Dir
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	fx.dir, fx.agency, fx.court = dir, n.Agency, n.Court
	var err error
	if fx.crl, err = os.ReadFile(n.CRL); err != nil {
		return err
	}
	key, err := os.ReadFile(filepath.Join(dir, "node", "log.key"))
	if err != nil {
		return err
	}
	fx.logKey = strings.TrimSpace(string(key))
	if fx.logVKey, err = tlog.VerifierKey(fx.logKey); err != nil {
		return err
	}

	ag, err := n.Dial(ctx, n.Agency)
	if err != nil {
		return err
	}
	defer ag.Close()
	ct, err := n.Dial(ctx, n.Court)
	if err != nil {
		return err
	}
	defer ct.Close()
	send := func(subject string) (string, error) {
		r, err := ag.Send(ctx, client.Message{
			To: []string{daemon.DevCourt}, Subject: subject,
			Documents: []client.Document{{Name: "schriftsatz.txt", Data: []byte("Klageschrift, " + subject)}},
		}, nil)
		if err != nil {
			return "", fmt.Errorf("send: %w", err)
		}
		return r.MessageID, nil
	}

	// A first message, so that the checkpoint taken before the one under
	// test is of a tree that is not empty.
	if fx.otherID, err = send("Vorgang 1"); err != nil {
		return err
	}
	if fx.before, err = ag.Checkpoint(ctx); err != nil {
		return err
	}
	if fx.id, err = send("Vorgang 2"); err != nil {
		return err
	}
	inbox := filepath.Join(dir, "inbox")
	if err := os.Mkdir(inbox, 0o700); err != nil {
		return err
	}
	f, err := ct.FetchWith(ctx, fx.id, client.FetchOptions{Dir: inbox, PerMessage: true, KeepSealed: true})
	if err != nil {
		return err
	}
	if fx.signed, err = os.ReadFile(f.Signed); err != nil {
		return err
	}
	if fx.sealed, err = os.ReadFile(f.Sealed); err != nil {
		return err
	}
	if fx.beforeAck, err = ag.Checkpoint(ctx); err != nil {
		return err
	}
	if _, err := ct.Acknowledge(ctx, f); err != nil {
		return err
	}
	b, _, err := ag.Export(ctx, fx.id, fx.before)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	if err := b.Write(&buf, time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)); err != nil {
		return err
	}
	fx.zip = buf.Bytes()
	if _, err := send("Vorgang 3"); err != nil {
		return err
	}
	if fx.after, err = ag.Checkpoint(ctx); err != nil {
		return err
	}

	// The tests rely on these sizes growing strictly.
	var sizes []uint64
	for _, c := range [][]byte{fx.before, fx.beforeAck, b.Checkpoint, fx.after} {
		s, err := tlog.PeekSize(c)
		if err != nil {
			return err
		}
		if len(sizes) > 0 && s <= sizes[len(sizes)-1] {
			return fmt.Errorf("checkpoint sizes %v then %d: the log did not grow", sizes, s)
		}
		sizes = append(sizes, s)
	}
	if len(b.Evidence) != len(evidenceFiles) {
		return fmt.Errorf("the export holds %d evidence files, want %d", len(b.Evidence), len(evidenceFiles))
	}
	// The other message's originals, fetched last so that the log sizes
	// above stay as they are.
	of, err := ct.FetchWith(ctx, fx.otherID, client.FetchOptions{Dir: inbox, PerMessage: true, KeepSealed: true})
	if err != nil {
		return err
	}
	if fx.otherSigned, err = os.ReadFile(of.Signed); err != nil {
		return err
	}
	if fx.otherSealed, err = os.ReadFile(of.Sealed); err != nil {
		return err
	}
	return setUpTwoLogs(dir)
}

// fresh returns a copy of the fixture's bundle that a test may change at
// will: read anew from the zip file.
func fresh(t *testing.T) *bundle.Bundle {
	t.Helper()
	b, err := bundle.Read(bytes.NewReader(fx.zip), int64(len(fx.zip)))
	if err != nil {
		t.Fatalf("read the fixture bundle: %v", err)
	}
	return b
}

// verify writes b as a zip file and verifies it offline, as `kurier
// verify` does.
func verify(t *testing.T, b *bundle.Bundle, o audit.Options) *audit.Report {
	t.Helper()
	var buf bytes.Buffer
	if err := b.Write(&buf, time.Now()); err != nil {
		t.Fatalf("Write: %v", err)
	}
	return audit.Verify("bundle.zip", buf.Bytes(), o)
}

// roots returns options with the federation's CA certificate as the trust
// anchor.
func roots() audit.Options { return audit.Options{Roots: fx.agency.Roots} }

// checkpoint returns the fixture checkpoint c, opened.
func checkpoint(t *testing.T, c []byte) tlog.Checkpoint {
	t.Helper()
	cp, err := tlog.Open(c, fx.logVKey)
	if err != nil {
		t.Fatalf("open checkpoint: %v", err)
	}
	return cp
}

// find returns the checks of r named name about subject.
func find(r *audit.Report, name, subject string) []audit.Check {
	var out []audit.Check
	for _, c := range r.Checks {
		if c.Name == name && c.Subject == subject {
			out = append(out, c)
		}
	}
	return out
}

// wantCheck fails t unless r has a check name about subject with status s
// whose detail holds detail.
func wantCheck(t *testing.T, r *audit.Report, name, subject string, s audit.Status, detail string) {
	t.Helper()
	cs := find(r, name, subject)
	if len(cs) == 0 {
		t.Errorf("no %q check of %q; checks:\n%s", name, subject, dump(r))
		return
	}
	for _, c := range cs {
		if c.Status == s && strings.Contains(c.Detail, detail) {
			return
		}
	}
	t.Errorf("%q check of %q = %+v, want status %s with detail containing %q", name, subject, cs, s, detail)
}

// wantFail fails t if r is OK or lacks a failed check name about subject
// whose detail holds detail.
func wantFail(t *testing.T, r *audit.Report, name, subject, detail string) {
	t.Helper()
	if r.OK() {
		t.Errorf("report OK, want a failed %q check of %q", name, subject)
	}
	wantCheck(t, r, name, subject, audit.Fail, detail)
}

func dump(r *audit.Report) string {
	var b strings.Builder
	for _, c := range r.Checks {
		fmt.Fprintf(&b, "  %-13s %-22s %-40s %s\n", c.Status, c.Name, c.Subject, c.Detail)
	}
	return b.String()
}

// allChecks are the names of every check a bundle verification with an
// older checkpoint makes.
var allChecks = []string{
	audit.CheckFormat, audit.CheckTrustAnchor, audit.CheckCRL, audit.CheckEnvelope,
	audit.CheckEnvelopeSignature, audit.CheckEvidenceSignature, audit.CheckSignerRole,
	audit.CheckRevocation, audit.CheckStatement, audit.CheckEnvelopeDigest,
	audit.CheckPayloadDigest, audit.CheckChain, audit.CheckIndexSignature, audit.CheckIndex,
	audit.CheckCheckpoint, audit.CheckInclusion, audit.CheckConsistency, audit.CheckOlderCheckpoint,
}

func TestVerify_Bundle(t *testing.T) {
	o := roots()
	o.Since = []audit.File{{Name: "before.checkpoint", Data: fx.before}}
	r := audit.Verify("bundle.zip", fx.zip, o)
	if !r.OK() || r.Worst() != audit.Pass || len(r.Failed()) != 0 {
		t.Fatalf("the untouched bundle does not verify:\n%s", dump(r))
	}
	if !r.MessageVerified || r.Subject == "" || len(r.Documents) == 0 || r.Documents[0].Name == "" {
		t.Errorf("the genuine message is not reported as verified, with its subject and documents: %+v", r)
	}

	// Every check is named, with a known name, and every kind is made.
	made := map[string]bool{}
	for _, c := range r.Checks {
		if !slices.Contains(allChecks, c.Name) {
			t.Errorf("check with unknown name %q: %+v", c.Name, c)
		}
		if c.Detail == "" {
			t.Errorf("check without detail: %+v", c)
		}
		made[c.Name] = true
	}
	for _, name := range allChecks {
		if !made[name] {
			t.Errorf("no %q check made", name)
		}
	}

	// Each evidence file, every check of its own.
	for _, f := range evidenceFiles {
		for _, name := range []string{
			audit.CheckEvidenceSignature, audit.CheckSignerRole, audit.CheckRevocation,
			audit.CheckStatement, audit.CheckEnvelopeDigest, audit.CheckPayloadDigest, audit.CheckInclusion,
		} {
			wantCheck(t, r, name, f, audit.Pass, "")
		}
	}
	for _, c := range []struct{ name, subject string }{
		{audit.CheckEnvelope, bundle.FileEnvelope},
		{audit.CheckEnvelopeSignature, bundle.FileSignature},
		{audit.CheckRevocation, bundle.FileSignature},
		{audit.CheckIndexSignature, bundle.FileIndex},
		{audit.CheckRevocation, bundle.FileIndex},
		{audit.CheckIndex, bundle.FileIndex},
		{audit.CheckCheckpoint, bundle.FileCheckpoint},
		{audit.CheckChain, courtChain},
		{audit.CheckOlderCheckpoint, "before.checkpoint"},
		{audit.CheckConsistency, "before.checkpoint"},
	} {
		wantCheck(t, r, c.name, c.subject, audit.Pass, "")
	}
	wantCheck(t, r, audit.CheckTrustAnchor, "", audit.Pass, audit.Fingerprint(fx.agency.Roots[0]))

	// What the report says about the message.
	want := []audit.Chain{{
		Recipient: daemon.DevCourt,
		Types:     []string{"SubmissionAcceptance", "Delivery", "Retrieval", "Acknowledgement"},
		State:     "Acknowledgement",
	}}
	if diff := cmp.Diff(want, r.Chains); diff != "" {
		t.Errorf("chains (-want +got):\n%s", diff)
	}
	if r.MessageID != fx.id || r.Sender != daemon.DevAgency || !slices.Equal(r.Recipients, []string{daemon.DevCourt}) || r.Subject != "Vorgang 2" {
		t.Errorf("report names message %s from %s to %v, subject %q", r.MessageID, r.Sender, r.Recipients, r.Subject)
	}
	cp := checkpoint(t, fresh(t).Checkpoint)
	if r.Log == nil || r.Log.TreeSize != cp.Size || r.Log.Origin != cp.Origin {
		t.Errorf("log = %+v, want %s at size %d", r.Log, cp.Origin, cp.Size)
	}
	var what []string
	for _, s := range r.Signatures {
		what = append(what, s.File+" "+s.What)
	}
	wantWhat := []string{
		"envelope.p7s envelope", "index.p7m index",
		"evidence/01-SubmissionAcceptance.p7m SubmissionAcceptance", "evidence/02-Delivery.p7m Delivery",
		"evidence/03-Retrieval.p7m Retrieval", "evidence/04-Acknowledgement.p7m Acknowledgement",
	}
	if diff := cmp.Diff(wantWhat, what); diff != "" {
		t.Errorf("signatures (-want +got):\n%s", diff)
	}
	if s := r.Signatures[len(r.Signatures)-1]; s.Signer != "participant "+daemon.DevCourt || s.Serial != fmt.Sprintf("%x", fx.court.Cert.SerialNumber) {
		t.Errorf("the acknowledgement's signature = %+v, want the court's", s)
	}

	t.Run("struct", func(t *testing.T) {
		// audit.Bundle on the bundle read agrees with audit.Verify on the
		// file.
		r2 := audit.Bundle("bundle.zip", fresh(t), o)
		strip := func(r *audit.Report) *audit.Report { c := *r; c.Verified = time.Time{}; return &c }
		if diff := cmp.Diff(strip(r), strip(r2)); diff != "" {
			t.Errorf("Bundle and Verify differ (-Verify +Bundle):\n%s", diff)
		}
	})
}

func TestVerify_NoRoots(t *testing.T) {
	r := audit.Verify("bundle.zip", fx.zip, audit.Options{})
	if r.OK() {
		t.Fatal("report OK without a trust anchor given")
	}
	wantCheck(t, r, audit.CheckTrustAnchor, "", audit.Indeterminate, "taken from the file itself")
	if r.Worst() != audit.Indeterminate {
		t.Errorf("worst = %s, want %s:\n%s", r.Worst(), audit.Indeterminate, dump(r))
	}
	// Everything else holds: the bundle's own CA certificate signed it all.
	for _, c := range r.Failed() {
		if c.Name != audit.CheckTrustAnchor {
			t.Errorf("check not passed: %+v", c)
		}
	}
}

func TestVerify_Garbage(t *testing.T) {
	for name, data := range map[string][]byte{
		"truncated zip": fx.zip[:len(fx.zip)/2],
		"zip header":    []byte("PK\x03\x04 and nothing else"),
	} {
		t.Run(name, func(t *testing.T) {
			r := audit.Verify("bundle.zip", data, roots())
			wantFail(t, r, audit.CheckFormat, "bundle.zip", bundle.ErrFormat.Error())
			if len(r.Checks) != 1 {
				t.Errorf("checks after a format failure:\n%s", dump(r))
			}
		})
	}
	t.Run("neither zip nor evidence", func(t *testing.T) {
		r := audit.Verify("x.p7m", []byte("not DER"), roots())
		wantFail(t, r, audit.CheckEvidenceSignature, "x.p7m", "")
	})
}

func TestWriteHTML(t *testing.T) {
	r := audit.Verify("bundle.zip", fx.zip, roots())
	if !r.OK() {
		t.Fatalf("report not OK:\n%s", dump(r))
	}
	var buf bytes.Buffer
	if err := audit.WriteHTML(&buf, []*audit.Report{r}); err != nil {
		t.Fatalf("WriteHTML: %v", err)
	}
	page := buf.String()
	for _, want := range []string{fx.id, "bestanden", "Alle Prüfungen bestanden", daemon.DevCourt, "04-Acknowledgement.p7m"} {
		if !strings.Contains(page, want) {
			t.Errorf("the report page lacks %q", want)
		}
	}
	if strings.Contains(page, "<script") {
		t.Error("the report page holds a script")
	}
	// Nothing to load: no source, stylesheet, import or remote link.
	for _, bad := range []string{" src=", "<link", "@import", "url(", `href="http`, `href="//`} {
		if strings.Contains(page, bad) {
			t.Errorf("the report page loads something: it holds %q", bad)
		}
	}
	// And should a value ever get through escaping, the browser loads
	// nothing for it either: the policy is in the head, before any value.
	const csp = `<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">`
	if i := strings.Index(page, csp); i < 0 || i > strings.Index(page, "</head>") || i > strings.Index(page, "<title>") {
		t.Errorf("the report page's head lacks, before its title, %s", csp)
	}
	// Everything of a genuine bundle is established, and said so in JSON.
	for _, s := range r.Signatures {
		if s.Status != audit.Pass || s.Revoked {
			t.Errorf("signature %s of the genuine bundle: status %s, revoked %v", s.File, s.Status, s.Revoked)
		}
	}
	for _, e := range r.Entries {
		if e.Status != audit.Pass {
			t.Errorf("log entry %s of the genuine bundle: status %s", e.File, e.Status)
		}
	}
	if r.Log == nil || strings.Contains(page, "nicht verifiziert") {
		t.Errorf("the genuine bundle's log is not shown (%v), or something is marked unverified", r.Log)
	}

	t.Run("escaped", func(t *testing.T) {
		// What a bundle claims is text on the page, never markup.
		hostile := *r
		hostile.Subject = `<script>alert(1)</script>`
		hostile.Reference = `"><img src=x onerror=alert(1)>`
		hostile.Documents = []audit.Document{{Name: "<b>klage</b>.pdf", Size: 1}}
		var buf bytes.Buffer
		if err := audit.WriteHTML(&buf, []*audit.Report{&hostile}); err != nil {
			t.Fatalf("WriteHTML: %v", err)
		}
		page := buf.String()
		for _, bad := range []string{"<script", "<img", "<b>klage"} {
			if strings.Contains(page, bad) {
				t.Errorf("a claimed value is markup on the page: %q", bad)
			}
		}
		if !strings.Contains(page, "&lt;script&gt;alert(1)&lt;/script&gt;") {
			t.Error("the hostile subject is not shown as text")
		}
	})

	t.Run("reasons isolated", func(t *testing.T) {
		// A reason is someone else's text: each is shown in its own <bdi>,
		// so that, were a right-to-left text let through, it could not
		// reorder what follows it (the state row and the timeline).
		b := fresh(t)
		b.Evidence = b.Evidence[:3]
		r := verify(t, b, roots())
		reason := "cannot-open: שלום"
		r.Chains = []audit.Chain{{Recipient: daemon.DevCourt, Types: []string{"Rejection"}, State: "Rejection", Reason: reason}}
		r.Signatures = append(r.Signatures, audit.Signature{File: "evidence/04-Rejection.p7m", What: "Rejection", Signer: "participant " + daemon.DevCourt, Recipient: daemon.DevCourt, Reason: reason, Status: audit.Pass})
		var buf bytes.Buffer
		if err := audit.WriteHTML(&buf, []*audit.Report{r}); err != nil {
			t.Fatalf("WriteHTML: %v", err)
		}
		if n := strings.Count(buf.String(), "<bdi>"+reason+"</bdi>"); n != 2 {
			t.Errorf("the reason is isolated in <bdi> %d times, want 2 (state and timeline)", n)
		}
		// A reason with an override (evidence signed before nodes cleaned
		// their reasons, or a forged one) shows the override as \u202e.
		r.Chains[0].Reason = "cannot-open: rechnung\u202efdp.exe"
		r.Signatures[len(r.Signatures)-1].Reason = r.Chains[0].Reason
		buf.Reset()
		if err := audit.WriteHTML(&buf, []*audit.Report{r}); err != nil {
			t.Fatalf("WriteHTML: %v", err)
		}
		if strings.Contains(buf.String(), "\u202e") || strings.Count(buf.String(), `<bdi>cannot-open: rechnung\u202efdp.exe</bdi>`) != 2 {
			t.Errorf("the override in a reason is not shown escaped in both places")
		}
	})

	t.Run("failed", func(t *testing.T) {
		b := fresh(t)
		b.Evidence = b.Evidence[:3]
		var buf bytes.Buffer
		if err := audit.WriteHTML(&buf, []*audit.Report{r, verify(t, b, roots())}); err != nil {
			t.Fatalf("WriteHTML: %v", err)
		}
		if !strings.Contains(buf.String(), "Nicht alle Prüfungen bestanden") || !strings.Contains(buf.String(), `class="fail"`) {
			t.Error("the report page of a failed bundle does not say so")
		}
	})
}

func TestVerify_EvidenceFile(t *testing.T) {
	b := fresh(t)
	for _, e := range b.Evidence {
		t.Run(e.Name, func(t *testing.T) {
			o := roots()
			o.CRL = fx.crl
			r := audit.Verify(e.Name, e.DER, o)
			if !r.OK() {
				t.Fatalf("report not OK:\n%s", dump(r))
			}
			if r.MessageID != fx.id {
				t.Errorf("message id = %q, want %q", r.MessageID, fx.id)
			}
			for _, name := range []string{audit.CheckEvidenceSignature, audit.CheckSignerRole, audit.CheckRevocation} {
				wantCheck(t, r, name, e.Name, audit.Pass, "")
			}
			wantCheck(t, r, audit.CheckCRL, "", audit.Pass, "given")

			// Without a CRL, revocation stays open.
			r = audit.Verify(e.Name, e.DER, roots())
			if r.OK() {
				t.Error("report OK without a CRL")
			}
			if r.Worst() != audit.Indeterminate {
				t.Errorf("worst = %s, want %s:\n%s", r.Worst(), audit.Indeterminate, dump(r))
			}
			wantCheck(t, r, audit.CheckCRL, e.Name, audit.Indeterminate, "no CRL given")
			wantCheck(t, r, audit.CheckRevocation, e.Name, audit.Indeterminate, "not checked")

			// Without a trust anchor, nothing.
			r = audit.Verify(e.Name, e.DER, audit.Options{CRL: fx.crl})
			wantFail(t, r, audit.CheckTrustAnchor, "", "no CA certificate")
		})
	}
}

func TestVerify_CRL(t *testing.T) {
	t.Run("given", func(t *testing.T) {
		o := roots()
		o.CRL = fx.crl
		r := verify(t, fresh(t), o)
		if !r.OK() {
			t.Fatalf("report not OK:\n%s", dump(r))
		}
		wantCheck(t, r, audit.CheckCRL, "", audit.Pass, "(given)")
	})
	t.Run("not the CA's", func(t *testing.T) {
		other, err := ca.Init(filepath.Join(t.TempDir(), "ca"), "Fremde CA")
		if err != nil {
			t.Fatal(err)
		}
		path, err := other.WriteCRL(time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		o := roots()
		if o.CRL, err = os.ReadFile(path); err != nil {
			t.Fatal(err)
		}
		r := verify(t, fresh(t), o)
		wantFail(t, r, audit.CheckCRL, "", "not signed by a trusted root")
		for _, f := range evidenceFiles {
			wantFail(t, r, audit.CheckRevocation, f, "no usable CRL")
		}
	})
}

// BenchmarkVerify measures offline verification of the fixture's bundle
// (four evidence files, the envelope and the index: six signatures with
// chains and revocation, four inclusion proofs and one consistency proof),
// from the zip's bytes.
func BenchmarkVerify(b *testing.B) {
	o := roots()
	o.Since = []audit.File{{Name: "before", Data: fx.before}}
	for b.Loop() {
		if r := audit.Verify("bundle.zip", fx.zip, o); !r.OK() {
			b.Fatalf("not OK: %+v", r.Failed())
		}
	}
}

// BenchmarkVerifyEvidence is the baseline for BenchmarkVerify: one
// evidence file on its own (one signature, chain, CRL and revocation).
func BenchmarkVerifyEvidence(b *testing.B) {
	bd, err := bundle.Read(bytes.NewReader(fx.zip), int64(len(fx.zip)))
	if err != nil {
		b.Fatal(err)
	}
	o := roots()
	o.CRL = fx.crl
	der := bd.Evidence[1].DER
	for b.Loop() {
		if r := audit.Verify("02-Delivery.p7m", der, o); !r.OK() {
			b.Fatalf("not OK: %+v", r.Failed())
		}
	}
}

// The message id a bundle names is shown marked unverified where nothing
// verified vouches for it (no signature holds, as against another CA),
// and the trust anchor marked where it came from the bundle itself.
func TestReport_UnestablishedIDAndAnchorMarked(t *testing.T) {
	other, err := ca.Init(filepath.Join(t.TempDir(), "ca"), "Fremde CA")
	if err != nil {
		t.Fatal(err)
	}
	r := verify(t, fresh(t), audit.Options{Roots: []*x509.Certificate{other.Certificate()}})
	if r.MessageVerified || len(r.Signatures) != 0 {
		t.Fatalf("against another CA: message verified %v, signatures %+v", r.MessageVerified, r.Signatures)
	}
	page := pageOf(t, r)
	cell := page[strings.Index(page, `id="message-id-0"`):]
	cell = cell[:strings.Index(cell, "</td>")]
	if !strings.Contains(cell, fx.id) || !strings.Contains(cell, "nicht verifiziert") {
		t.Errorf("the message id no signature vouches for is not marked unverified: %s", cell)
	}

	r = verify(t, fresh(t), audit.Options{})
	page = pageOf(t, r)
	row := page[strings.Index(page, "Vertrauensanker <span"):]
	row = row[:strings.Index(row, "</tr>")]
	if !strings.Contains(row, "nicht abschließend geprüft") {
		t.Errorf("the trust anchor taken from the bundle is not marked: %s", row)
	}
	cell = page[strings.Index(page, `id="message-id-0"`):]
	if cell = cell[:strings.Index(cell, "</td>")]; strings.Contains(cell, "badge") {
		t.Errorf("the message id is marked although verified evidence names it: %s", cell)
	}
}
