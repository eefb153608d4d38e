package cms_test

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"hash"
	"math/big"
	"strings"
	"testing"

	"github.com/digitorus/pkcs7"

	"kurier.dev/kurier/pki"
	"kurier.dev/kurier/pki/cms"
)

// The DER pieces below are built with encoding/asn1, apart from the
// cryptobyte code under test, so that each test checks one encoder against
// another.

// tlv returns the DER element of tag (one identifier octet) with the
// concatenated contents.
func tlv(tag byte, contents ...[]byte) []byte {
	der, err := asn1.Marshal(asn1.RawValue{Class: int(tag >> 6), IsCompound: tag&0x20 != 0, Tag: int(tag & 0x1f), Bytes: bytes.Join(contents, nil)})
	if err != nil {
		panic(err)
	}
	return der
}

// contents returns the contents of the DER element der.
func contents(der []byte) []byte {
	var v asn1.RawValue
	if _, err := asn1.Unmarshal(der, &v); err != nil {
		panic(err)
	}
	return v.Bytes
}

func mustDER(v any) []byte {
	der, err := asn1.Marshal(v)
	if err != nil {
		panic(err)
	}
	return der
}

var (
	oidOAEP      = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 7}
	oidMGF1      = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 8}
	oidPSpecifed = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 9}
	oidPSS       = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 10}

	null       = []byte{0x05, 0x00}
	sha1ID     = algID(pkcs7.OIDDigestAlgorithmSHA1, null)
	sha256ID   = algID(pkcs7.OIDDigestAlgorithmSHA256, null)
	sha512ID   = algID(pkcs7.OIDDigestAlgorithmSHA512, null)
	mgf1SHA1   = algID(oidMGF1, sha1ID)
	mgf1SHA256 = algID(oidMGF1, sha256ID)
	// oaepSHA256 is rSAES-OAEP-SHA256-Identifier of RFC 4055 section 4.1.
	oaepSHA256 = oaep(tlv(0xa0, sha256ID), tlv(0xa1, mgf1SHA256))
	rsaV15     = algID(pkcs7.OIDEncryptionAlgorithmRSA, null)
)

func algID(oid asn1.ObjectIdentifier, params ...[]byte) []byte {
	return tlv(0x30, append([][]byte{mustDER(oid)}, params...)...)
}

// oaep returns id-RSAES-OAEP with RSAES-OAEP-params of the given fields.
func oaep(fields ...[]byte) []byte { return algID(oidOAEP, tlv(0x30, fields...)) }

// parts is EnvelopedData for one recipient taken apart, each field DER (nil:
// left out; no ktriVersion: no KeyTransRecipientInfo), so that a test can
// change any of them; der puts them together.
type parts struct {
	cek, plaintext []byte

	outerType, ciExtra, trailing []byte // ContentInfo
	version, originator, edExtra []byte // EnvelopedData
	others                       [][]byte
	ktriVersion, rid, keyAlg     []byte // KeyTransRecipientInfo
	encKey, ktriExtra            []byte
	contentType, cipherAlg       []byte // EncryptedContentInfo
	content, eciExtra            []byte
}

// newParts seals plaintext to cert as Encrypt does, but with plaintext
// encrypted as it is: a test adds padding itself, or leaves it bad.
func newParts(t testing.TB, cert *x509.Certificate, plaintext []byte) *parts {
	t.Helper()
	p := &parts{cek: make([]byte, 32), plaintext: plaintext}
	iv := make([]byte, aes.BlockSize)
	rand.Read(p.cek)
	rand.Read(iv)
	block, err := aes.NewCipher(p.cek)
	if err != nil {
		t.Fatal(err)
	}
	ciphertext := make([]byte, len(plaintext))
	cipher.NewCBCEncrypter(block, iv).CryptBlocks(ciphertext, plaintext)
	zero := mustDER(0)
	p.outerType = mustDER(pkcs7.OIDEnvelopedData)
	p.version, p.ktriVersion = zero, zero
	p.rid = tlv(0x30, cert.RawIssuer, mustDER(cert.SerialNumber))
	p.keyAlg = oaepSHA256
	p.encKey = tlv(0x04, wrapOAEP(t, sha256.New(), cert, p.cek))
	p.contentType = mustDER(pkcs7.OIDData)
	p.cipherAlg = algID(pkcs7.OIDEncryptionAlgorithmAES256CBC, tlv(0x04, iv))
	p.content = tlv(0x80, ciphertext)
	return p
}

func (p *parts) der() []byte {
	infos := append([][]byte(nil), p.others...)
	if p.ktriVersion != nil {
		infos = append(infos, tlv(0x30, p.ktriVersion, p.rid, p.keyAlg, p.encKey, p.ktriExtra))
	}
	eci := tlv(0x30, p.contentType, p.cipherAlg, p.content, p.eciExtra)
	ed := tlv(0x30, p.version, p.originator, tlv(0x31, infos...), eci, p.edExtra)
	return append(tlv(0x30, p.outerType, tlv(0xa0, ed), p.ciExtra), p.trailing...)
}

// padded returns document with the padding RFC 5652 section 6.3 asks for.
func padded(content []byte) []byte {
	n := aes.BlockSize - len(content)%aes.BlockSize
	return append(bytes.Clone(content), bytes.Repeat([]byte{byte(n)}, n)...)
}

func wrapOAEP(t testing.TB, h hash.Hash, cert *x509.Certificate, cek []byte) []byte {
	t.Helper()
	k, err := rsa.EncryptOAEP(h, rand.Reader, cert.PublicKey.(*rsa.PublicKey), cek, nil)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func wrapV15(t testing.TB, cert *x509.Certificate, cek []byte) []byte {
	t.Helper()
	//lint:ignore SA1019 the envelopes of earlier messages are PKCS #1 v1.5
	k, err := rsa.EncryptPKCS1v15(rand.Reader, cert.PublicKey.(*rsa.PublicKey), cek)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// wrapBelow is wrapV15 for cert, wrapped again until the result is also
// smaller than the modulus of other: RSA refuses outright (a public fact,
// not a padding oracle) a ciphertext as large as its own modulus, and the
// test wants the path where a key for someone else unwraps to random bytes.
func wrapBelow(t testing.TB, cert *x509.Certificate, cek []byte, other *x509.Certificate) []byte {
	t.Helper()
	n := other.PublicKey.(*rsa.PublicKey).N
	for range 64 {
		if k := wrapV15(t, cert, cek); new(big.Int).SetBytes(k).Cmp(n) < 0 {
			return k
		}
	}
	t.Fatal("64 wrappings, each at least the other modulus")
	return nil
}

// TestEncrypt_OAEP reads what Encrypt writes with encoding/asn1: version 0
// EnvelopedData, one KeyTransRecipientInfo per recipient by issuer and
// serial, each with exactly RFC 4055's RSAES-OAEP SHA-256 identifier and
// in DER order, and AES-256-CBC id-data content.
func TestEncrypt_OAEP(t *testing.T) {
	der := encryptTo(t, fx.alice, fx.bob)
	type ktri struct {
		Version int
		RID     asn1.RawValue
		KeyAlg  asn1.RawValue
		EncKey  []byte
	}
	var ci struct {
		Type    asn1.ObjectIdentifier
		Content asn1.RawValue `asn1:"explicit,tag:0"`
	}
	var ed struct {
		Version int
		Infos   []asn1.RawValue `asn1:"set"`
		ECI     struct {
			Type   asn1.ObjectIdentifier
			Cipher struct {
				Alg asn1.ObjectIdentifier
				IV  []byte
			}
		}
	}
	if rest, err := asn1.Unmarshal(der, &ci); err != nil || len(rest) > 0 {
		t.Fatalf("ContentInfo: %v, %d bytes after", err, len(rest))
	}
	if rest, err := asn1.Unmarshal(ci.Content.Bytes, &ed); err != nil || len(rest) > 0 {
		t.Fatalf("EnvelopedData: %v, %d bytes after", err, len(rest))
	}
	if !ci.Type.Equal(pkcs7.OIDEnvelopedData) || ed.Version != 0 || !ed.ECI.Type.Equal(pkcs7.OIDData) {
		t.Errorf("content type %s, version %d, encrypted content type %s", ci.Type, ed.Version, ed.ECI.Type)
	}
	if !ed.ECI.Cipher.Alg.Equal(pkcs7.OIDEncryptionAlgorithmAES256CBC) || len(ed.ECI.Cipher.IV) != aes.BlockSize {
		t.Errorf("content cipher %s with a %d-byte IV, want AES-256-CBC", ed.ECI.Cipher.Alg, len(ed.ECI.Cipher.IV))
	}
	if len(ed.Infos) != 2 || bytes.Compare(ed.Infos[0].FullBytes, ed.Infos[1].FullBytes) > 0 {
		t.Fatalf("%d recipient infos, or not in DER order", len(ed.Infos))
	}
	seen := map[string]bool{}
	for _, raw := range ed.Infos {
		var ri ktri
		if rest, err := asn1.Unmarshal(raw.FullBytes, &ri); err != nil || len(rest) > 0 {
			t.Fatalf("KeyTransRecipientInfo: %v", err)
		}
		if ri.Version != 0 || !bytes.Equal(ri.KeyAlg.FullBytes, oaepSHA256) || len(ri.EncKey) != 384 {
			t.Errorf("version %d, key transport %x, %d-byte key; want 0, RSAES-OAEP SHA-256 %x, 384", ri.Version, ri.KeyAlg.FullBytes, len(ri.EncKey), oaepSHA256)
		}
		seen[string(ri.RID.FullBytes)] = true
	}
	for _, id := range []*pki.Identity{fx.alice, fx.bob} {
		if !seen[string(tlv(0x30, id.EncCert.RawIssuer, mustDER(id.EncCert.SerialNumber)))] {
			t.Errorf("no recipient info for %s", id.EncCert.Subject)
		}
	}
}

// TestEncrypt_sizes round-trips content around the block size, where the
// padding changes.
func TestEncrypt_sizes(t *testing.T) {
	for _, n := range []int{0, 1, 15, 16, 17, 32, 1000} {
		content := bytes.Repeat([]byte{'x'}, n)
		der, err := cms.Encrypt(content, []*x509.Certificate{fx.alice.EncCert})
		if err != nil {
			t.Fatal(err)
		}
		got, err := cms.Decrypt(der, fx.alice.EncCert, fx.alice.EncKey, 0)
		if err != nil || !bytes.Equal(got, content) {
			t.Errorf("%d bytes: got %d bytes, %v", n, len(got), err)
		}
	}
}

// TestDecrypt_legacyPKCS1v15 opens an envelope sealed the way Kurier sealed
// before RSAES-OAEP: pkcs7.Encrypt with AES-256-CBC, PKCS #1 v1.5 key
// transport (rsaEncryption without parameters).
func TestDecrypt_legacyPKCS1v15(t *testing.T) {
	der := legacyEncryptTo(t, fx.alice, fx.bob)
	if !bytes.Contains(der, algID(pkcs7.OIDEncryptionAlgorithmRSA)) {
		t.Fatal("pkcs7 no longer writes rsaEncryption without parameters: this test no longer checks the old form")
	}
	opensFor(t, der, fx.alice, fx.bob)
}

// TestHostileEnvelope changes one part of an envelope at a time: the forms
// RFC 5652 and RFC 4055 allow and Kurier or OpenSSL write open, everything
// else is refused with an error that names what is wrong, and nothing
// panics.
func TestHostileEnvelope(t *testing.T) {
	alice := fx.alice.EncCert
	pkcs1 := func(alg []byte) func(*parts) {
		return func(p *parts) { p.keyAlg, p.encKey = alg, tlv(0x04, wrapV15(t, alice, p.cek)) }
	}
	oaepWith := func(h hash.Hash, fields ...[]byte) func(*parts) {
		return func(p *parts) { p.keyAlg, p.encKey = oaep(fields...), tlv(0x04, wrapOAEP(t, h, alice, p.cek)) }
	}
	tests := []struct {
		name      string
		change    func(p *parts)
		post      func(der []byte) []byte // applied to the assembled DER
		plaintext []byte                  // nil: document, padded
		want      string                  // "": opens
		malformed bool
		// garbage: the envelope may also "open" to content that is not
		// the document. A PKCS #1 v1.5 key for someone else unwraps to a
		// random key (implicit rejection), whose CBC padding is valid by
		// chance about once in 256 tries; the signature inside is what
		// then fails, in the caller.
		garbage bool
	}{
		{name: "as built", change: func(*parts) {}},
		{name: "OAEP hash without NULL (OpenSSL's form)", change: oaepWith(sha256.New(),
			tlv(0xa0, algID(pkcs7.OIDDigestAlgorithmSHA256)), tlv(0xa1, algID(oidMGF1, algID(pkcs7.OIDDigestAlgorithmSHA256))))},
		{name: "PKCS #1 v1.5, NULL parameters (OpenSSL's form)", change: pkcs1(rsaV15)},
		{name: "PKCS #1 v1.5, no parameters (pkcs7's form)", change: pkcs1(algID(pkcs7.OIDEncryptionAlgorithmRSA))},
		{name: "encrypted content in one constructed piece (pkcs7's form)", change: func(p *parts) {
			p.content = tlv(0xa0, tlv(0x04, contents(p.content)))
		}},
		{name: "other recipient kinds first", change: func(p *parts) {
			p.others = [][]byte{tlv(0xa1, mustDER(3)), tlv(0xa4, mustDER(oidPSS))}
		}},
		{name: "another recipient first", change: func(p *parts) {
			bob := fx.bob.EncCert
			p.others = [][]byte{tlv(0x30, mustDER(0), tlv(0x30, bob.RawIssuer, mustDER(bob.SerialNumber)), oaepSHA256, tlv(0x04, wrapOAEP(t, sha256.New(), bob, p.cek)))}
		}},
		{name: "subject key identifier", change: func(p *parts) {
			if len(alice.SubjectKeyId) == 0 {
				t.Fatal("test certificate has no subject key identifier")
			}
			p.version, p.ktriVersion, p.rid = mustDER(2), mustDER(2), tlv(0x80, alice.SubjectKeyId)
		}},

		// Key transport parameters.
		{name: "OAEP with SHA-1 (the defaults)", change: oaepWith(sha1.New()), want: "hash SHA-1 (the default)"},
		{name: "OAEP without parameters", change: func(p *parts) { p.keyAlg = algID(oidOAEP) }, want: "no parameters, which means SHA-1"},
		{name: "OAEP with SHA-1, MGF1 SHA-256", change: oaepWith(sha1.New(), tlv(0xa0, sha1ID), tlv(0xa1, mgf1SHA256)), want: "hash: SHA-1, want SHA-256"},
		{name: "OAEP with SHA-256, MGF1 SHA-1", change: oaepWith(sha256.New(), tlv(0xa0, sha256ID), tlv(0xa1, mgf1SHA1)), want: "MGF1 hash: SHA-1, want SHA-256"},
		{name: "OAEP with SHA-256, MGF1 default", change: oaepWith(sha256.New(), tlv(0xa0, sha256ID)), want: "MGF1 with SHA-1 (the default)"},
		{name: "OAEP with SHA-512", change: oaepWith(sha512.New(), tlv(0xa0, sha512ID), tlv(0xa1, algID(oidMGF1, sha512ID))), want: "hash: SHA-512, want SHA-256"},
		{name: "OAEP mask generation not MGF1", change: func(p *parts) { p.keyAlg = oaep(tlv(0xa0, sha256ID), tlv(0xa1, algID(oidPSS, sha256ID))) }, want: "want MGF1"},
		{name: "OAEP label", change: func(p *parts) {
			p.keyAlg = oaep(tlv(0xa0, sha256ID), tlv(0xa1, mgf1SHA256), tlv(0xa2, algID(oidPSpecifed, tlv(0x04, []byte("label")))))
		}, want: "pSourceFunc present"},
		{name: "OAEP default label written out", change: func(p *parts) {
			p.keyAlg = oaep(tlv(0xa0, sha256ID), tlv(0xa1, mgf1SHA256), tlv(0xa2, algID(oidPSpecifed, tlv(0x04))))
		}, want: "pSourceFunc present"},
		{name: "OAEP hash parameters not NULL", change: func(p *parts) {
			p.keyAlg = oaep(tlv(0xa0, algID(pkcs7.OIDDigestAlgorithmSHA256, mustDER(1))), tlv(0xa1, mgf1SHA256))
		}, want: "parameters other than NULL", malformed: true},
		{name: "OAEP bytes after the fields", change: func(p *parts) { p.keyAlg = oaep(tlv(0xa0, sha256ID), tlv(0xa1, mgf1SHA256), mustDER(0)) }, want: "bytes after the parameters", malformed: true},
		{name: "OAEP bytes after the parameters", change: func(p *parts) {
			p.keyAlg = algID(oidOAEP, tlv(0x30, tlv(0xa0, sha256ID), tlv(0xa1, mgf1SHA256)), null)
		}, want: "parameters not DER", malformed: true},
		{name: "OAEP two hashes", change: func(p *parts) { p.keyAlg = oaep(tlv(0xa0, sha256ID, sha256ID), tlv(0xa1, mgf1SHA256)) }, want: "hash algorithm not DER", malformed: true},
		{name: "RSASSA-PSS as key transport", change: func(p *parts) { p.keyAlg = algID(oidPSS) }, want: "key transport 1.2.840.113549.1.1.10 refused"},
		{name: "PKCS #1 v1.5 with parameters", change: pkcs1(algID(pkcs7.OIDEncryptionAlgorithmRSA, mustDER(0))), want: "rsaEncryption with parameters", malformed: true},

		// Keys.
		{name: "OAEP key for another key", change: func(p *parts) { p.encKey = tlv(0x04, wrapOAEP(t, sha256.New(), fx.bob.EncCert, p.cek)) }, want: "unwrap RSAES-OAEP content-encryption key"},
		{name: "OAEP key of 16 bytes", change: func(p *parts) { p.encKey = tlv(0x04, wrapOAEP(t, sha256.New(), alice, p.cek[:16])) }, want: "content-encryption key is 16 bytes, the content cipher needs 32"},
		{name: "PKCS #1 v1.5 key for another key", change: func(p *parts) {
			p.keyAlg, p.encKey = rsaV15, tlv(0x04, wrapBelow(t, fx.bob.EncCert, p.cek, fx.alice.EncCert))
		}, want: "bad padding (wrong key", garbage: true},
		{name: "encrypted key not RSA-sized", change: func(p *parts) { p.encKey = tlv(0x04, []byte("short")) }, want: "unwrap RSAES-OAEP"},

		// Structure.
		{name: "bytes after ContentInfo", change: func(p *parts) { p.trailing = []byte{0} }, want: "bytes after it", malformed: true},
		{name: "bytes inside ContentInfo", change: func(p *parts) { p.ciExtra = null }, want: "not a DER ContentInfo", malformed: true},
		{name: "SignedData", change: func(p *parts) { p.outerType = mustDER(pkcs7.OIDSignedData) }, want: "content type SignedData, want EnvelopedData", malformed: true},
		{name: "originator info", change: func(p *parts) { p.originator = tlv(0xa0) }, want: "originator info", malformed: true},
		{name: "unprotected attributes", change: func(p *parts) { p.edExtra = tlv(0xa1, tlv(0x30)) }, want: "unprotected attributes", malformed: true},
		{name: "EnvelopedData version 7", change: func(p *parts) { p.version = mustDER(7) }, want: "EnvelopedData version 7", malformed: true},
		{name: "recipient version 1", change: func(p *parts) { p.ktriVersion = mustDER(1) }, want: "version 1, want 0 or 2", malformed: true},
		{name: "recipient version 2 with issuer and serial", change: func(p *parts) { p.ktriVersion = mustDER(2) }, want: "without a subjectKeyIdentifier", malformed: true},
		{name: "bytes after the encrypted key", change: func(p *parts) { p.ktriExtra = null }, want: "other bytes after them", malformed: true},
		{name: "encrypted key with a non-minimal length (BER)", change: func(p *parts) {
			k := contents(p.encKey) // 384 bytes: 04 82 01 80 in DER
			p.encKey = append([]byte{0x04, 0x83, 0x00, 0x01, 0x80}, k...)
		}, want: "recipient info 0: key encryption algorithm or encrypted key not DER", malformed: true},
		{name: "indefinite length (BER)", post: func(der []byte) []byte {
			header := 2 + int(der[1]&0x7f)
			return append(append([]byte{0x30, 0x80}, der[header:]...), 0, 0)
		}, want: "not a DER ContentInfo", malformed: true},
		{name: "issuer and serial of another", change: func(p *parts) {
			p.rid = tlv(0x30, alice.RawIssuer, mustDER(fx.bob.EncCert.SerialNumber))
		}, want: "no recipient info for certificate"},
		{name: "no recipients", change: func(p *parts) { p.ktriVersion = nil }, want: "no recipient info for certificate"},
		{name: "encrypted content not id-data", change: func(p *parts) { p.contentType = mustDER(pkcs7.OIDSignedData) }, want: "encrypted content type SignedData", malformed: true},
		{name: "DES", change: func(p *parts) { p.cipherAlg = algID(pkcs7.OIDEncryptionAlgorithmDESCBC, tlv(0x04, make([]byte, 8))) }, want: "content cipher DES-CBC refused"},
		{name: "AES-GCM", change: func(p *parts) { p.cipherAlg = algID(pkcs7.OIDEncryptionAlgorithmAES256GCM, tlv(0x30)) }, want: "content cipher AES-256-GCM refused"},
		{name: "IV of 8 bytes", change: func(p *parts) { p.cipherAlg = algID(pkcs7.OIDEncryptionAlgorithmAES256CBC, tlv(0x04, make([]byte, 8))) }, want: "one 16-byte IV", malformed: true},
		{name: "encrypted content in pieces (BER)", change: func(p *parts) {
			c := contents(p.content)
			p.content = tlv(0xa0, tlv(0x04, c[:16]), tlv(0x04, c[16:]))
		}, want: "encrypted content in pieces (BER)", malformed: true},
		{name: "encrypted content missing", change: func(p *parts) { p.content = nil }, want: "encrypted content missing", malformed: true},
		{name: "bytes after the encrypted content", change: func(p *parts) { p.eciExtra = null }, want: "bytes after the encrypted content", malformed: true},
		{name: "encrypted content not whole blocks", change: func(p *parts) { p.content = tlv(0x80, contents(p.content)[:19]) }, want: "19 bytes, not a multiple of the AES block", malformed: true},

		// Padding of the content (pkcs7 panicked on the first).
		{name: "padding longer than a block", plaintext: bytes.Repeat([]byte{0xff}, 16), want: "bad padding"},
		{name: "padding length zero", plaintext: make([]byte, 32), want: "bad padding"},
		{name: "padding bytes differ", plaintext: append(bytes.Repeat([]byte{'x'}, 13), 1, 2, 3), want: "bad padding"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			plaintext := tt.plaintext
			if plaintext == nil {
				plaintext = padded(document)
			}
			p := newParts(t, alice, plaintext)
			if tt.change != nil {
				tt.change(p)
			}
			der := p.der()
			if tt.post != nil {
				der = tt.post(der)
			}
			got, err := cms.Decrypt(der, alice, fx.alice.EncKey, 0)
			if tt.want == "" {
				if err != nil || !bytes.Equal(got, document) {
					t.Fatalf("Decrypt = %q, %v; want the document", got, err)
				}
				return
			}
			if tt.garbage && err == nil && !bytes.Equal(got, document) {
				return
			}
			if err == nil || !errors.Is(err, cms.ErrDecrypt) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Decrypt = %d bytes, %v; want ErrDecrypt saying %q", len(got), err, tt.want)
			}
			if errors.Is(err, cms.ErrMalformed) != tt.malformed {
				t.Errorf("errors.Is(err, ErrMalformed) = %v, want %v", !tt.malformed, tt.malformed)
			}
			t.Log(err)
		})
	}
}

// TestHostileEnvelope_truncated cuts a real envelope at every length: each
// piece is refused as malformed.
func TestHostileEnvelope_truncated(t *testing.T) {
	der := encryptTo(t, fx.alice)
	for n := range len(der) {
		if _, err := cms.Decrypt(der[:n], fx.alice.EncCert, fx.alice.EncKey, 0); !errors.Is(err, cms.ErrMalformed) {
			t.Fatalf("%d of %d bytes: %v, want ErrMalformed", n, len(der), err)
		}
	}
}
