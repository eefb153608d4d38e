package evidence

import (
	"crypto/x509"
	"errors"
	"fmt"

	"kurier.dev/kurier/address"
	"kurier.dev/kurier/pki"
	"kurier.dev/kurier/pki/cms"
)

// MaxSize bounds one evidence DER file: a statement, a signer chain and a
// signature fit well within it.
const MaxSize = 64 << 10

// Evidence is a parsed evidence file.
type Evidence struct {
	DER       []byte
	Statement *Statement
	// Signer is the certificate that signed DER. After Verify it has been
	// checked; after Parse it is only what the file claims.
	Signer *x509.Certificate
	// Chain is the verified chain from Signer to a trust anchor; nil after
	// Parse.
	Chain []*x509.Certificate
}

// Digest returns the SHA-256 of the DER file, as the next evidence names it.
func (e *Evidence) Digest() string { return Digest(e.DER) }

// Link returns e as a chain link.
func (e *Evidence) Link() Link { return Link{Statement: e.Statement, Digest: e.Digest()} }

// VerifyError says which check an evidence failed, so that reports can name
// it.
type VerifyError struct {
	Step   string // "size", "signature", "statement" or "signer role"
	Reason error
}

func (e *VerifyError) Error() string {
	return fmt.Sprintf("evidence %s check failed: %v", e.Step, e.Reason)
}

// Unwrap returns the underlying reason.
func (e *VerifyError) Unwrap() error { return e.Reason }

// Sign validates st and signs its canonical JSON as attached CMS
// SignedData with s. Security: s must be the issuer named in st; Sign
// checks that s's certificate speaks for st.Issuer.
func Sign(st *Statement, s cms.Signer) ([]byte, error) {
	b, err := st.Marshal()
	if err != nil {
		return nil, err
	}
	if err := checkRole(st, s.Cert); err != nil {
		return nil, fmt.Errorf("sign %s: %w", st.Type, err)
	}
	der, err := cms.Sign(b, s)
	if err != nil {
		return nil, fmt.Errorf("sign %s: %w", st.Type, err)
	}
	return der, nil
}

// Parse reads an evidence file without verifying anything but its form.
// Use it only to display or route evidence; use Verify before relying on it.
func Parse(der []byte) (*Evidence, error) {
	if len(der) > MaxSize {
		return nil, &VerifyError{Step: "size", Reason: fmt.Errorf("%d bytes, at most %d", len(der), MaxSize)}
	}
	v, err := cms.ParseSigned(der)
	if err != nil {
		return nil, &VerifyError{Step: "signature", Reason: err}
	}
	st, err := ParseStatement(v.Content)
	if err != nil {
		return nil, &VerifyError{Step: "statement", Reason: err}
	}
	return &Evidence{DER: der, Statement: st, Signer: v.Signer}, nil
}

// Verify checks an evidence file under policy p: the CMS signature, the
// signer's chain and revocation at p.At, the statement's form, and that the
// signer may issue this type (a node for node evidence, serving the issuer
// domain; the recipient itself for an Acknowledgement or a Rejection).
func Verify(der []byte, p cms.Policy) (*Evidence, error) {
	if len(der) > MaxSize {
		return nil, &VerifyError{Step: "size", Reason: fmt.Errorf("%d bytes, at most %d", len(der), MaxSize)}
	}
	if p.MaxSize == 0 {
		p.MaxSize = MaxSize
	}
	v, err := cms.Verify(der, p)
	if err != nil {
		return nil, &VerifyError{Step: "signature", Reason: err}
	}
	st, err := ParseStatement(v.Content)
	if err != nil {
		return nil, &VerifyError{Step: "statement", Reason: err}
	}
	if err := checkRole(st, v.Signer); err != nil {
		return nil, &VerifyError{Step: "signer role", Reason: err}
	}
	return &Evidence{DER: der, Statement: st, Signer: v.Signer, Chain: v.Chain}, nil
}

// ErrRole is returned when a certificate may not issue an evidence.
var ErrRole = errors.New("signer may not issue this evidence")

// checkRole checks that cert may sign st. Security: checking only that the
// signer serves the issuer domain is not enough; without the issuer check a
// node serving several domains could attest a Delivery in the name of the
// wrong one.
func checkRole(st *Statement, cert *x509.Certificate) error {
	if want := expectedIssuer(st); want != "" && st.Issuer != want {
		return fmt.Errorf("%w: %s evidence is issued by %s, but only %s may issue it", ErrRole, st.Type, st.Issuer, want)
	}
	peer, err := pki.PeerOf(cert)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrRole, err)
	}
	if st.Type.ByRecipient() {
		if peer.Kind != pki.KindParticipant || peer.Address != st.Recipient {
			return fmt.Errorf("%w: %s must be signed by its recipient %s, not by %s", ErrRole, st.Type, st.Recipient, peer)
		}
		return nil
	}
	if peer.Kind != pki.KindNode || !peer.Serves(st.Issuer) {
		return fmt.Errorf("%w: %s must be signed by the node of %s, not by %s", ErrRole, st.Type, st.Issuer, peer)
	}
	return nil
}

// expectedIssuer returns the issuer st must name: the domain of the sender
// for SubmissionAcceptance and SubmissionRejection (issued by the sender's
// node); the domain of the recipient for Delivery and Retrieval (issued by
// the recipient's node); the recipient's address for an Acknowledgement
// or a Rejection.
// It returns "" for relay evidence and NonDelivery, which whichever node
// holds the message issues; Verify still checks that its signer
// serves the domain it names.
func expectedIssuer(st *Statement) string {
	switch st.Type {
	case SubmissionAcceptance, SubmissionRejection:
		return address.DomainOf(st.Sender)
	case Delivery, Retrieval:
		return address.DomainOf(st.Recipient)
	case Acknowledgement, Rejection:
		return st.Recipient
	default:
		return ""
	}
}
