package audit_test

import (
	"archive/tar"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"math/big"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"kurier.dev/kurier/broker/daemon"
	"kurier.dev/kurier/envelope"
	"kurier.dev/kurier/evidence/audit"
	"kurier.dev/kurier/evidence/bundle"
	"kurier.dev/kurier/pki"
	"kurier.dev/kurier/pki/cms"
	"kurier.dev/kurier/pki/pkitest"
)

// contentChecks are the checks a bundle with content adds to allChecks.
var contentChecks = []string{audit.CheckContentSignature, audit.CheckDocument, audit.CheckSealedPayload}

// The fixture's one document, as the content part names it in checks.
const (
	docName    = "schriftsatz.txt"
	docSubject = bundle.FileContentSigned + ": " + docName
)

// withContent returns the fixture's bundle with the court's kept
// originals as its content part.
func withContent(t *testing.T) *bundle.Bundle {
	t.Helper()
	b := fresh(t)
	b.Signed, b.Sealed = bytes.Clone(fx.signed), bytes.Clone(fx.sealed)
	return b
}

// signedTar returns the tar file of documents inside a signed original,
// without verifying it (the test's own input).
func signedTar(t *testing.T, signed []byte) []byte {
	t.Helper()
	v, err := cms.CheckSignature(signed)
	if err != nil {
		t.Fatal(err)
	}
	return v.Content
}

// resign signs content (a tar file) as id would.
func resign(t *testing.T, content []byte, id *pki.Identity) []byte {
	t.Helper()
	der, err := cms.Sign(content, pkitest.Signer(id))
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// tarOf packs documents (name, data pairs) as the client does.
func tarOf(t *testing.T, docs ...string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for i := 0; i < len(docs); i += 2 {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: docs[i], Size: int64(len(docs[i+1])), Mode: 0o644, ModTime: time.Unix(0, 0)}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(docs[i+1])); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestVerify_Content: the court's kept originals, added to the bundle,
// verify: signed by the sender, each document the one the envelope lists
// (the report shows its digest and that it was checked), the payload the
// one delivered; a written and read bundle verifies the same.
func TestVerify_Content(t *testing.T) {
	b := withContent(t)
	var buf bytes.Buffer
	if err := b.Write(&buf, time.Now()); err != nil {
		t.Fatal(err)
	}
	o := roots()
	o.Since = []audit.File{{Name: "before.checkpoint", Data: fx.before}}
	r := audit.Verify("bundle.zip", buf.Bytes(), o)
	if !r.OK() {
		t.Fatalf("the bundle with its content does not verify:\n%s", dump(r))
	}
	made := map[string]bool{}
	for _, c := range r.Checks {
		made[c.Name] = true
	}
	for _, name := range append(slices.Clone(allChecks), contentChecks...) {
		if !made[name] {
			t.Errorf("no %q check made", name)
		}
	}
	sum := sha256.Sum256([]byte("Klageschrift, Vorgang 2"))
	want := []audit.Document{{Name: docName, Size: int64(len("Klageschrift, Vorgang 2")), SHA256: hex.EncodeToString(sum[:]), Content: audit.Pass}}
	if !slices.Equal(r.Documents, want) {
		t.Errorf("documents %+v, want %+v", r.Documents, want)
	}
	wantCheck(t, r, audit.CheckContentSignature, bundle.FileContentSigned, audit.Pass, "signed by the sender "+daemon.DevAgency)
	wantCheck(t, r, audit.CheckRevocation, bundle.FileContentSigned, audit.Pass, "")
	wantCheck(t, r, audit.CheckDocument, docSubject, audit.Pass, "as the signed envelope lists")
	wantCheck(t, r, audit.CheckSealedPayload, bundle.FileContentSealed, audit.Pass, "the payload as delivered")
	if !slices.ContainsFunc(r.Signatures, func(s audit.Signature) bool { return s.File == bundle.FileContentSigned && s.What == "documents" }) {
		t.Errorf("the report lists no signature over the documents: %+v", r.Signatures)
	}

	t.Run("without content", func(t *testing.T) {
		r := verify(t, fresh(t), roots())
		if len(r.Documents) != 1 || r.Documents[0].SHA256 != want[0].SHA256 || r.Documents[0].Content != "" {
			t.Errorf("documents %+v, want the digest and no content check", r.Documents)
		}
		for _, c := range r.Checks {
			if slices.Contains(contentChecks, c.Name) {
				t.Errorf("a content check without content: %+v", c)
			}
		}
	})
	t.Run("signed original alone", func(t *testing.T) {
		b := withContent(t)
		b.Sealed = nil
		if r := verify(t, b, roots()); !r.OK() || r.Documents[0].Content != audit.Pass {
			t.Fatalf("the signed original alone does not verify:\n%s", dump(r))
		}
	})
}

// TestTamper_ContentDocumentByte: a document changed inside the signed
// original fails the document's check, whether the signature is left
// broken or the sender signs the changed document anew (a sender who
// would later claim to have sent something else).
func TestTamper_ContentDocumentByte(t *testing.T) {
	t.Run("signature left broken", func(t *testing.T) {
		b := withContent(t)
		i := bytes.Index(b.Signed, []byte("Vorgang 2"))
		if i < 0 {
			t.Fatal("the document is not in the signed original")
		}
		b.Signed[i+len("Vorgang ")] = '7'
		r := verify(t, b, roots())
		wantFail(t, r, audit.CheckDocument, docSubject, "not the document that was sent")
		wantFail(t, r, audit.CheckContentSignature, bundle.FileContentSigned, "")
		if r.Documents[0].Content != audit.Fail {
			t.Errorf("document content %q, want fail", r.Documents[0].Content)
		}
	})
	t.Run("signed again by the sender", func(t *testing.T) {
		b := withContent(t)
		b.Signed = resign(t, tarOf(t, docName, "Klageschrift, Vorgang 7"), fx.agency)
		r := verify(t, b, roots())
		wantFail(t, r, audit.CheckDocument, docSubject, "not the document that was sent")
		wantCheck(t, r, audit.CheckContentSignature, bundle.FileContentSigned, audit.Pass, "")
	})
}

// TestTamper_ContentSwapped: the signed original of another message of
// the same sender, with a document of the same name and size, fails.
func TestTamper_ContentSwapped(t *testing.T) {
	b := withContent(t)
	b.Signed = bytes.Clone(fx.otherSigned)
	b.Sealed = nil
	r := verify(t, b, roots())
	wantFail(t, r, audit.CheckDocument, docSubject, "not the document that was sent")
	wantCheck(t, r, audit.CheckContentSignature, bundle.FileContentSigned, audit.Pass, "")
}

// TestTamper_ContentSignedByOther: the very documents, signed by another
// participant, fail the content signature.
func TestTamper_ContentSignedByOther(t *testing.T) {
	b := withContent(t)
	b.Signed = resign(t, signedTar(t, fx.signed), fx.court)
	r := verify(t, b, roots())
	wantFail(t, r, audit.CheckContentSignature, bundle.FileContentSigned, "only the sender "+daemon.DevAgency+" signs its documents")
	wantCheck(t, r, audit.CheckDocument, docSubject, audit.Pass, "")
}

// TestTamper_ContentPayload: a payload other than the one delivered
// fails, another message's or a cut one.
func TestTamper_ContentPayload(t *testing.T) {
	for name, sealed := range map[string][]byte{
		"another message's": fx.otherSealed,
		"cut":               fx.sealed[:len(fx.sealed)-1],
	} {
		t.Run(name, func(t *testing.T) {
			b := withContent(t)
			b.Sealed = bytes.Clone(sealed)
			r := verify(t, b, roots())
			wantFail(t, r, audit.CheckSealedPayload, bundle.FileContentSealed, "not the payload that was delivered")
			wantCheck(t, r, audit.CheckDocument, docSubject, audit.Pass, "")
		})
	}
}

// TestTamper_ContentDocuments: a signed original with a document more, or
// without the document, fails naming what is extra or missing.
func TestTamper_ContentDocuments(t *testing.T) {
	t.Run("one more", func(t *testing.T) {
		b := withContent(t)
		b.Signed = resign(t, tarOf(t, docName, "Klageschrift, Vorgang 2", "anlage.txt", "untergeschoben"), fx.agency)
		r := verify(t, b, roots())
		wantFail(t, r, audit.CheckDocument, bundle.FileContentSigned, `holds more than the 1 documents the envelope lists: "anlage.txt"`)
	})
	t.Run("missing", func(t *testing.T) {
		b := withContent(t)
		b.Signed = resign(t, tarOf(t, "anlage.txt", "x"), fx.agency)
		r := verify(t, b, roots())
		wantFail(t, r, audit.CheckDocument, docSubject, `entry 1 is "anlage.txt" (1 bytes), the envelope lists "schriftsatz.txt"`)
	})
	t.Run("none", func(t *testing.T) {
		b := withContent(t)
		b.Signed = resign(t, tarOf(t), fx.agency)
		r := verify(t, b, roots())
		wantFail(t, r, audit.CheckDocument, docSubject, "missing")
	})
	t.Run("not signed data", func(t *testing.T) {
		b := withContent(t)
		b.Signed = []byte("not CMS")
		r := verify(t, b, roots())
		wantFail(t, r, audit.CheckContentSignature, bundle.FileContentSigned, "not the sender-signed original")
		if r.Documents[0].Content != audit.Fail {
			t.Errorf("document content %q, want fail", r.Documents[0].Content)
		}
	})
}

// TestVerify_ContentNoDigests: against a version 2 envelope, which lists
// no document digests, the documents are only indeterminate.
func TestVerify_ContentNoDigests(t *testing.T) {
	// The bundle's envelope rewritten as version 2 (its signature then
	// fails, which is not what this test is about).
	b := withContent(t)
	env, err := envelope.Parse(b.Envelope)
	if err != nil {
		t.Fatal(err)
	}
	env.Version = envelope.Version2
	for i := range env.Files {
		env.Files[i].SHA256 = ""
	}
	if b.Envelope, err = env.Marshal(); err != nil {
		t.Fatal(err)
	}
	r := verify(t, b, roots())
	wantCheck(t, r, audit.CheckDocument, docSubject, audit.Indeterminate, "lists no document digests")
	if r.Documents[0].Content != audit.Indeterminate || r.Documents[0].SHA256 != "" {
		t.Errorf("document %+v, want no digest and an indeterminate content check", r.Documents[0])
	}
}

// FuzzHostile_Content: whatever content/signed.p7m holds, verification
// does not panic, and the report passes only for the sender's signed
// original of the fixture's documents.
func FuzzHostile_Content(f *testing.F) {
	f.Add(fx.signed)
	f.Add(fx.otherSigned)
	f.Add(fx.signed[:len(fx.signed)/2])
	f.Add([]byte{0x30, 0x80})
	orig, err := cms.CheckSignature(fx.signed)
	if err != nil {
		f.Fatal(err)
	}
	want := orig.Content
	f.Fuzz(func(t *testing.T, signed []byte) {
		if len(signed) == 0 {
			return
		}
		b := fresh(t)
		b.Signed = signed
		r := audit.Bundle("bundle.zip", b, roots())
		if !r.OK() {
			return
		}
		v, err := cms.CheckSignature(signed)
		if err != nil || !bytes.Equal(v.Content, want) {
			t.Fatalf("the report passed content other than the fixture's signed original (%v):\n%s", err, dump(r))
		}
	})
}

// secondEnvelope returns withContent's bundle (without the payload) with
// its envelope replaced by one of the same id listing a forged document,
// signed by envSigner, and that document signed by the sender: a sender
// who would later claim to have sent something else.
func secondEnvelope(t *testing.T, envSigner *pki.Identity) *bundle.Bundle {
	t.Helper()
	b := withContent(t)
	b.Sealed = nil
	env, err := envelope.Parse(b.Envelope)
	if err != nil {
		t.Fatal(err)
	}
	forged := "Klageschrift, Vorgang 9, zurückgenommen"
	sum := sha256.Sum256([]byte(forged))
	env.Files[0].Size, env.Files[0].SHA256 = int64(len(forged)), hex.EncodeToString(sum[:])
	if b.Envelope, err = env.Marshal(); err != nil {
		t.Fatal(err)
	}
	if b.Signature, err = cms.SignDetached(b.Envelope, pkitest.Signer(envSigner)); err != nil {
		t.Fatal(err)
	}
	b.Signed = resign(t, tarOf(t, docName, forged), fx.agency)
	return b
}

// TestTamper_ContentSecondEnvelope: documents that match an envelope the
// evidence does not name pass neither as documents nor as the message,
// whether the sender signed that second envelope of the same id or
// someone else did; the report says why.
func TestTamper_ContentSecondEnvelope(t *testing.T) {
	for name, tc := range map[string]struct {
		signer *pki.Identity
		why    string
	}{
		"signed by the sender": {fx.agency, "it is not the one the evidence names"},
		"signed by another":    {fx.court, "the sender's signature over it does not hold"},
	} {
		t.Run(name, func(t *testing.T) {
			r := verify(t, secondEnvelope(t, tc.signer), roots())
			for _, f := range evidenceFiles {
				wantFail(t, r, audit.CheckEnvelopeDigest, f, "the bundle's envelope has")
			}
			if tc.signer == fx.agency {
				wantCheck(t, r, audit.CheckEnvelopeSignature, bundle.FileSignature, audit.Pass, "")
			}
			wantCheck(t, r, audit.CheckContentSignature, bundle.FileContentSigned, audit.Pass, "")
			wantCheck(t, r, audit.CheckDocument, docSubject, audit.Indeterminate, "the envelope is not established as the message's: "+tc.why)
			if r.MessageVerified || r.Documents[0].Content != audit.Indeterminate {
				t.Errorf("message verified %v, document %q; want neither established", r.MessageVerified, r.Documents[0].Content)
			}
		})
	}
	t.Run("no verified evidence", func(t *testing.T) {
		// The very envelope, but no evidence that verifies names it.
		b := withContent(t)
		for i := range b.Evidence {
			b.Evidence[i].DER[len(b.Evidence[i].DER)-1] ^= 1
		}
		r := verify(t, b, roots())
		wantCheck(t, r, audit.CheckEnvelopeSignature, bundle.FileSignature, audit.Pass, "")
		wantCheck(t, r, audit.CheckDocument, docSubject, audit.Indeterminate, "no verified evidence names its digest")
		if r.MessageVerified {
			t.Error("the message is verified without evidence naming its envelope")
		}
	})
	t.Run("report", func(t *testing.T) {
		var buf bytes.Buffer
		if err := audit.WriteHTML(&buf, []*audit.Report{verify(t, secondEnvelope(t, fx.agency), roots())}); err != nil {
			t.Fatal(err)
		}
		page := buf.String()
		if !strings.Contains(page, "aber er ist nicht der, den die geprüften Nachweise nennen") {
			t.Error("the report page does not say that the envelope is not the one the evidence names")
		}
		if strings.Contains(page, "Dokument selbst geprüft: stimmt mit dem Umschlag überein") || !strings.Contains(page, "Dokument selbst nicht abschließend geprüft") {
			t.Error("the report page shows the document as checked")
		}
	})
}

// TestHostile_ContentTarTrailing: after the end of the documents' tar
// file, zero padding passes (Python's tarfile pads to records of 10240
// bytes) and anything else fails: a second tar file hidden there, which
// another tool might unpack, or a single byte.
func TestHostile_ContentTarTrailing(t *testing.T) {
	doc := signedTar(t, fx.signed)
	for name, tc := range map[string]struct {
		tail []byte
		want string // "" to pass
	}{
		"padding to a record":       {tail: make([]byte, 10240-len(doc)%10240)},
		"a second tar file":         {tail: tarOf(t, "anlage.pdf", "hidden second document"), want: "data after the end of the tar file"},
		"one byte after the zeros":  {tail: append(make([]byte, 512), 1), want: "a byte other than zero 512 bytes after its end"},
		"more zeros than a tar has": {tail: make([]byte, 2<<20), want: "more than 1048576 bytes after its end"},
	} {
		t.Run(name, func(t *testing.T) {
			b := withContent(t)
			b.Sealed = nil
			b.Signed = resign(t, append(bytes.Clone(doc), tc.tail...), fx.agency)
			r := verify(t, b, roots())
			if tc.want == "" {
				if !r.OK() || r.Documents[0].Content != audit.Pass {
					t.Fatalf("the padded tar file does not verify:\n%s", dump(r))
				}
				return
			}
			wantFail(t, r, audit.CheckDocument, bundle.FileContentSigned, tc.want)
		})
	}
}

// TestTamper_ContentEntryType: an entry of the right name and size that
// is not a regular file fails as such, not as a name or size mismatch.
func TestTamper_ContentEntryType(t *testing.T) {
	data := "Klageschrift, Vorgang 2"
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeCont, Name: docName, Size: int64(len(data)), Mode: 0o644, ModTime: time.Unix(0, 0)}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write([]byte(data)); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	b := withContent(t)
	b.Sealed = nil
	b.Signed = resign(t, buf.Bytes(), fx.agency)
	r := verify(t, b, roots())
	wantFail(t, r, audit.CheckDocument, docSubject, `entry 1 ("schriftsatz.txt") is not a regular file`)
	if r.Documents[0].Content != audit.Fail {
		t.Errorf("document content %q, want fail", r.Documents[0].Content)
	}
}

// renewed returns the sender's certificate issued again by the dev CA,
// same key, valid from notBefore for a year: the sender's certificate
// after a renewal.
func renewed(t *testing.T, notBefore time.Time) *x509.Certificate {
	t.Helper()
	caKey, err := pki.LoadKey(filepath.Join(fx.dir, "ca", "ca-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := *fx.agency.Cert
	tmpl.SerialNumber = big.NewInt(notBefore.UnixNano())
	tmpl.NotBefore, tmpl.NotAfter = notBefore, notBefore.AddDate(1, 0, 0)
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, fx.agency.Roots[0], fx.agency.Cert.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestVerify_ContentResignedAfterRenewal: the sender, its certificate
// renewed after the message was accepted, signs its documents again
// (kurier export --with-document): the signature is judged at its
// signing time, which is after the acceptance, and passes. A signing
// time in the future, or before the renewed certificate, fails.
func TestVerify_ContentResignedAfterRenewal(t *testing.T) {
	var accepted time.Time
	for _, s := range verify(t, fresh(t), roots()).Signatures {
		if s.What == "SubmissionAcceptance" {
			accepted = s.Time
		}
	}
	if accepted.IsZero() {
		t.Fatal("the fixture has no SubmissionAcceptance")
	}
	cert := renewed(t, accepted.Add(time.Second)) // not valid at the acceptance
	signAt := func(at time.Time) []byte {
		s := pkitest.Signer(fx.agency)
		s.Cert, s.Now = cert, func() time.Time { return at }
		der, err := cms.Sign(signedTar(t, fx.signed), s)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	check := func(t *testing.T, signed []byte, o audit.Options) *audit.Report {
		t.Helper()
		b := withContent(t)
		b.Sealed, b.Signed = nil, signed
		return verify(t, b, o)
	}

	t.Run("signed after the renewal", func(t *testing.T) {
		at := accepted.Add(2 * time.Second)
		r := check(t, signAt(at), roots())
		if !r.OK() || r.Documents[0].Content != audit.Pass {
			t.Fatalf("the sender's documents signed again with its renewed certificate do not verify:\n%s", dump(r))
		}
		wantCheck(t, r, audit.CheckContentSignature, bundle.FileContentSigned, audit.Pass,
			fmt.Sprintf("certificate serial %x valid at its signing time %s, after the acceptance", cert.SerialNumber, at.UTC().Truncate(time.Second).Format(time.RFC3339)))
		wantCheck(t, r, audit.CheckRevocation, bundle.FileContentSigned, audit.Pass, "")
	})
	t.Run("signing time in the future", func(t *testing.T) {
		at := accepted.Add(2 * time.Second)
		o := roots()
		o.Now = func() time.Time { return at.Add(-11 * time.Minute) } // the verification, before the claimed signing
		r := check(t, signAt(at), o)
		wantFail(t, r, audit.CheckContentSignature, bundle.FileContentSigned, "a signature cannot be from the future")
	})
	t.Run("judged at the acceptance without a later signing time", func(t *testing.T) {
		// Claimed at the acceptance, the renewed certificate is not yet
		// valid: cms refuses a signing time outside it, and the chain
		// fails at the acceptance.
		r := check(t, signAt(accepted), roots())
		wantFail(t, r, audit.CheckContentSignature, bundle.FileContentSigned, "outside the signer's validity")
	})
}
