package cms_test

import (
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
	f.Add([]byte{})
	f.Add([]byte{0x30, 0x80, 0x00, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
		cms.Decrypt(data, fx.alice.EncCert, fx.alice.EncKey, 0)
	})
}
