package cms

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/asn1"
	"fmt"
	"math/big"
	"slices"
	"time"

	"golang.org/x/crypto/cryptobyte"
	casn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// This file reads SignedData (RFC 5652 section 5). DER input, what Kurier
// signs and verifies by the thousand, is read in place with cryptobyte,
// without copying it first; anything else (BER with indefinite lengths or
// strings in pieces, as streamed SignedData comes) is read by the BER
// reader of ber.go, which hands the parts after the content (certificates
// and signer infos) to the same cryptobyte code as DER. Either way the
// parser keeps the parts that verification needs and checks their syntax;
// verify.go decides what they mean.

// signedData is what a SignedData says, but its content (which is either
// in content or streamed).
type signedData struct {
	digests     []crypto.Hash // digestAlgorithms that a streaming reader hashes with (SHA-2 only)
	contentType asn1.ObjectIdentifier
	hasContent  bool // eContent present (not a detached signature)
	content     []byte
	certs       []*x509.Certificate
	signers     int         // number of SignerInfos
	si          *signerInfo // the first of them
}

// signerInfo is one SignerInfo.
type signerInfo struct {
	issuer      []byte // issuerAndSerialNumber, or
	serial      *big.Int
	keyID       []byte // subjectKeyIdentifier
	digestOID   asn1.ObjectIdentifier
	hasAttrs    bool
	attrs       []byte // the DER SET OF signed attributes that the signature covers
	contentType asn1.ObjectIdentifier
	digest      []byte // the message-digest attribute
	signingTime time.Time
	sigOID      asn1.ObjectIdentifier
	sigParams   []byte
	signature   []byte
}

// notDER means input is not in DER framing; the BER reader may still
// read it.
type notDER string

func (e notDER) Error() string        { return ErrMalformed.Error() + ": " + string(e) }
func (e notDER) Is(target error) bool { return target == ErrMalformed }

// notSigned refuses a ContentInfo of another type, as "no signer": it
// carries no SignerInfo (it may well be an EnvelopedData given to Verify
// before Decrypt).
func notSigned(oid asn1.ObjectIdentifier) error {
	return fmt.Errorf("%w: content type %s, not SignedData", ErrNoSigner, oidName(oid))
}

// parseSignedDER reads DER ContentInfo holding SignedData. The content is
// returned as a slice of der. An error of type notDER means the framing
// is not DER, and parseSignedBER may read it.
func parseSignedDER(der []byte) (*signedData, error) {
	in := cryptobyte.String(der)
	var ci, wrapped, sd, algs, encap cryptobyte.String
	var oid asn1.ObjectIdentifier
	if !in.ReadASN1(&ci, casn1.SEQUENCE) || !in.Empty() || !ci.ReadASN1ObjectIdentifier(&oid) {
		return nil, notDER("not a DER ContentInfo, or bytes after it")
	}
	if !oid.Equal(oidSignedData) {
		return nil, notSigned(oid)
	}
	var version int64
	if !ci.ReadASN1(&wrapped, tag0.Constructed()) || !ci.Empty() ||
		!wrapped.ReadASN1(&sd, casn1.SEQUENCE) || !wrapped.Empty() ||
		!sd.ReadASN1Integer(&version) || !sd.ReadASN1(&algs, casn1.SET) ||
		!sd.ReadASN1(&encap, casn1.SEQUENCE) {
		return nil, notDER("SignedData not DER")
	}
	s := &signedData{}
	if err := s.readHead(version, algs); err != nil {
		return nil, err
	}
	var explicit, content cryptobyte.String
	if !encap.ReadASN1ObjectIdentifier(&s.contentType) ||
		!encap.ReadOptionalASN1(&explicit, &s.hasContent, tag0.Constructed()) || !encap.Empty() {
		return nil, notDER("encapsulated content info not DER")
	}
	if s.hasContent {
		if !explicit.ReadASN1(&content, casn1.OCTET_STRING) || !explicit.Empty() {
			return nil, notDER("content not one DER OCTET STRING")
		}
		s.content = content
	}
	if err := s.readTail(sd); err != nil {
		return nil, err
	}
	return s, nil
}

// readHead checks the version and reads the digest algorithms, of which
// a streaming reader hashes the content with those of SHA-2 (RFC 5652
// section 5.1 lists them for one-pass processing).
func (s *signedData) readHead(version int64, algs cryptobyte.String) error {
	if version < 1 || version > 5 {
		return fmt.Errorf("%w: SignedData version %d", ErrMalformed, version)
	}
	for !algs.Empty() {
		oid, _, ok := readAlgorithm(&algs)
		if !ok {
			return notDER("digest algorithms not DER")
		}
		if h := hashOf(oid); h != 0 && !slices.Contains(s.digests, h) {
			s.digests = append(s.digests, h)
		}
	}
	return nil
}

// readTail reads what follows the content: certificates, CRLs (skipped:
// revocation comes from the Verifier) and signer infos.
func (s *signedData) readTail(sd cryptobyte.String) error {
	var certs, infos cryptobyte.String
	var hasCerts bool
	if !sd.ReadOptionalASN1(&certs, &hasCerts, tag0.Constructed()) ||
		!sd.SkipOptionalASN1(tag1.Constructed()) ||
		!sd.ReadASN1(&infos, casn1.SET) || !sd.Empty() {
		return notDER("certificates or signer infos not DER, or bytes after them")
	}
	for !certs.Empty() {
		var c cryptobyte.String
		var tag casn1.Tag
		if !certs.ReadAnyASN1Element(&c, &tag) {
			return notDER("certificates not DER")
		}
		if tag != casn1.SEQUENCE {
			return fmt.Errorf("%w: certificate of a kind other than X.509 (tag %#x)", ErrMalformed, uint8(tag))
		}
		cert, err := x509.ParseCertificate(c)
		if err != nil {
			return fmt.Errorf("%w: certificate %d: %v", ErrMalformed, len(s.certs), err)
		}
		s.certs = append(s.certs, cert)
	}
	for !infos.Empty() {
		var info cryptobyte.String
		if !infos.ReadASN1(&info, casn1.SEQUENCE) {
			return notDER("signer infos not DER")
		}
		s.signers++
		if s.signers == 1 {
			si, err := parseSignerInfo(info)
			if err != nil {
				return err
			}
			s.si = si
		}
	}
	return nil
}

// parseSignerInfo reads the contents of one SignerInfo.
func parseSignerInfo(in cryptobyte.String) (*signerInfo, error) {
	si := &signerInfo{}
	var version int64
	if !in.ReadASN1Integer(&version) {
		return nil, notDER("SignerInfo version not DER")
	}
	switch version {
	case 1:
		var ias, issuer cryptobyte.String
		si.serial = new(big.Int)
		if !in.ReadASN1(&ias, casn1.SEQUENCE) || !ias.ReadASN1Element(&issuer, casn1.SEQUENCE) ||
			!ias.ReadASN1Integer(si.serial) || !ias.Empty() {
			return nil, notDER("issuerAndSerialNumber not DER")
		}
		si.issuer = issuer
	case 3:
		var keyID cryptobyte.String
		if !in.ReadASN1(&keyID, tag0) {
			return nil, notDER("version 3 SignerInfo without a subjectKeyIdentifier")
		}
		si.keyID = keyID
	default:
		return nil, fmt.Errorf("%w: SignerInfo version %d, want 1 or 3", ErrMalformed, version)
	}
	var attrs, sig cryptobyte.String
	var ok bool
	if si.digestOID, _, ok = readAlgorithm(&in); !ok ||
		!in.ReadOptionalASN1(&attrs, &si.hasAttrs, tag0.Constructed()) {
		return nil, notDER("SignerInfo digest algorithm or signed attributes not DER")
	}
	if si.sigOID, si.sigParams, ok = readAlgorithm(&in); !ok ||
		!in.ReadASN1(&sig, casn1.OCTET_STRING) || !in.SkipOptionalASN1(tag1.Constructed()) || !in.Empty() {
		return nil, notDER("SignerInfo signature not DER, or bytes after it")
	}
	si.signature = sig
	if si.hasAttrs {
		if err := si.readAttributes(attrs); err != nil {
			return nil, err
		}
	}
	return si, nil
}

// readAttributes reads the signed attributes that verification needs and
// keeps their DER encoding with the SET OF tag, which is what the
// signature is over (RFC 5652 section 5.4): the attributes sorted by
// their encodings, as DER orders a SET OF, under tag 0x31 in place of the
// [0] IMPLICIT they are sent with. The three attributes of RFC 5652
// section 11 must be single-valued and appear at most once.
func (si *signerInfo) readAttributes(in cryptobyte.String) error {
	var elems [][]byte
	var seen [3]bool
	for !in.Empty() {
		var elem, attr, oid, values cryptobyte.String
		if !in.ReadASN1Element(&elem, casn1.SEQUENCE) {
			return notDER("signed attributes not DER")
		}
		elems = append(elems, elem)
		if !elem.ReadASN1(&attr, casn1.SEQUENCE) || !attr.ReadASN1(&oid, casn1.OBJECT_IDENTIFIER) ||
			!attr.ReadASN1(&values, casn1.SET) || !attr.Empty() {
			return notDER("signed attribute not DER")
		}
		// Compared as encoded: no OID decoded for every attribute of
		// every evidence.
		i := slices.IndexFunc(signedAttributeOIDs[:], func(o []byte) bool { return bytes.Equal(o, oid) })
		if i < 0 {
			continue
		}
		if seen[i] {
			return fmt.Errorf("%w: signed attribute %s twice", ErrMalformed, signedAttributeNames[i])
		}
		seen[i] = true
		var ok bool
		switch i {
		case 0:
			ok = values.ReadASN1ObjectIdentifier(&si.contentType)
		case 1:
			var d cryptobyte.String
			ok = values.ReadASN1(&d, casn1.OCTET_STRING)
			si.digest = d
		case 2:
			switch {
			case values.PeekASN1Tag(casn1.UTCTime):
				ok = values.ReadASN1UTCTime(&si.signingTime)
			case values.PeekASN1Tag(casn1.GeneralizedTime):
				ok = values.ReadASN1GeneralizedTime(&si.signingTime)
			}
		}
		if !ok || !values.Empty() {
			return fmt.Errorf("%w: signed attribute %s is not one valid value", ErrMalformed, signedAttributeNames[i])
		}
	}
	if !slices.IsSortedFunc(elems, bytes.Compare) {
		elems = slices.Clone(elems)
		slices.SortFunc(elems, bytes.Compare)
	}
	n := 0
	for _, e := range elems {
		n += len(e)
	}
	si.attrs = appendLength([]byte{0x31}, int64(n))
	for _, e := range elems {
		si.attrs = append(si.attrs, e...)
	}
	return nil
}

// The signed attributes that verification reads (RFC 5652 section 11),
// their OIDs encoded.
var (
	signedAttributeOIDs  = [3][]byte{derOID(oidAttributeContentType), derOID(oidAttributeMessageDigest), derOID(oidAttributeSigningTime)}
	signedAttributeNames = [3]string{"content-type", "message-digest", "signing-time"}
)

// signerCert returns the embedded certificate the SignerInfo names.
func (s *signedData) signerCert() (*x509.Certificate, error) {
	switch {
	case s.signers == 0:
		return nil, fmt.Errorf("%w: no SignerInfo", ErrNoSigner)
	case s.signers > 1:
		return nil, fmt.Errorf("%w: %d signers, want exactly one", ErrMalformed, s.signers)
	}
	for _, c := range s.certs {
		if s.si.issuer != nil && c.SerialNumber.Cmp(s.si.serial) == 0 && bytes.Equal(c.RawIssuer, s.si.issuer) ||
			s.si.keyID != nil && len(c.SubjectKeyId) > 0 && bytes.Equal(c.SubjectKeyId, s.si.keyID) {
			return c, nil
		}
	}
	return nil, fmt.Errorf("%w: signer's certificate is not embedded", ErrNoSigner)
}

// hashOf returns the SHA-2 hash a digest algorithm names, or 0.
func hashOf(oid asn1.ObjectIdentifier) crypto.Hash {
	switch {
	case oid.Equal(oidSHA256):
		return crypto.SHA256
	case oid.Equal(oidSHA384):
		return crypto.SHA384
	case oid.Equal(oidSHA512):
		return crypto.SHA512
	}
	return 0
}

// parseSignedBER reads ContentInfo holding SignedData from b up to its
// content, which the caller then reads with the returned reader (nil for
// a detached signature) before calling finishSignedBER.
func parseSignedBER(b *berReader) (*signedData, *stringReader, error) {
	if err := b.enterExpected(berTag(casn1.SEQUENCE), "ContentInfo"); err != nil {
		return nil, nil, err
	}
	oid, err := readOID(b, "content type")
	if err != nil {
		return nil, nil, err
	}
	if !oid.Equal(oidSignedData) {
		return nil, nil, notSigned(oid)
	}
	if err := b.enterExpected(berTag(tag0.Constructed()), "ContentInfo content"); err != nil {
		return nil, nil, err
	}
	if err := b.enterExpected(berTag(casn1.SEQUENCE), "SignedData"); err != nil {
		return nil, nil, err
	}
	var version int64
	if der, err := readSmall(b, casn1.INTEGER, "SignedData version"); err != nil {
		return nil, nil, err
	} else if s := cryptobyte.String(der); !s.ReadASN1Integer(&version) {
		return nil, nil, b.malformed("SignedData version not an integer")
	}
	algs, err := readSmall(b, casn1.SET, "digest algorithms")
	if err != nil {
		return nil, nil, err
	}
	sd := &signedData{}
	var set cryptobyte.String
	if a := cryptobyte.String(algs); !a.ReadASN1(&set, casn1.SET) {
		return nil, nil, b.malformed("digest algorithms not a SET")
	}
	if err := sd.readHead(version, set); err != nil {
		return nil, nil, err
	}
	if err := b.enterExpected(berTag(casn1.SEQUENCE), "encapsulated content info"); err != nil {
		return nil, nil, err
	}
	if sd.contentType, err = readOID(b, "encapsulated content type"); err != nil {
		return nil, nil, err
	}
	h, ok, err := b.next()
	if err != nil {
		return nil, nil, err
	}
	if !ok {
		b.stack = b.stack[:len(b.stack)-1] // a detached signature
		return sd, nil, nil
	}
	if h.tag != berTag(tag0.Constructed()) {
		return nil, nil, b.malformed("encapsulated content expected, found tag %#x", uint32(h.tag))
	}
	if err := b.enter(h); err != nil {
		return nil, nil, err
	}
	h, ok, err = b.next()
	if err != nil {
		return nil, nil, err
	}
	if !ok || h.tag&^constructedBit != berTag(casn1.OCTET_STRING) {
		return nil, nil, b.malformed("content is not an OCTET STRING")
	}
	content, err := newStringReader(b, h, berTag(casn1.OCTET_STRING))
	if err != nil {
		return nil, nil, err
	}
	sd.hasContent = true
	return sd, content, nil
}

// finishSignedBER reads what follows the content that parseSignedBER
// began: the end of the encapsulated content info, certificates, CRLs and
// signer infos, the ends of the SignedData and ContentInfo, and the end
// of the input.
func finishSignedBER(b *berReader, sd *signedData) error {
	if sd.hasContent {
		if err := b.leave("content"); err != nil {
			return err
		}
		if err := b.leave("encapsulated content info"); err != nil {
			return err
		}
	}
	var tail []byte
	for {
		h, ok, err := b.next()
		if err != nil {
			return err
		}
		if !ok {
			break
		}
		der, err := b.readDER(h, maxHeaderElement-len(tail))
		if err != nil {
			return err
		}
		tail = append(tail, der...)
	}
	b.stack = b.stack[:len(b.stack)-1] // the SignedData, at its end
	if err := b.leave("SignedData"); err != nil {
		return err
	}
	if err := b.leave("ContentInfo"); err != nil {
		return err
	}
	if err := b.expectEOF(); err != nil {
		return err
	}
	return sd.readTail(cryptobyte.String(tail))
}

// readSmall reads the next element, which must carry tag, whole as DER.
func readSmall(b *berReader, tag casn1.Tag, what string) ([]byte, error) {
	h, err := b.expect(berTag(tag), what)
	if err != nil {
		return nil, err
	}
	return b.readDER(h, 64<<10)
}

// readOID reads the next element, which must be an OBJECT IDENTIFIER.
func readOID(b *berReader, what string) (asn1.ObjectIdentifier, error) {
	der, err := readSmall(b, casn1.OBJECT_IDENTIFIER, what)
	if err != nil {
		return nil, err
	}
	var oid asn1.ObjectIdentifier
	if s := cryptobyte.String(der); !s.ReadASN1ObjectIdentifier(&oid) {
		return nil, b.malformed("%s is not a valid OBJECT IDENTIFIER", what)
	}
	return oid, nil
}
