package cms

import (
	"bytes"
	"crypto/aes"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"slices"

	"golang.org/x/crypto/cryptobyte"
	casn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// This file reads and writes the one shape of EnvelopedData (RFC 5652
// section 6) that Kurier needs: KeyTransRecipientInfos to RSA keys and
// id-data content encrypted with AES-CBC. pkcs7 cannot do it: it transports
// keys with PKCS #1 v1.5 only, decrypts with v1.5 whatever algorithm a
// recipient info names, and neither takes nor returns the content-encryption
// key. cryptobyte reads DER only, checks every length against what is left,
// and never panics; every SEQUENCE is read to its end, so trailing bytes at
// any level are refused.

var (
	oidRSAESOAEP = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 7} // RFC 8017 appendix A.2.1
	oidMGF1      = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 8}

	tag0 = casn1.Tag(0).ContextSpecific()
	tag1 = casn1.Tag(1).ContextSpecific()
	tag2 = casn1.Tag(2).ContextSpecific()
)

// keyTransport is how a recipient's copy of the content-encryption key is
// encrypted.
type keyTransport int

const (
	// transportPKCS1v15 is rsaEncryption: what Kurier wrote before
	// RSAES-OAEP, and what OpenSSL writes by default. Read, never written.
	transportPKCS1v15 keyTransport = iota + 1
	// transportOAEPSHA256 is RSAES-OAEP with SHA-256, MGF1 with SHA-256 and
	// an empty label (BSI TR-02102-1).
	transportOAEPSHA256
)

// oaepSHA256 is the DER AlgorithmIdentifier Kurier writes for key transport:
// id-RSAES-OAEP with explicit RSAES-OAEP-params (RFC 4055 section 4.1,
// rSAES-OAEP-SHA256-Identifier): hashFunc sha256, maskGenFunc mgf1 with
// sha256, pSourceFunc the default (an empty label, so omitted in DER). The
// SHA-256 identifiers carry NULL parameters, as RFC 4055 section 2.1
// defines them for OAEP; readers take NULL and absent alike.
var oaepSHA256 = func() []byte {
	sha256 := func(b *cryptobyte.Builder) {
		b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1ObjectIdentifier(oidSHA256)
			b.AddASN1NULL()
		})
	}
	var b cryptobyte.Builder
	b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(oidRSAESOAEP)
		b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1(tag0.Constructed(), sha256)
			b.AddASN1(tag1.Constructed(), func(b *cryptobyte.Builder) {
				b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) {
					b.AddASN1ObjectIdentifier(oidMGF1)
					sha256(b)
				})
			})
		})
	})
	return b.BytesOrPanic() // constant input: cannot fail
}()

// marshalRecipientInfos returns the DER SET OF KeyTransRecipientInfo:
// for each recipient one naming it by issuer and serial number, with its
// encrypted key and oaepSHA256.
func marshalRecipientInfos(recipients []*x509.Certificate, encryptedKeys [][]byte) ([]byte, error) {
	infos := make([][]byte, len(recipients))
	for i, r := range recipients {
		var b cryptobyte.Builder
		b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1Int64(0)
			b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddBytes(r.RawIssuer)
				b.AddASN1BigInt(r.SerialNumber)
			})
			b.AddBytes(oaepSHA256)
			b.AddASN1OctetString(encryptedKeys[i])
		})
		der, err := b.Bytes()
		if err != nil {
			return nil, fmt.Errorf("recipient info for %q: %w", r.Subject, err)
		}
		infos[i] = der
	}
	slices.SortFunc(infos, bytes.Compare) // DER orders a SET OF by encoding
	var b cryptobyte.Builder
	b.AddASN1(casn1.SET, func(b *cryptobyte.Builder) {
		for _, ri := range infos {
			b.AddBytes(ri)
		}
	})
	return b.Bytes()
}

// aes256CBC returns the DER AlgorithmIdentifier of AES-256-CBC with iv.
func aes256CBC(iv []byte) []byte {
	var b cryptobyte.Builder
	b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(oidAES256CBC)
		b.AddASN1OctetString(iv)
	})
	return b.BytesOrPanic() // a 16-byte IV: cannot fail
}

// marshalEnveloped returns DER ContentInfo holding EnvelopedData version 0
// with the recipient infos infos (a DER SET) and the AES-256-CBC
// ciphertext of id-data content under iv.
func marshalEnveloped(infos, iv, ciphertext []byte) ([]byte, error) {
	var b cryptobyte.Builder
	b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) { // ContentInfo
		b.AddASN1ObjectIdentifier(oidEnvelopedData)
		b.AddASN1(tag0.Constructed(), func(b *cryptobyte.Builder) {
			b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) { // EnvelopedData
				b.AddASN1Int64(0)
				b.AddBytes(infos)
				b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) { // EncryptedContentInfo
					b.AddASN1ObjectIdentifier(oidData)
					b.AddBytes(aes256CBC(iv))
					b.AddASN1(tag0, func(b *cryptobyte.Builder) { b.AddBytes(ciphertext) })
				})
			})
		})
	})
	return b.Bytes()
}

// enveloped is what opening EnvelopedData needs for one recipient.
type enveloped struct {
	transport    keyTransport
	encryptedKey []byte
	keyLen       int // of the AES key: 16 or 32
	iv           []byte
	ciphertext   []byte // a non-empty multiple of the block size
}

// parseEnveloped reads DER ContentInfo holding EnvelopedData and returns
// what cert's recipient info and the encrypted content say. It refuses
// originator info, unprotected attributes, a content cipher other than
// AES-CBC, and a key transport other than those keyTransportOf accepts.
// Recipient infos of other kinds (key agreement, KEK, password, other) are
// skipped; every KeyTransRecipientInfo must be well-formed, the first one
// for cert is used. Errors wrap ErrMalformed where the structure is wrong;
// a refused algorithm is an error of its own.
func parseEnveloped(der []byte, cert *x509.Certificate) (*enveloped, error) {
	in := cryptobyte.String(der)
	var ci, content, ed, infos, eci cryptobyte.String
	var contentType asn1.ObjectIdentifier
	if !in.ReadASN1(&ci, casn1.SEQUENCE) || !in.Empty() ||
		!ci.ReadASN1ObjectIdentifier(&contentType) ||
		!ci.ReadASN1(&content, tag0.Constructed()) || !ci.Empty() {
		return nil, fmt.Errorf("%w: not a DER ContentInfo, or bytes after it", ErrMalformed)
	}
	if !contentType.Equal(oidEnvelopedData) {
		return nil, fmt.Errorf("%w: content type %s, want EnvelopedData", ErrMalformed, oidName(contentType))
	}
	var version int64
	if !content.ReadASN1(&ed, casn1.SEQUENCE) || !content.Empty() ||
		!ed.ReadASN1Integer(&version) ||
		!ed.ReadASN1(&infos, casn1.SET) ||
		!ed.ReadASN1(&eci, casn1.SEQUENCE) || !ed.Empty() {
		return nil, fmt.Errorf("%w: EnvelopedData not DER, or with originator info, unprotected attributes or other bytes (refused)", ErrMalformed)
	}
	if version < 0 || version > 4 { // RFC 5652 section 6.1 uses 0, 2, 3 and 4
		return nil, fmt.Errorf("%w: EnvelopedData version %d", ErrMalformed, version)
	}
	env, err := parseEncryptedContent(eci)
	if err != nil {
		return nil, err
	}
	if env.transport, env.encryptedKey, err = findRecipient(infos, cert); err != nil {
		return nil, err
	}
	return env, nil
}

// findRecipient reads the contents of the SET OF RecipientInfo and returns
// the key transport and encrypted key of the first one for cert.
func findRecipient(infos cryptobyte.String, cert *x509.Certificate) (keyTransport, []byte, error) {
	var ours, encryptedKey cryptobyte.String
	found := false
	for i := 0; !infos.Empty(); i++ {
		var info cryptobyte.String
		var tag casn1.Tag
		if !infos.ReadAnyASN1Element(&info, &tag) {
			return 0, nil, fmt.Errorf("%w: recipient info %d not DER", ErrMalformed, i)
		}
		if tag != casn1.SEQUENCE {
			continue // not a KeyTransRecipientInfo: for another kind of key
		}
		mine, alg, key, err := readKeyTrans(info, cert)
		if err != nil {
			return 0, nil, fmt.Errorf("%w: recipient info %d: %v", ErrMalformed, i, err)
		}
		if mine && !found {
			found, ours, encryptedKey = true, alg, key
		}
	}
	if !found {
		return 0, nil, fmt.Errorf("no recipient info for certificate %q (issuer and serial number, or subject key identifier)", cert.Subject)
	}
	transport, err := keyTransportOf(ours)
	if err != nil {
		return 0, nil, err
	}
	return transport, encryptedKey, nil
}

// parseEncryptedContent reads EncryptedContentInfo: id-data, AES-128-CBC or
// AES-256-CBC with a 16-byte IV, and the ciphertext.
func parseEncryptedContent(eci cryptobyte.String) (*enveloped, error) {
	env, err := readContentCipher(&eci)
	if err != nil {
		return nil, err
	}
	var ciphertext cryptobyte.String
	// DER has the ciphertext in a primitive [0]. pkcs7, and so Kurier
	// before RSAES-OAEP, wrote it constructed, around one OCTET STRING: read
	// that form too, but no BER beyond it.
	var wrapped cryptobyte.String
	switch {
	case eci.PeekASN1Tag(tag0.Constructed()):
		if !eci.ReadASN1(&wrapped, tag0.Constructed()) || !wrapped.ReadASN1(&ciphertext, casn1.OCTET_STRING) || !wrapped.Empty() {
			return nil, fmt.Errorf("%w: encrypted content in pieces (BER), or not DER", ErrMalformed)
		}
	case !eci.ReadASN1(&ciphertext, tag0):
		return nil, fmt.Errorf("%w: encrypted content missing or not DER", ErrMalformed)
	}
	if !eci.Empty() {
		return nil, fmt.Errorf("%w: bytes after the encrypted content", ErrMalformed)
	}
	if len(ciphertext) == 0 || len(ciphertext)%aes.BlockSize != 0 {
		return nil, fmt.Errorf("%w: encrypted content is %d bytes, not a multiple of the AES block", ErrMalformed, len(ciphertext))
	}
	env.ciphertext = ciphertext
	return env, nil
}

// readContentCipher reads the start of EncryptedContentInfo: id-data, and
// AES-128-CBC or AES-256-CBC with a 16-byte IV.
func readContentCipher(eci *cryptobyte.String) (*enveloped, error) {
	var contentType asn1.ObjectIdentifier
	if !eci.ReadASN1ObjectIdentifier(&contentType) {
		return nil, fmt.Errorf("%w: EncryptedContentInfo: no content type", ErrMalformed)
	}
	if !contentType.Equal(oidData) {
		return nil, fmt.Errorf("%w: encrypted content type %s, want id-data", ErrMalformed, oidName(contentType))
	}
	cipher, params, ok := readAlgorithm(eci)
	if !ok {
		return nil, fmt.Errorf("%w: EncryptedContentInfo: content cipher not DER", ErrMalformed)
	}
	env := &enveloped{}
	switch {
	case cipher.Equal(oidAES256CBC):
		env.keyLen = 32
	case cipher.Equal(oidAES128CBC):
		env.keyLen = 16
	default:
		return nil, fmt.Errorf("content cipher %s refused, want AES-CBC", oidName(cipher))
	}
	var iv cryptobyte.String
	if !params.ReadASN1(&iv, casn1.OCTET_STRING) || !params.Empty() || len(iv) != aes.BlockSize {
		return nil, fmt.Errorf("%w: AES-CBC parameters are not one 16-byte IV", ErrMalformed)
	}
	env.iv = iv
	return env, nil
}

// readKeyTrans reads one KeyTransRecipientInfo (RFC 5652 section 6.2.1)
// and reports whether it names cert: version 0 by issuer and serial number,
// version 2 by subject key identifier. It returns the contents of its
// keyEncryptionAlgorithm and its encrypted key.
func readKeyTrans(info cryptobyte.String, cert *x509.Certificate) (mine bool, alg, key cryptobyte.String, err error) {
	var ktri cryptobyte.String
	var version int64
	if !info.ReadASN1(&ktri, casn1.SEQUENCE) || !ktri.ReadASN1Integer(&version) {
		return false, nil, nil, errors.New("KeyTransRecipientInfo not DER")
	}
	switch version {
	case 0:
		var ias, issuer cryptobyte.String
		serial := new(big.Int)
		if !ktri.ReadASN1(&ias, casn1.SEQUENCE) || !ias.ReadASN1Element(&issuer, casn1.SEQUENCE) ||
			!ias.ReadASN1Integer(serial) || !ias.Empty() {
			return false, nil, nil, errors.New("issuerAndSerialNumber not DER")
		}
		mine = bytes.Equal(issuer, cert.RawIssuer) && serial.Cmp(cert.SerialNumber) == 0
	case 2:
		var keyID cryptobyte.String
		if !ktri.ReadASN1(&keyID, tag0) {
			return false, nil, nil, errors.New("version 2 without a subjectKeyIdentifier")
		}
		mine = len(cert.SubjectKeyId) > 0 && bytes.Equal(keyID, cert.SubjectKeyId)
	default:
		return false, nil, nil, fmt.Errorf("KeyTransRecipientInfo version %d, want 0 or 2", version)
	}
	if !ktri.ReadASN1(&alg, casn1.SEQUENCE) || !ktri.ReadASN1(&key, casn1.OCTET_STRING) || !ktri.Empty() {
		return false, nil, nil, errors.New("key encryption algorithm or encrypted key not DER, or other bytes after them")
	}
	return mine, alg, key, nil
}

// keyTransportOf reads the contents of a keyEncryptionAlgorithm
// AlgorithmIdentifier. It accepts rsaEncryption (PKCS #1 v1.5; parameters
// NULL, as OpenSSL writes, or absent, as pkcs7 wrote), and id-RSAES-OAEP
// only with exactly SHA-256, MGF1 with SHA-256 and the default empty label:
// what Kurier writes and OpenSSL writes when asked for SHA-256. The
// RSAES-OAEP-params defaults (SHA-1 for both) are refused, as BSI
// TR-02102-1 requires SHA-256 or better; so are other hashes, which no
// Kurier sender writes, and any label.
func keyTransportOf(alg cryptobyte.String) (keyTransport, error) {
	var oid asn1.ObjectIdentifier
	if !alg.ReadASN1ObjectIdentifier(&oid) {
		return 0, fmt.Errorf("%w: key encryption algorithm not DER", ErrMalformed)
	}
	switch {
	case oid.Equal(oidRSA):
		if !nullOrAbsent(alg) {
			return 0, fmt.Errorf("%w: rsaEncryption with parameters other than NULL", ErrMalformed)
		}
		return transportPKCS1v15, nil
	case oid.Equal(oidRSAESOAEP):
		if err := checkOAEPParams(alg); err != nil {
			return 0, fmt.Errorf("key transport RSAES-OAEP refused: %w (Kurier reads SHA-256, MGF1 with SHA-256, no label)", err)
		}
		return transportOAEPSHA256, nil
	}
	return 0, fmt.Errorf("key transport %s refused, want RSAES-OAEP or rsaEncryption", oidName(oid))
}

// checkOAEPParams checks RSAES-OAEP-params (RFC 8017 appendix A.2.1; the
// tags are explicit, and DER omits a field equal to its default).
func checkOAEPParams(params cryptobyte.String) error {
	var seq, hash, mgf cryptobyte.String
	var hasHash, hasMGF bool
	if params.Empty() {
		return errors.New("no parameters, which means SHA-1")
	}
	if !params.ReadASN1(&seq, casn1.SEQUENCE) || !params.Empty() ||
		!seq.ReadOptionalASN1(&hash, &hasHash, tag0.Constructed()) ||
		!seq.ReadOptionalASN1(&mgf, &hasMGF, tag1.Constructed()) {
		return fmt.Errorf("%w: parameters not DER", ErrMalformed)
	}
	if !seq.Empty() {
		if seq.PeekASN1Tag(tag2.Constructed()) {
			return errors.New("pSourceFunc present: a label, or the default written out (not DER)")
		}
		return fmt.Errorf("%w: bytes after the parameters", ErrMalformed)
	}
	if !hasHash {
		return errors.New("hash SHA-1 (the default)")
	}
	if err := checkSHA256(hash); err != nil {
		return fmt.Errorf("hash: %w", err)
	}
	if !hasMGF {
		return errors.New("mask generation MGF1 with SHA-1 (the default)")
	}
	mgfOID, mgfParams, ok := readAlgorithm(&mgf)
	if !ok || !mgf.Empty() {
		return fmt.Errorf("%w: maskGenFunc not DER", ErrMalformed)
	}
	if !mgfOID.Equal(oidMGF1) {
		return fmt.Errorf("mask generation %s, want MGF1", oidName(mgfOID))
	}
	if err := checkSHA256(mgfParams); err != nil {
		return fmt.Errorf("MGF1 hash: %w", err)
	}
	return nil
}

// checkSHA256 requires that s holds exactly one hash AlgorithmIdentifier,
// SHA-256 with NULL or absent parameters.
func checkSHA256(s cryptobyte.String) error {
	oid, params, ok := readAlgorithm(&s)
	if !ok || !s.Empty() || !nullOrAbsent(params) {
		return fmt.Errorf("%w: hash algorithm not DER, or with parameters other than NULL", ErrMalformed)
	}
	if !oid.Equal(oidSHA256) {
		return fmt.Errorf("%s, want SHA-256", oidName(oid))
	}
	return nil
}

// readAlgorithm reads an AlgorithmIdentifier from s: its OID, and its
// parameters as the rest of its contents (empty when absent).
func readAlgorithm(s *cryptobyte.String) (asn1.ObjectIdentifier, cryptobyte.String, bool) {
	var alg cryptobyte.String
	var oid asn1.ObjectIdentifier
	if !s.ReadASN1(&alg, casn1.SEQUENCE) || !alg.ReadASN1ObjectIdentifier(&oid) {
		return nil, nil, false
	}
	return oid, alg, true
}

// nullOrAbsent reports whether AlgorithmIdentifier parameters are absent or
// NULL, two encodings RFC 4055 section 2.1 requires readers to take as one.
func nullOrAbsent(params cryptobyte.String) bool {
	return len(params) == 0 || bytes.Equal(params, []byte{0x05, 0x00})
}

// oidName names the algorithms a refusal is likely to be about, and
// otherwise prints the OID, unless it is too long to echo.
func oidName(oid asn1.ObjectIdentifier) string {
	for _, n := range []struct {
		oid  asn1.ObjectIdentifier
		name string
	}{
		{oidSHA1, "SHA-1"},
		{oidSHA256, "SHA-256"},
		{oidSHA384, "SHA-384"},
		{oidSHA512, "SHA-512"},
		{oidDESCBC, "DES-CBC"},
		{oidDESEDE3CBC, "3DES-CBC"},
		{oidAES128GCM, "AES-128-GCM"},
		{oidAES256GCM, "AES-256-GCM"},
		{oidSignedData, "SignedData"},
		{oidEnvelopedData, "EnvelopedData"},
		{oidData, "id-data"},
		{oidECDSASHA1, "ECDSA with SHA-1"},
		{oidRSASHA1, "RSA with SHA-1"},
		{oidDSA, "DSA"},
		{oidDSASHA1, "DSA with SHA-1"},
	} {
		if oid.Equal(n.oid) {
			return n.name
		}
	}
	if len(oid) > 16 {
		return "an unknown long OID"
	}
	return oid.String()
}
