package cms_test

import (
	"bytes"
	"io"
	"testing"
	"time"

	"kurier.dev/kurier/pki/cms"
)

// FuzzVerifyReader feeds arbitrary bytes to VerifyReader, seeded with
// SignedData in each form it reads. It may fail, never panic, and must
// agree with Verify, which reads the same forms whole: the one parser
// read two ways.
func FuzzVerifyReader(f *testing.F) {
	signed := signWriter(f, document)
	for _, seed := range [][]byte{
		signed, signDER(f, document, false), signDER(f, document, true), twoSigners(f),
		pieces(f, signed, document, false, 1, 20),
		pieces(f, signed, document, true, 7),
		{}, {0x30, 0x80, 0x00, 0x00},
	} {
		f.Add(seed)
	}
	p := participantPolicy()
	p.MaxSize = 1 << 20
	f.Fuzz(func(t *testing.T, data []byte) {
		p.At = time.Now()
		var streamErr error
		vr, err := cms.NewVerifyReader(bytes.NewReader(data), p)
		var content []byte
		if err == nil {
			content, err = io.ReadAll(vr)
		}
		if err == nil {
			var v *cms.Verified
			if v, err = vr.Verify(); err == nil && (v.Signer == nil || v.Content != nil) {
				t.Fatalf("Verify succeeded with %+v", v)
			}
		}
		streamErr = err
		whole, wholeErr := cms.Verify(data, p)
		if (streamErr == nil) != (wholeErr == nil) {
			t.Fatalf("VerifyReader: %v; Verify: %v", streamErr, wholeErr)
		}
		if wholeErr == nil && !bytes.Equal(whole.Content, content) {
			t.Fatal("VerifyReader and Verify read different content")
		}
	})
}

// FuzzDecryptReader feeds arbitrary bytes to DecryptReader, seeded with
// EnvelopedData in each form it reads. It may fail, never panic, never
// return more than max bytes, and must return what Decrypt returns from
// the DER that both read.
func FuzzDecryptReader(f *testing.F) {
	for _, seed := range [][]byte{
		encryptWriter(f, document),
		encryptWriter(f, bytes.Repeat([]byte("k"), 32)),
		encryptTo(f, fx.alice),
		encryptTo(f, fx.bob, fx.alice),
		legacyEncryptTo(f, fx.alice),
		{}, {0x30, 0x80, 0x00, 0x00},
	} {
		f.Add(seed)
	}
	const max = 4 << 10
	oaep := []byte{0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x07}
	rsaV15 := []byte{0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01}
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := readEnveloped(data, max)
		if len(got) > max {
			t.Fatalf("returned %d bytes, max %d", len(got), max)
		}
		// PKCS #1 v1.5 unwraps a bad key to a random one, which differs
		// between the two calls: compare only what RSAES-OAEP transports.
		if !bytes.Contains(data, oaep) || bytes.Contains(data, rsaV15) {
			return
		}
		want, wantErr := cms.Decrypt(data, fx.alice.EncCert, fx.alice.EncKey, max+64)
		if wantErr == nil && len(want) <= max && (err != nil || !bytes.Equal(got, want)) {
			t.Fatalf("Decrypt read %d bytes, DecryptReader %d: %v", len(want), len(got), err)
		}
	})
}
