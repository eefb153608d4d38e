package cms_test

import (
	"bytes"
	"crypto/x509"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"

	"kurier.dev/kurier/pki"
	"kurier.dev/kurier/pki/cms"
)

// signDER returns Sign's (detached: SignDetached's) DER of content,
// signed by alice.
func signDER(t testing.TB, content []byte, detached bool) []byte {
	t.Helper()
	sign := cms.Sign
	if detached {
		sign = cms.SignDetached
	}
	der, err := sign(content, signerOf(fx.alice))
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// encryptDER returns Encrypt's DER of content, to id.
func encryptDER(t testing.TB, content []byte, id *pki.Identity) []byte {
	t.Helper()
	der, err := cms.Encrypt(content, []*x509.Certificate{id.EncCert})
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// signWriter returns what SignWriter writes for content, signed by alice.
func signWriter(t testing.TB, content []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	sw, err := cms.SignWriter(&out, signerOf(fx.alice))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sw.Write(content); err != nil {
		t.Fatal(err)
	}
	if err := sw.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// encryptWriter returns what EncryptWriter writes for content, to alice.
func encryptWriter(t testing.TB, content []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	ew, err := cms.EncryptWriter(&out, []*x509.Certificate{fx.alice.EncCert})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ew.Write(content); err != nil {
		t.Fatal(err)
	}
	if err := ew.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// pieces splits the one content piece of a SignWriter output of content
// (under 128 bytes) into pieces of the given sizes, nested one level
// deeper where nested: the same SignedData in another BER form, which
// still verifies.
func pieces(t testing.TB, signed, content []byte, nested bool, sizes ...int) []byte {
	t.Helper()
	piece := append([]byte{0x04, byte(len(content))}, content...)
	i := bytes.Index(signed, piece)
	if i < 0 || len(content) >= 0x80 {
		t.Fatal("content piece not found")
	}
	var out []byte
	out = append(out, signed[:i]...)
	if nested {
		out = append(out, 0x24, 0x80)
	}
	rest := content
	for _, n := range sizes {
		out = append(append(out, 0x04, byte(n)), rest[:n]...)
		rest = rest[n:]
	}
	out = append(append(out, 0x04, byte(len(rest))), rest...)
	if nested {
		out = append(out, 0, 0)
	}
	return append(out, signed[i+len(piece):]...)
}

// readSigned runs r through a VerifyReader to the end and Verify.
func readSigned(data []byte, p cms.Policy) ([]byte, error) {
	content, _, err := verifyStream(bytes.NewReader(data), p)
	return content, err
}

// readEnveloped runs data through a DecryptReader for alice, to the end.
func readEnveloped(data []byte, max int64) ([]byte, error) {
	dr, err := cms.DecryptReader(bytes.NewReader(data), fx.alice.EncCert, fx.alice.EncKey, max)
	if err != nil {
		return nil, err
	}
	return io.ReadAll(dr)
}

func TestStream_pieces(t *testing.T) {
	signed := signWriter(t, document)
	for name, data := range map[string][]byte{
		"three pieces":        pieces(t, signed, document, false, 1, 20),
		"empty pieces":        pieces(t, signed, document, false, 0, 0, 5),
		"nested pieces":       pieces(t, signed, document, true, 7),
		"whole, as SignWrote": signed,
	} {
		t.Run(name, func(t *testing.T) {
			got, err := readSigned(data, participantPolicy())
			if err != nil || !bytes.Equal(got, document) {
				t.Fatalf("VerifyReader = %q, %v", got, err)
			}
			if v, err := cms.Verify(data, participantPolicy()); err != nil || !bytes.Equal(v.Content, document) {
				t.Fatalf("Verify = %v", err)
			}
		})
	}
}

// TestHostileStreamTruncated cuts each form at every byte: every prefix is
// an error wrapping ErrMalformed, never a clean end of the content.
func TestHostileStreamTruncated(t *testing.T) {
	signedDER := signDER(t, document, false)
	for name, data := range map[string][]byte{
		"SignWriter": signWriter(t, document),
		"Sign (DER)": signedDER,
		"in pieces":  pieces(t, signWriter(t, document), document, true, 3, 9),
	} {
		t.Run("signed, "+name, func(t *testing.T) {
			for i := range len(data) {
				if _, err := readSigned(data[:i], participantPolicy()); !errors.Is(err, cms.ErrMalformed) {
					t.Fatalf("cut at %d of %d: %v, want ErrMalformed", i, len(data), err)
				}
				if _, err := cms.Verify(data[:i], participantPolicy()); err == nil {
					t.Fatalf("Verify accepted the cut at %d", i)
				}
			}
		})
	}
	for name, data := range map[string][]byte{
		"EncryptWriter":  encryptWriter(t, document),
		"Encrypt (DER)":  encryptTo(t, fx.alice),
		"legacy (pkcs7)": legacyEncryptTo(t, fx.alice),
	} {
		t.Run("enveloped, "+name, func(t *testing.T) {
			for i := range len(data) {
				if got, err := readEnveloped(data[:i], 0); !errors.Is(err, cms.ErrMalformed) || !errors.Is(err, cms.ErrDecrypt) {
					t.Fatalf("cut at %d of %d: %d bytes, %v; want ErrDecrypt and ErrMalformed", i, len(data), len(got), err)
				}
			}
		})
	}
}

func TestHostileStreamPadding(t *testing.T) {
	content := bytes.Repeat([]byte("k"), 32) // so the padding is a whole block of 16s
	good := encryptWriter(t, content)
	if got, err := readEnveloped(good, 0); err != nil || !bytes.Equal(got, content) {
		t.Fatalf("intact envelope: %q, %v", got, err)
	}
	// CBC: a bit flipped in one ciphertext block flips the same bit of the
	// next plaintext block. The last block is followed by five
	// end-of-contents octets.
	bad := bytes.Clone(good)
	bad[len(bad)-10-16-1] ^= 0x01 // the padding becomes 16 × 0x10, then 0x11
	got, err := readEnveloped(bad, 0)
	if !errors.Is(err, cms.ErrMalformed) || !strings.Contains(err.Error(), "bad padding") {
		t.Fatalf("bad padding: %v, want ErrMalformed saying so", err)
	}
	if len(got) > len(content) {
		t.Errorf("returned %d bytes of %d", len(got), len(content))
	}
}

// TestHostileStreamNesting nests constructed elements past the bound:
// refused, at the outermost structure and inside the content.
func TestHostileStreamNesting(t *testing.T) {
	deep := bytes.Repeat([]byte{0x24, 0x80}, 40)
	signed := signWriter(t, document)
	head := signed[:bytes.Index(signed, []byte{0x24, 0x80})]
	env := encryptWriter(t, bytes.Repeat([]byte("k"), 32))
	envHead := env[:len(env)-10-48-2] // one piece of 48 bytes, five end-of-contents
	// After the content piece, three end-of-contents, then the certificates.
	certs := signed[:bytes.Index(signed, document)+len(document)+6]
	deepCerts := slices.Concat(certs, []byte{0xa0, 0x80}, bytes.Repeat([]byte{0x30, 0x80}, 40))
	for name, tt := range map[string]struct {
		data []byte
		read func([]byte) error
	}{
		"certificates, VerifyReader": {deepCerts, func(b []byte) error { _, err := readSigned(b, participantPolicy()); return err }},
		"certificates, Verify":       {deepCerts, func(b []byte) error { _, err := cms.Verify(b, participantPolicy()); return err }},
		"content, VerifyReader":      {slices.Concat(head, deep), func(b []byte) error { _, err := readSigned(b, participantPolicy()); return err }},
		"content, Verify":            {slices.Concat(head, deep), func(b []byte) error { _, err := cms.Verify(b, participantPolicy()); return err }},
		"content, DecryptReader":     {slices.Concat(envHead, deep), func(b []byte) error { _, err := readEnveloped(b, 0); return err }},
	} {
		t.Run(name, func(t *testing.T) {
			if err := tt.read(tt.data); !errors.Is(err, cms.ErrMalformed) || !strings.Contains(err.Error(), "nested") {
				t.Fatalf("%v, want ErrMalformed saying nested", err)
			}
		})
	}
}

// TestHostileStreamLengths gives lengths that do not fit and other broken
// framing: each an error wrapping ErrMalformed.
func TestHostileStreamLengths(t *testing.T) {
	signed := signWriter(t, document)
	head := signed[:bytes.Index(signed, []byte{0x24, 0x80})+2]
	oid := []byte{0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02} // signedData
	for name, data := range map[string][]byte{
		"beyond the input":       slices.Concat([]byte{0x30, 0x84, 0x00, 0x10, 0x00, 0x00}, oid),
		"beyond the outer":       slices.Concat([]byte{0x30, 0x0d}, oid, []byte{0xa0, 0x10, 0x30, 0x00}),
		"length of 9 octets":     {0x30, 0x89, 1, 2, 3, 4, 5, 6, 7, 8, 9},
		"reserved length":        {0x30, 0xff},
		"indefinite primitive":   slices.Concat([]byte{0x30, 0x80}, []byte{0x06, 0x80}),
		"end-of-contents inside": slices.Concat([]byte{0x30, 0x04}, []byte{0, 0, 0, 0}),
		"piece of another type":  slices.Concat(head, []byte{0x02, 0x01, 0x00}),
		"piece beyond the input": slices.Concat(head, []byte{0x04, 0x84, 0x7f, 0xff, 0xff, 0xff}, document),
		"piece beyond the outer": slices.Concat(signed[:bytes.Index(signed, []byte{0x24, 0x80})], []byte{0x24, 0x03, 0x04, 0x05, 'k'}),
		"empty":                  {},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := readSigned(data, participantPolicy()); !errors.Is(err, cms.ErrMalformed) {
				t.Errorf("VerifyReader: %v, want ErrMalformed", err)
			}
			if _, err := cms.Verify(data, participantPolicy()); !errors.Is(err, cms.ErrMalformed) {
				t.Errorf("Verify: %v, want ErrMalformed", err)
			}
		})
	}
}

func TestHostileStreamTooLarge(t *testing.T) {
	content := bytes.Repeat([]byte("k"), 100)
	signed := signWriter(t, content)
	p := participantPolicy()
	p.MaxSize = len(content) - 1
	if _, err := readSigned(signed, p); !errors.Is(err, cms.ErrTooLarge) {
		t.Errorf("VerifyReader over MaxSize: %v, want ErrTooLarge", err)
	}
	// DER declares the length up front: refused before it is read.
	if _, err := cms.NewVerifyReader(bytes.NewReader(signDER(t, content, false)), p); !errors.Is(err, cms.ErrTooLarge) {
		t.Errorf("NewVerifyReader of DER over MaxSize: %v, want ErrTooLarge", err)
	}
	p.MaxSize = len(content)
	if _, err := readSigned(signed, p); err != nil {
		t.Errorf("VerifyReader at MaxSize: %v", err)
	}
	// The parts around the content are held whole, and capped: also when
	// they are many empty elements, each two bytes.
	certs := signed[:bytes.Index(signed, content)+len(content)+6] // after three end-of-contents
	many := slices.Concat(certs, []byte{0xa0, 0x80}, bytes.Repeat([]byte{0x30, 0x00}, 600_000))
	p.MaxSize = 2 << 20
	if _, err := readSigned(many, p); !errors.Is(err, cms.ErrTooLarge) {
		t.Errorf("VerifyReader of 600000 empty certificates: %v, want ErrTooLarge", err)
	}
	if _, err := cms.Verify(many, p); !errors.Is(err, cms.ErrTooLarge) {
		t.Errorf("Verify of 600000 empty certificates: %v, want ErrTooLarge", err)
	}
	for name, env := range map[string][]byte{"EncryptWriter": encryptWriter(t, content), "Encrypt (DER)": encryptDER(t, content, fx.alice)} {
		got, err := readEnveloped(env, int64(len(content)-1))
		if !errors.Is(err, cms.ErrTooLarge) {
			t.Errorf("%s: DecryptReader over max: %v, want ErrTooLarge", name, err)
		}
		if len(got) > len(content)-1 {
			t.Errorf("%s: DecryptReader returned %d bytes, more than max", name, len(got))
		}
		if got, err := readEnveloped(env, int64(len(content))); err != nil || !bytes.Equal(got, content) {
			t.Errorf("%s: DecryptReader at max: %v", name, err)
		}
	}
}

func TestHostileStreamTrailing(t *testing.T) {
	signedDER := signDER(t, document, false)
	for name, data := range map[string][]byte{"SignWriter": signWriter(t, document), "Sign (DER)": signedDER} {
		if _, err := readSigned(append(bytes.Clone(data), 0), participantPolicy()); !errors.Is(err, cms.ErrMalformed) {
			t.Errorf("%s and a byte: VerifyReader %v, want ErrMalformed", name, err)
		}
	}
	for name, data := range map[string][]byte{"EncryptWriter": encryptWriter(t, document), "Encrypt (DER)": encryptTo(t, fx.alice)} {
		if _, err := readEnveloped(append(bytes.Clone(data), 0), 0); !errors.Is(err, cms.ErrMalformed) {
			t.Errorf("%s and a byte: DecryptReader %v, want ErrMalformed", name, err)
		}
	}
}

// TestHostileStreamSigned gives VerifyReader what Verify refuses: the same
// refusals.
func TestHostileStreamSigned(t *testing.T) {
	detached := signDER(t, document, true)
	foreign, err := cms.Sign(document, signerOf(fx.foreign))
	if err != nil {
		t.Fatal(err)
	}
	tampered := signWriter(t, document)
	tampered[bytes.Index(tampered, []byte("Delivery"))] = 'd'
	for name, tt := range map[string]struct {
		data []byte
		want error
	}{
		"two signers":       {twoSigners(t), cms.ErrMalformed},
		"detached":          {detached, cms.ErrMalformed},
		"tampered content":  {tampered, cms.ErrSignature},
		"sha1":              {signSHA1(t), cms.ErrSignature},
		"foreign CA":        {foreign, cms.ErrUntrusted},
		"enveloped, signed": {encryptTo(t, fx.alice), cms.ErrNoSigner},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := readSigned(tt.data, participantPolicy()); !errors.Is(err, tt.want) {
				t.Fatalf("%v, want %v", err, tt.want)
			}
		})
	}
}
