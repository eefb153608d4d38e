package cms_test

import (
	"bytes"
	"crypto/sha1"
	"strings"
	"testing"
	"time"

	"kurier.dev/kurier/pki/cms"
)

// FuzzVerify feeds arbitrary bytes to every function that parses SignedData:
// they may fail, never panic.
func FuzzVerify(f *testing.F) {
	signed, err := cms.Sign(document, signerOf(fx.alice))
	if err != nil {
		f.Fatal(err)
	}
	detached, err := cms.SignDetached(document, signerOf(fx.alice))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(signed)
	f.Add(detached)
	f.Add(twoSigners(f))
	f.Add(encryptTo(f, fx.alice))
	f.Add([]byte{})
	f.Add([]byte{0x30, 0x80, 0x00, 0x00})
	p := participantPolicy()
	f.Fuzz(func(t *testing.T, data []byte) {
		p.At = time.Now()
		if v, err := cms.Verify(data, p); err == nil && v.Signer == nil {
			t.Fatal("Verify succeeded without a signer")
		}
		cms.VerifyDetached(data, document, p)
		cms.ParseSigned(data)
	})
}

// FuzzDecrypt feeds arbitrary bytes to Decrypt: it may fail, never panic.
func FuzzDecrypt(f *testing.F) {
	f.Add(encryptTo(f, fx.alice))
	f.Add(encryptTo(f, fx.bob, fx.alice))
	f.Add(legacyEncryptTo(f, fx.alice))
	f.Add([]byte{})
	f.Add([]byte{0x30, 0x80, 0x00, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
		cms.Decrypt(data, fx.alice.EncCert, fx.alice.EncKey, 0)
	})
}

// FuzzParseEnveloped feeds arbitrary bytes to the EnvelopedData parser,
// seeded with real envelopes (OAEP as Kurier seals, PKCS #1 v1.5 as pkcs7
// sealed, hand-built variants), and the same bytes, less the first two
// (a SEQUENCE header), to the key transport parser. Neither may panic;
// what the envelope parser accepts must keep its invariants, and must stop
// being accepted with a byte more or a byte less.
func FuzzParseEnveloped(f *testing.F) {
	sha1OAEP := newParts(f, fx.alice.EncCert, padded(document))
	sha1OAEP.keyAlg, sha1OAEP.encKey = oaep(), tlv(0x04, wrapOAEP(f, sha1.New(), fx.alice.EncCert, sha1OAEP.cek))
	keyID := newParts(f, fx.alice.EncCert, padded(document))
	keyID.version, keyID.ktriVersion, keyID.rid = mustDER(2), mustDER(2), tlv(0x80, fx.alice.EncCert.SubjectKeyId)
	for _, seed := range [][]byte{
		encryptTo(f, fx.alice),
		encryptTo(f, fx.bob, fx.alice),
		legacyEncryptTo(f, fx.alice),
		newParts(f, fx.alice.EncCert, padded(document)).der(),
		sha1OAEP.der(),
		keyID.der(),
		oaepSHA256, rsaV15, oaep(tlv(0xa0, sha256ID)),
		{}, {0x30, 0x80, 0x00, 0x00},
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) >= 2 {
			cms.KeyTransportOf(data[2:])
		}
		err := cms.ParseEnveloped(data, fx.alice.EncCert)
		if err != nil {
			if strings.HasPrefix(err.Error(), "invariant") {
				t.Fatal(err)
			}
			return
		}
		if cms.ParseEnveloped(append(bytes.Clone(data), 0), fx.alice.EncCert) == nil {
			t.Fatal("accepted with a byte appended")
		}
		if cms.ParseEnveloped(data[:len(data)-1], fx.alice.EncCert) == nil {
			t.Fatal("accepted with the last byte cut")
		}
	})
}
