package audit

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"kurier.dev/kurier/envelope"
	"kurier.dev/kurier/evidence"
	"kurier.dev/kurier/evidence/bundle"
	"kurier.dev/kurier/pki"
	"kurier.dev/kurier/pki/cms"
	"kurier.dev/kurier/tlog"
)

// Options configure a verification.
type Options struct {
	// Roots are the trust anchors: the federation's CA certificates,
	// obtained independently of the file being checked. None: the
	// self-signed CA certificates in a bundle stand in, and the trust
	// anchor check is indeterminate, since a forger would bring his own.
	Roots []*x509.Certificate
	// CRL, DER or PEM, replaces the bundle's CRL, for instance with a
	// newer one from the CA; for single evidence files it is the only CRL.
	CRL []byte
	// Since are older signed checkpoints of the bundle's log, which the
	// verifier kept: the bundle must prove its checkpoint consistent with
	// each.
	Since []File
	// LogKeys, if any, are the log keys (signed-note verifier keys) the
	// verifier knows from elsewhere, such as a node's published log.vkey.
	// Each applies to the log its name (the key's origin) names: a log of
	// the bundle must use one of the keys given for its origin, and one
	// for whose origin none is given is only indeterminate, since the
	// verifier asked for keys it could compare and has none for it.
	LogKeys []string
	// Now dates the report; default time.Now.
	Now func() time.Time
}

// File is a named input.
type File struct {
	Name string
	Data []byte
}

// Verify checks data, a bundle (a zip file) or a single evidence file
// (DER), and reports every check it made.
func Verify(name string, data []byte, o Options) *Report {
	if bundle.Sniff(data) {
		b, err := bundle.Read(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			r := newReport(name, o)
			r.fail(CheckFormat, name, "%v", err)
			return r
		}
		return Bundle(name, b, o)
	}
	return Evidence(name, data, o)
}

// CheckpointOf returns the signed checkpoint that data holds: data itself
// if it is a checkpoint file (as `kurier checkpoint` writes), or the
// checkpoint of a bundle. The checkpoint is not verified here; Options.Since
// takes it for that.
func CheckpointOf(data []byte) ([]byte, error) {
	if !bundle.Sniff(data) {
		if _, err := tlog.PeekSize(data); err != nil {
			return nil, err
		}
		return data, nil
	}
	b, err := bundle.Read(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return nil, err
	}
	return b.Checkpoint, nil
}

// Unreadable returns the report of a file that could not be read, so that
// it counts as failed among the others.
func Unreadable(name string, err error, o Options) *Report {
	r := newReport(name, o)
	r.fail(CheckFormat, name, "cannot read it: %v", err)
	return r
}

func newReport(name string, o Options) *Report {
	now := time.Now
	if o.Now != nil {
		now = o.Now
	}
	return &Report{File: name, Verified: now().UTC(), Signatures: []Signature{}}
}

// verifier holds what one verification has established so far.
type verifier struct {
	r      *Report
	o      Options
	roots  []*x509.Certificate
	certs  []*x509.Certificate // from the file, to help build chains
	trust  *pki.TrustStore     // chains only; revocation is its own check
	crl    *pki.TrustStore     // the CRL, judged at each signature's time; nil if none is usable
	crlNum string
	// claims are a bundle's evidence as parsed, not yet verified, in
	// bundle order.
	claims []claim
	// version is the bundle's format version.
	version int
	// envelopeSigned is set once the sender's signature over the
	// envelope held and its certificate is not revoked.
	envelopeSigned bool
	// ix is the bundle's index once its signature verified, and exporter
	// the node that signed it; exporterVouches is set unless the
	// revocation check of the exporter's certificate failed, for a
	// revoked node vouches for nothing.
	ix              *bundle.Index
	exporter        pki.Peer
	exporterVouches bool
	// logs are the logs the bundle's proofs lead to, by origin: the
	// exporting node's and each other one of the bundle.
	logs map[string]*logState
}

// logState is one log as far as it is established.
type logState struct {
	origin string
	// keeper is the node that keeps the log, as far as established: the
	// index's signer for the exporting node's log, the signer of its key
	// for another.
	keeper pki.Peer
	cp     *tlog.Checkpoint // nil unless its checkpoint was opened with a vouched-for key
	// vouched is set once cp is established: opened, and the keeper's
	// certificate not revoked.
	vouched bool
}

// claim is an evidence file as its bytes claim it to be.
type claim struct {
	ev  *evidence.Evidence // nil if it did not parse
	err error
}

func parseClaim(der []byte) claim {
	ev, err := evidence.Parse(der)
	return claim{ev, err}
}

// Evidence checks one evidence file on its own: signature and chain at the
// evidence's time, the signer's role, and revocation against o.CRL. What
// needs the rest of a bundle (chain, envelope, log) cannot be checked: the
// report lists only the checks made, and passes if they hold.
func Evidence(name string, der []byte, o Options) *Report {
	v := &verifier{r: newReport(name, o), o: o}
	if !v.anchor(nil) {
		return v.r
	}
	if len(o.CRL) > 0 {
		v.loadCRL(o.CRL, "given")
	} else {
		v.r.add(CheckCRL, name, Indeterminate, "no CRL given (--crl): revocation of the signer cannot be checked")
	}
	ev := v.evidence(name, der, parseClaim(der))
	if ev != nil {
		v.r.MessageID = ev.Statement.MessageID
	}
	if len(o.Since) > 0 {
		v.r.fail(CheckConsistency, name, "a single evidence file carries no log proofs: an older checkpoint can only be checked against a bundle")
	}
	return v.r
}

// Bundle checks an evidence bundle: see the package documentation of
// evidence/bundle for what it holds, and docs/PROTOCOL.md for the checks.
func Bundle(name string, b *bundle.Bundle, o Options) *Report {
	v := &verifier{r: newReport(name, o), o: o, certs: b.Certificates, logs: map[string]*logState{}}
	r := v.r
	if err := b.Check(); err != nil {
		r.fail(CheckFormat, name, "%v", err)
		return r
	}
	v.version = b.FormatVersion()
	for _, e := range b.Evidence {
		v.claims = append(v.claims, parseClaim(e.DER))
	}
	r.MessageID = b.MessageID
	if v.version == 1 {
		r.pass(CheckFormat, name, "a Kurier evidence bundle for message %s with %d evidence files", b.MessageID, len(b.Evidence))
	} else {
		r.pass(CheckFormat, name, "a Kurier evidence bundle (format version %d) for message %s with %d evidence files in %s",
			v.version, b.MessageID, len(b.Evidence), count(len(b.Logs)+1, "log"))
	}
	if !v.anchor(b.Certificates) {
		return r
	}
	if len(o.CRL) > 0 {
		v.loadCRL(o.CRL, "given")
	} else {
		v.loadCRL(b.CRL, "from the bundle")
	}
	env := v.envelope(b)

	// The node's index, which names the log keys and every evidence; then
	// the logs it names.
	v.ix = v.index(b, env)
	var own *tlog.Checkpoint
	if v.ix != nil {
		own = v.checkpoint(b, v.ix)
		v.logs[v.ix.Origin] = &logState{origin: v.ix.Origin, keeper: v.exporter, cp: own, vouched: own != nil && v.exporterVouches}
	}
	for _, l := range b.Logs {
		v.otherLog(l)
	}

	// Every evidence, then each recipient's chain.
	var links []evidence.Link
	for i, e := range b.Evidence {
		file := "evidence/" + e.Name
		ev := v.evidence(file, e.DER, v.claims[i])
		switch {
		case ev != nil:
			links = append(links, ev.Link())
			if env != nil {
				v.statement(file, ev.Statement, b.Envelope, env)
			}
		case v.claims[i].ev != nil:
			links = append(links, v.claims[i].ev.Link()) // still show the chain as claimed
		}
		v.inclusion(file, e, v.claims[i].ev)
	}
	v.chains(links)
	if env != nil {
		v.bindEnvelope()
	}

	if own != nil {
		for _, f := range o.Since {
			v.consistency(f, b, v.ix, *own)
		}
	} else if len(o.Since) > 0 {
		r.fail(CheckConsistency, "", "no verified checkpoint in the bundle to compare the older checkpoints with")
	}
	v.content(b, env)
	return r
}

// envelope checks the envelope and its signature, and returns it if it
// is valid and of the bundle's message.
func (v *verifier) envelope(b *bundle.Bundle) *envelope.Envelope {
	r := v.r
	env, err := envelope.Parse(b.Envelope)
	switch {
	case err != nil:
		r.fail(CheckEnvelope, bundle.FileEnvelope, "%v", err)
		return nil
	case env.ID != b.MessageID:
		r.fail(CheckEnvelope, bundle.FileEnvelope, "the envelope is of message %s, the bundle of %s", env.ID, b.MessageID)
		return nil
	}
	r.Sender, r.Recipients, r.Subject = env.From, env.To, env.Subject
	r.Type, r.Reference = env.Type, env.Reference
	for _, f := range env.Files {
		r.Documents = append(r.Documents, Document{Name: f.Name, Size: f.Size})
	}
	r.pass(CheckEnvelope, bundle.FileEnvelope, "message %s from %s to %s, %d files, %d bytes sealed",
		env.ID, env.From, strings.Join(env.To, ", "), len(env.Files), env.PayloadSize)
	v.envelopeSignature(b, env)
	return env
}

// anchor settles the trust anchors: the caller's, or else the bundle's
// self-signed CA certificates, which prove nothing by themselves.
func (v *verifier) anchor(fromFile []*x509.Certificate) bool {
	roots := v.o.Roots
	how := "given"
	status := Pass
	if len(roots) == 0 {
		for _, c := range fromFile {
			if c.IsCA && bytes.Equal(c.RawIssuer, c.RawSubject) {
				roots = append(roots, c)
			}
		}
		how, status = "taken from the file itself, so anyone could have made it: compare the fingerprint with the federation's published CA certificate, or pass it with --ca", Indeterminate
	}
	if len(roots) == 0 {
		v.r.fail(CheckTrustAnchor, "", "no CA certificate: pass the federation's CA certificate with --ca")
		return false
	}
	store, err := pki.NewTrustStore(roots, "")
	if err != nil {
		v.r.fail(CheckTrustAnchor, "", "%v", err)
		return false
	}
	v.roots, v.trust = roots, store
	var names []string
	for _, c := range roots {
		names = append(names, fmt.Sprintf("%q (SHA-256 %s)", c.Subject.String(), Fingerprint(c)))
	}
	v.r.Anchor = strings.Join(names, "; ")
	v.r.add(CheckTrustAnchor, "", status, "%s, %s", v.r.Anchor, how)
	return true
}

// loadCRL checks that the CRL is the anchors' and remembers it.
func (v *verifier) loadCRL(data []byte, how string) {
	der := data
	if block, _ := pem.Decode(data); block != nil {
		der = block.Bytes
	}
	// Freshness is judged per signature (CheckRevokedAt), not at this
	// time.
	t, err := pki.NewTrustStoreWithCRLAt(v.roots, der, time.Unix(1, 0))
	if err != nil {
		v.r.fail(CheckCRL, "", "the CRL %s is unusable: %v", how, err)
		return
	}
	crl := t.RevocationList()
	v.crl = t
	v.crlNum = "without a number"
	if crl.Number != nil {
		v.crlNum = "number " + crl.Number.String()
	}
	v.r.pass(CheckCRL, "", "CRL %s (%s) of %q, issued %s, next update %s, lists %d revoked certificates",
		v.crlNum, how, crl.Issuer.String(), stamp(crl.ThisUpdate), stamp(crl.NextUpdate), len(crl.RevokedCertificateEntries))
}

// signed records a verified signature in the report, checks its signer's
// chain for revocation at at, and returns the outcome, which it also
// gives the signature as its status.
func (v *verifier) signed(s Signature, chain []*x509.Certificate, at time.Time) Status {
	s.Status, s.Revoked = v.revocation(s.File, chain, at)
	v.r.Signatures = append(v.r.Signatures, s)
	return s.Status
}

// revocation checks a signer's verified chain against the CRL as it stood
// for a signature made at at; it returns the outcome, and whether the
// certificate is revoked.
func (v *verifier) revocation(subject string, chain []*x509.Certificate, at time.Time) (Status, bool) {
	signer := chain[0]
	if v.crl == nil {
		if len(v.o.CRL) > 0 || v.r.hasCheck(CheckCRL, Fail) {
			v.r.fail(CheckRevocation, subject, "no usable CRL: revocation of serial %x cannot be ruled out", signer.SerialNumber)
			return Fail, false
		}
		v.r.add(CheckRevocation, subject, Indeterminate, "no CRL: revocation of serial %x not checked", signer.SerialNumber)
		return Indeterminate, false
	}
	err := v.crl.CheckRevokedAt(chain, at)
	switch {
	case err == nil:
		v.r.pass(CheckRevocation, subject, "certificate serial %x is not on CRL %s", signer.SerialNumber, v.crlNum)
		return Pass, false
	case errors.Is(err, pki.ErrCRLStale):
		v.r.add(CheckRevocation, subject, Indeterminate, "CRL %s was already due for renewal when this was signed (%s): pass a CRL current at that time with --crl", v.crlNum, stamp(at))
		return Indeterminate, false
	case errors.Is(err, pki.ErrRevoked):
		v.r.fail(CheckRevocation, subject, "the signer's certificate serial %x (%q) is revoked on CRL %s%s", signer.SerialNumber, signer.Subject.String(), v.crlNum, revokedAt(v.crl.RevocationList(), signer))
		return Fail, true
	default:
		v.r.fail(CheckRevocation, subject, "%v", err)
		return Fail, false
	}
}

func revokedAt(crl *x509.RevocationList, c *x509.Certificate) string {
	for _, e := range crl.RevokedCertificateEntries {
		if e.SerialNumber.Cmp(c.SerialNumber) == 0 {
			return " since " + stamp(e.RevocationTime)
		}
	}
	return ""
}

// envelopeSignature checks the sender's detached signature at the time the
// sender's node accepted the message (the first SubmissionAcceptance),
// which the node attests, or the envelope's own time without one.
func (v *verifier) envelopeSignature(b *bundle.Bundle, env *envelope.Envelope) {
	at, attested := env.Created, false
	for i, e := range b.Evidence {
		p := v.claims[i].ev
		if p == nil || p.Statement.Type != evidence.SubmissionAcceptance || p.Statement.MessageID != env.ID {
			continue
		}
		if _, err := evidence.Verify(e.DER, cms.Policy{Trust: v.chainsWith(), At: p.Statement.Time}); err == nil {
			at, attested = p.Statement.Time, true
			break
		}
	}
	const file = bundle.FileSignature
	vd, err := cms.VerifyDetached(b.Signature, b.Envelope, cms.Policy{
		Trust: v.chainsWith(), At: at, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection},
	})
	if err != nil {
		v.r.fail(CheckEnvelopeSignature, file, "%v", err)
		return
	}
	peer, err := pki.PeerOf(vd.Signer)
	if err != nil || peer.Kind != pki.KindParticipant || peer.Address != env.From {
		v.r.fail(CheckEnvelopeSignature, file, "signed by %s, but only the sender %s may sign its envelope", describe(vd.Signer), env.From)
		return
	}
	when := "at the envelope's own time " + stamp(at)
	if attested {
		when = "at its acceptance " + stamp(at)
	}
	v.r.pass(CheckEnvelopeSignature, file, "signed by the sender %s; certificate serial %x valid %s", env.From, vd.Signer.SerialNumber, when)
	// A revoked or unchecked sender certificate vouches for nothing.
	v.envelopeSigned = v.signed(signature(file, "envelope", vd.Signer, at), vd.Chain, at) != Fail
}

// bindEnvelope settles Report.MessageVerified once every evidence is
// checked: the sender's signature over the envelope held (not revoked),
// and verified evidence names the envelope's digest, none another. A
// signature alone is not enough: a sender can sign a second envelope of
// the same id, which no node accepted.
func (v *verifier) bindEnvelope() {
	v.r.MessageVerified = v.unbound() == ""
}

// unbound says why the bundle's envelope is not established as the one
// the evidence is about, "" if it is.
func (v *verifier) unbound() string {
	switch {
	case !v.envelopeSigned:
		return "the sender's signature over it does not hold"
	case v.r.hasCheck(CheckEnvelopeDigest, Fail):
		return "it is not the one the evidence names"
	case !v.r.hasCheck(CheckEnvelopeDigest, Pass):
		return "no verified evidence names its digest"
	}
	return ""
}

// chainsWith returns the chain verifier with the file's certificates as
// intermediates.
func (v *verifier) chainsWith() cms.Verifier {
	return withIntermediates{v.trust, v.certs}
}

type withIntermediates struct {
	t     *pki.TrustStore
	certs []*x509.Certificate
}

func (w withIntermediates) Verify(cert *x509.Certificate, inter []*x509.Certificate, at time.Time, usages ...x509.ExtKeyUsage) ([]*x509.Certificate, error) {
	return w.t.Verify(cert, append(slices.Clone(inter), w.certs...), at, usages...)
}

// evidence checks one evidence file's signature and chain at its time,
// its form, and its signer's role and revocation. It returns nil if any
// of that failed.
func (v *verifier) evidence(file string, der []byte, c claim) *evidence.Evidence {
	claimed, err := c.ev, c.err
	if err != nil {
		// A file altered after signing rarely still parses: say that it
		// was altered rather than blame the statement its signer made.
		if _, serr := cms.CheckSignature(der); serr != nil {
			v.r.fail(CheckEvidenceSignature, file, "%v", serr)
			return nil
		}
		v.r.fail(checkOf(err), file, "%v", unwrapStep(err))
		return nil
	}
	st := claimed.Statement
	ev, err := evidence.Verify(der, cms.Policy{Trust: v.chainsWith(), At: st.Time})
	if err != nil {
		check := checkOf(err)
		if check == CheckSignerRole {
			v.r.pass(CheckEvidenceSignature, file, "%s signed by %s; certificate valid at %s", st.Type, describe(claimed.Signer), stamp(st.Time))
		}
		v.r.fail(check, file, "%v", unwrapStep(err))
		s := evidenceSignature(file, st, claimed.Signer)
		s.Status = Fail
		v.r.Claimed = append(v.r.Claimed, s)
		return nil
	}
	v.r.pass(CheckEvidenceSignature, file, "%s signed by %s; certificate serial %x valid at %s", st.Type, describe(ev.Signer), ev.Signer.SerialNumber, stamp(st.Time))
	if st.Type.ByRecipient() {
		v.r.pass(CheckSignerRole, file, "%s issued by the recipient %s itself", st.Type, st.Recipient)
	} else {
		v.r.pass(CheckSignerRole, file, "%s issued by %s, signed by a node certificate serving it", st.Type, st.Issuer)
	}
	v.signed(evidenceSignature(file, st, ev.Signer), ev.Chain, st.Time)
	return ev
}

func checkOf(err error) string {
	var ve *evidence.VerifyError
	if errors.As(err, &ve) {
		switch ve.Step {
		case "statement":
			return CheckStatement
		case "signer role":
			return CheckSignerRole
		}
	}
	return CheckEvidenceSignature
}

func unwrapStep(err error) error {
	var ve *evidence.VerifyError
	if errors.As(err, &ve) {
		return ve.Reason
	}
	return err
}

// statement checks that an evidence is about the bundle's envelope.
func (v *verifier) statement(file string, st *evidence.Statement, envBytes []byte, env *envelope.Envelope) {
	switch {
	case st.MessageID != env.ID:
		v.r.fail(CheckStatement, file, "about message %s, not %s", st.MessageID, env.ID)
	case st.Sender != env.From:
		v.r.fail(CheckStatement, file, "names sender %s, the envelope %s", st.Sender, env.From)
	case st.Recipient != "" && !slices.Contains(env.To, st.Recipient):
		v.r.fail(CheckStatement, file, "names recipient %s, who is not among the envelope's", st.Recipient)
	default:
		v.r.pass(CheckStatement, file, "%s about message %s from %s to %s", st.Type, st.MessageID, st.Sender, st.Recipient)
	}
	if got := envelope.Digest(envBytes); st.EnvelopeSHA256 != got {
		v.r.fail(CheckEnvelopeDigest, file, "names envelope SHA-256 %s, the bundle's envelope has %s", st.EnvelopeSHA256, got)
	} else {
		v.r.pass(CheckEnvelopeDigest, file, "envelope SHA-256 %s matches envelope.json", short(got))
	}
	if st.PayloadSHA256 != env.PayloadSHA256 {
		v.r.fail(CheckPayloadDigest, file, "names payload SHA-256 %s, the signed envelope %s", st.PayloadSHA256, env.PayloadSHA256)
	} else {
		v.r.pass(CheckPayloadDigest, file, "payload SHA-256 %s matches the one the sender signed in the envelope", short(st.PayloadSHA256))
	}
}

// chains groups statements by recipient, in bundle order, and checks each
// chain.
func (v *verifier) chains(links []evidence.Link) {
	byRecipient := map[string][]evidence.Link{}
	var order []string
	for i, l := range links {
		r := l.Statement.Recipient
		if r == "" {
			// A SubmissionRejection stands alone.
			r = fmt.Sprintf("\x00%d", i)
		}
		if _, ok := byRecipient[r]; !ok {
			order = append(order, r)
		}
		byRecipient[r] = append(byRecipient[r], l)
	}
	for _, rcpt := range order {
		chain := byRecipient[rcpt]
		var types []string
		for _, l := range chain {
			types = append(types, string(l.Statement.Type))
		}
		subject := "chain for " + rcpt
		if strings.HasPrefix(rcpt, "\x00") {
			rcpt, subject = "", "rejection "+chain[0].Digest[:16]
		}
		if err := evidence.CheckChain(chain); err != nil {
			v.r.fail(CheckChain, subject, "%v", err)
			continue
		}
		last := chain[len(chain)-1].Statement
		v.r.Chains = append(v.r.Chains, Chain{Recipient: rcpt, Types: types, State: types[len(types)-1], Reason: last.Reason})
		ended := ""
		if last.Type == evidence.Rejection {
			ended = fmt.Sprintf("; the recipient refused the message (%s)", last.Reason)
		}
		v.r.pass(CheckChain, subject, "%s: each names its predecessor's SHA-256, in an order the state machine allows%s", strings.Join(types, " → "), ended)
	}
}

func (r *Report) hasCheck(name string, s Status) bool {
	for _, c := range r.Checks {
		if c.Name == name && c.Status == s {
			return true
		}
	}
	return false
}

func signature(file, what string, c *x509.Certificate, at time.Time) Signature {
	s := Signature{File: file, What: what, Signer: describe(c), Time: at.UTC()}
	if c != nil { // a claimed evidence may name no certificate
		s.Certificate, s.Serial, s.Issuer = c.Subject.String(), fmt.Sprintf("%x", c.SerialNumber), c.Issuer.String()
	}
	return s
}

// evidenceSignature describes an evidence's signature with what its
// statement says about whom and by whom.
func evidenceSignature(file string, st *evidence.Statement, c *x509.Certificate) Signature {
	s := signature(file, string(st.Type), c, st.Time)
	s.Recipient, s.Node, s.Reason = st.Recipient, st.Issuer, st.Reason
	return s
}

// describe names a certificate's holder as Kurier sees it.
func describe(c *x509.Certificate) string {
	if c == nil {
		return "no certificate"
	}
	if p, err := pki.PeerOf(c); err == nil {
		return p.String()
	}
	return fmt.Sprintf("%q", c.Subject.String())
}

// count returns "1 log", "2 logs".
func count(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func short(h string) string {
	if len(h) > 16 {
		return h[:16] + "…"
	}
	return h
}
