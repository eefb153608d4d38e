package audit

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"kurier.dev/kurier/envelope"
	"kurier.dev/kurier/evidence"
	"kurier.dev/kurier/evidence/bundle"
	"kurier.dev/kurier/pki"
	"kurier.dev/kurier/pki/cms"
)

// content fills in the documents' digests from the envelope env (nil if
// it is not valid) and, if the bundle carries its content part, checks
// it: content/signed.p7m must be signed by the envelope's sender (a
// participant certificate for emailProtection, its chain valid at the
// node-attested acceptance or its later signing time, not revoked) and
// hold exactly the documents the envelope lists, by name, size and
// SHA-256, in order, and nothing after them; content/payload.p7m must
// have the payload's size and SHA-256 the envelope names.
//
// The node's index does not cover the content, and need not: the
// evidence names the envelope's digest, the sender signed the envelope,
// and a version 3 envelope names each document's digest. So a document
// passes only where all three hold (Report.MessageVerified, which Bundle
// settles before it checks the content): matching an envelope the
// evidence does not name proves nothing. An older envelope names no
// digests, so its documents can only be indeterminate.
//
// Security-sensitive: the documents are read while the signature over
// them is still unverified; each result counts only together with the
// content signature check.
func (v *verifier) content(b *bundle.Bundle, env *envelope.Envelope) {
	if env != nil && len(v.r.Documents) == len(env.Files) {
		for i, f := range env.Files {
			v.r.Documents[i].SHA256 = f.SHA256
		}
	}
	if b.Signed == nil && b.Sealed == nil {
		return
	}
	if env == nil {
		v.r.fail(CheckDocument, bundle.FileContentSigned, "the envelope is not valid, so there is nothing to check the bundle's content against")
		return
	}
	if b.Signed != nil {
		v.signedContent(b, env)
	}
	if b.Sealed != nil {
		v.sealedPayload(b.Sealed, env)
	}
}

// maxClockSkew bounds how far after the verification a content
// signature may claim to be made: a node's default MaxClockSkew, for
// clocks that run ahead.
const maxClockSkew = 10 * time.Minute

// signedContent checks content/signed.p7m: its documents against env,
// then its signature.
//
// The signature is judged at its own signing time where that is after
// the acceptance (the sender signing its documents again, kurier export
// --with-document, perhaps with a renewed certificate), else at the
// acceptance, as the envelope's. A signing time is only the signer's
// claim, but one between the acceptance and this verification lets the
// signer do nothing it could not do by signing now; one earlier is never
// used, so an expired or revoked certificate cannot sign back-dated. The
// documents are bound by the envelope's digests, not by this signature:
// it says that the sender signed them.
func (v *verifier) signedContent(b *bundle.Bundle, env *envelope.Envelope) {
	const file = bundle.FileContentSigned
	at, attested := v.acceptedAt(b, env)
	// The chain is verified below, once the signing time is known, which
	// the SignedData carries after the content.
	var later deferredChain
	vr, err := cms.NewVerifyReader(bytes.NewReader(b.Signed), cms.Policy{
		Trust: &later, At: at, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}, MaxSize: bundle.MaxContentSize,
	})
	if err != nil {
		v.r.fail(CheckContentSignature, file, "not the sender-signed original (attached CMS SignedData): %v", err)
		v.setContent(Fail)
		return
	}
	docChecks := v.documents(vr, env)
	defer func() { v.r.Checks = append(v.r.Checks, docChecks...) }()
	vd, err := vr.Verify() // the signature over the content only; the chain follows
	if err != nil {
		v.r.fail(CheckContentSignature, file, "%v", err)
		return
	}
	peer, perr := pki.PeerOf(vd.Signer)
	if perr != nil || peer.Kind != pki.KindParticipant || peer.Address != env.From {
		v.r.fail(CheckContentSignature, file, "signed by %s, but only the sender %s signs its documents", describe(vd.Signer), env.From)
		return
	}
	when := "at the envelope's own time " + stamp(at)
	if attested {
		when = "at its acceptance " + stamp(at)
	}
	if st := vd.SigningTime; st.After(at) {
		if limit := v.r.Verified.Add(maxClockSkew); st.After(limit) {
			v.r.fail(CheckContentSignature, file, "claims to be signed at %s, after this verification (%s): a signature cannot be from the future", stamp(st), stamp(v.r.Verified))
			return
		}
		at, when = st, fmt.Sprintf("at its signing time %s, after the acceptance %s", stamp(st), stamp(at))
	}
	chain, err := v.chainsWith().Verify(vd.Signer, later.intermediates, at, x509.ExtKeyUsageEmailProtection)
	if err != nil {
		v.r.fail(CheckContentSignature, file, "the documents are signed by the sender %s, but its certificate serial %x is not valid %s: %v", env.From, vd.Signer.SerialNumber, when, err)
		return
	}
	v.r.pass(CheckContentSignature, file, "the documents are signed by the sender %s; certificate serial %x valid %s", env.From, vd.Signer.SerialNumber, when)
	v.r.Signatures = append(v.r.Signatures, signature(file, "documents", vd.Signer, at))
	v.revocation(file, chain, at)
}

// deferredChain is the cms.Verifier of a content signature whose time is
// not known until its SignerInfo is read: it only keeps the signer's
// intermediates, accepting the chain for now, and signedContent verifies
// the chain itself afterwards. Never use it where the caller does not.
type deferredChain struct {
	intermediates []*x509.Certificate
}

func (d *deferredChain) Verify(cert *x509.Certificate, inter []*x509.Certificate, _ time.Time, _ ...x509.ExtKeyUsage) ([]*x509.Certificate, error) {
	d.intermediates = slices.Clone(inter)
	return []*x509.Certificate{cert}, nil
}

// maxTarTail bounds what documents reads after the end of the tar file:
// Python's tarfile pads to records of 10240 bytes, other writers may
// use larger blocking factors.
const maxTarTail = 1 << 20

// documents reads the tar file of documents from r and checks it against
// the envelope's list, returning the checks (one per document, and one
// for anything the list does not account for) and setting each
// Document's Content. A document matching the envelope's digest passes
// only if that envelope is the message's (MessageVerified); after the
// tar file's end only zero bytes may follow (its end blocks and padding).
func (v *verifier) documents(r io.Reader, env *envelope.Envelope) []Check {
	const file = bundle.FileContentSigned
	var checks []Check
	add := func(subject string, s Status, format string, args ...any) {
		checks = append(checks, Check{Name: CheckDocument, Subject: subject, Status: s, Detail: fmt.Sprintf(format, args...)})
	}
	digests := env.Version >= envelope.Version
	unbound := v.unbound()
	tr := tar.NewReader(r)
	h := sha256.New()
	i := 0
	for ; ; i++ {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			switch err := envelope.CheckTarEnd(r, maxTarTail); {
			case errors.Is(err, envelope.ErrTarTrailing):
				add(file, Fail, "%v: the signed content holds more than the documents' tar file", err)
			case err != nil:
				add(file, Fail, "the signed content cannot be read after the documents' tar file: %v", err)
			}
			break
		}
		if err != nil {
			add(file, Fail, "the documents' tar file is damaged after %d of %d documents: %v", i, len(env.Files), err)
			break
		}
		name := envelope.Quote(hdr.Name)
		if i >= len(env.Files) {
			add(file, Fail, "holds more than the %d documents the envelope lists: %s", len(env.Files), name)
			break
		}
		want := env.Files[i]
		subject := file + ": " + want.Name
		switch {
		case hdr.Typeflag != tar.TypeReg:
			add(subject, Fail, "entry %d (%s) is not a regular file (tar type %q)", i+1, name, hdr.Typeflag)
			v.r.Documents[i].Content = Fail
			continue
		case hdr.Name != want.Name || hdr.Size != want.Size:
			add(subject, Fail, "entry %d is %s (%d bytes), the envelope lists %s (%d bytes)", i+1, name, hdr.Size, envelope.Quote(want.Name), want.Size)
			v.r.Documents[i].Content = Fail
			continue
		}
		h.Reset()
		if _, err := io.Copy(h, tr); err != nil {
			add(subject, Fail, "cannot be read: %v", err)
			v.r.Documents[i].Content = Fail
			break
		}
		got := hex.EncodeToString(h.Sum(nil))
		switch {
		case !digests:
			add(subject, Indeterminate, "%d bytes, SHA-256 %s; the envelope (version %d) lists no document digests, so nothing binds these bytes to the message", hdr.Size, got, env.Version)
			v.r.Documents[i].Content = Indeterminate
		case got != want.SHA256:
			add(subject, Fail, "has SHA-256 %s, the signed envelope lists %s: not the document that was sent", got, want.SHA256)
			v.r.Documents[i].Content = Fail
		case unbound != "":
			add(subject, Indeterminate, "%d bytes, SHA-256 %s as envelope.json lists, but the envelope is not established as the message's: %s; so nothing binds these bytes to the message", hdr.Size, short(got), unbound)
			v.r.Documents[i].Content = Indeterminate
		default:
			add(subject, Pass, "%d bytes, SHA-256 %s as the signed envelope lists, which the evidence names", hdr.Size, short(got))
			v.r.Documents[i].Content = Pass
		}
	}
	for j := i; j < len(env.Files); j++ {
		if v.r.Documents[j].Content == "" {
			add(file+": "+env.Files[j].Name, Fail, "missing: %s holds %d of the %d documents the envelope lists", file, i, len(env.Files))
			v.r.Documents[j].Content = Fail
		}
	}
	return checks
}

// sealedPayload checks content/payload.p7m against the payload the
// envelope names.
func (v *verifier) sealedPayload(sealed []byte, env *envelope.Envelope) {
	const file = bundle.FileContentSealed
	sum := sha256.Sum256(sealed)
	got := hex.EncodeToString(sum[:])
	switch {
	case int64(len(sealed)) != env.PayloadSize:
		v.r.fail(CheckSealedPayload, file, "has %d bytes, the signed envelope's payload %d: not the payload that was delivered", len(sealed), env.PayloadSize)
	case got != env.PayloadSHA256:
		v.r.fail(CheckSealedPayload, file, "has SHA-256 %s, the signed envelope's payload %s: not the payload that was delivered", got, env.PayloadSHA256)
	default:
		v.r.pass(CheckSealedPayload, file, "%d bytes, SHA-256 %s as the signed envelope names the payload: the payload as delivered", len(sealed), short(got))
	}
}

// setContent sets the Content of every document to s.
func (v *verifier) setContent(s Status) {
	for i := range v.r.Documents {
		v.r.Documents[i].Content = s
	}
}

// acceptedAt returns the time the sender's signature is judged at: the
// first SubmissionAcceptance's whose signature holds (attested by the
// node), else the envelope's own creation time. envelopeSignature judges
// the envelope's signature at the same time.
func (v *verifier) acceptedAt(b *bundle.Bundle, env *envelope.Envelope) (time.Time, bool) {
	for i, e := range b.Evidence {
		p := v.claims[i].ev
		if p == nil || p.Statement.Type != evidence.SubmissionAcceptance || p.Statement.MessageID != env.ID {
			continue
		}
		if _, err := evidence.Verify(e.DER, cms.Policy{Trust: v.chainsWith(), At: p.Statement.Time}); err == nil {
			return p.Statement.Time, true
		}
	}
	return env.Created, false
}
