package cms_test

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"io"
	"math/rand/v2"
	"runtime"
	"testing"

	"kurier.dev/kurier/pki"
	"kurier.dev/kurier/pki/cms"
)

// generator returns n deterministic pseudo-random bytes, made as they are
// read: a large document that is never in memory.
func generator(n int64) io.Reader {
	return io.LimitReader(rand.NewChaCha8([32]byte{'k', 'u', 'r', 'i', 'e', 'r'}), n)
}

// seal signs content as alice and encrypts it to ids with the streaming
// writers into w, as the client seals a message.
func seal(t testing.TB, w io.Writer, content io.Reader, ids ...*pki.Identity) {
	t.Helper()
	var certs []*x509.Certificate
	for _, id := range ids {
		certs = append(certs, id.EncCert)
	}
	ew, err := cms.EncryptWriter(w, certs)
	if err != nil {
		t.Fatal(err)
	}
	sw, err := cms.SignWriter(ew, signerOf(fx.alice))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(sw, content); err != nil {
		t.Fatal(err)
	}
	if err := sw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := ew.Close(); err != nil {
		t.Fatal(err)
	}
}

// open decrypts r for id and verifies the signature inside, copying the
// content (at most max bytes, in a SignedData at most 64 KiB larger) to w;
// it returns the signature's verdict.
func open(r io.Reader, id *pki.Identity, w io.Writer, max int64) (*cms.Verified, error) {
	dr, err := cms.DecryptReader(r, id.EncCert, id.EncKey, max+64<<10)
	if err != nil {
		return nil, err
	}
	p := participantPolicy()
	p.MaxSize = int(max)
	vr, err := cms.NewVerifyReader(dr, p)
	if err != nil {
		return nil, err
	}
	if _, err := io.Copy(w, vr); err != nil {
		return nil, err
	}
	return vr.Verify()
}

// TestStream seals 64 MiB that are never in memory and opens them through
// a pipe: the digest of what comes out is that of what went in, and the
// whole round trip allocates a small fraction of the content's size.
func TestStream(t *testing.T) {
	const size = 64 << 20
	want := sha256.New()
	if _, err := io.Copy(want, generator(size)); err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)

	pr, pw := io.Pipe()
	go func() {
		defer pw.Close()
		seal(t, pw, generator(size), fx.bob)
	}()
	got := sha256.New()
	v, err := open(pr, fx.bob, got, size)
	if err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	if !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
		t.Fatal("content digest differs after the round trip")
	}
	if !v.Signer.Equal(fx.alice.Cert) || v.Content != nil || len(v.Chain) != 2 {
		t.Errorf("verified %+v", v)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 4<<20 { // a few 64 KiB pieces and buffers
		t.Errorf("round trip of %d MiB allocated %d KiB: not streaming", size>>20, alloc>>10)
	} else {
		t.Logf("round trip of %d MiB allocated %d KiB", size>>20, alloc>>10)
	}
}

// TestStream_sizes round-trips content of the sizes around the AES block
// and the piece size, and checks that Verify reads SignWriter's BER too.
func TestStream_sizes(t *testing.T) {
	const piece = 64 << 10
	for _, n := range []int{1, 15, 16, 17, piece - 1, piece, piece + 1, 3*piece + 5} {
		content, err := io.ReadAll(generator(int64(n)))
		if err != nil {
			t.Fatal(err)
		}
		var sealed bytes.Buffer
		seal(t, &sealed, bytes.NewReader(content), fx.alice, fx.bob)
		for _, id := range []*pki.Identity{fx.alice, fx.bob} {
			var got bytes.Buffer
			if _, err := open(bytes.NewReader(sealed.Bytes()), id, &got, int64(n)); err != nil {
				t.Fatalf("%d bytes for %s: %v", n, id.EncCert.Subject, err)
			}
			if !bytes.Equal(got.Bytes(), content) {
				t.Fatalf("%d bytes: content differs", n)
			}
		}
		// The signed BER inside, read whole.
		var signed bytes.Buffer
		sw, err := cms.SignWriter(&signed, signerOf(fx.alice))
		if err != nil {
			t.Fatal(err)
		}
		sw.Write(content)
		if err := sw.Close(); err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(signed.Bytes(), []byte{0x30, 0x80}) {
			t.Fatal("SignWriter did not write indefinite-length BER")
		}
		p := participantPolicy()
		p.MaxSize = signed.Len()
		v, err := cms.Verify(signed.Bytes(), p)
		if err != nil {
			t.Fatalf("Verify(SignWriter's %d bytes): %v", n, err)
		}
		if !bytes.Equal(v.Content, content) {
			t.Fatalf("Verify(SignWriter's %d bytes): content differs", n)
		}
	}
}

// TestStream_readsDER checks that the readers take what the whole-slice
// functions write: Encrypt's DER, Sign's DER.
func TestStream_readsDER(t *testing.T) {
	sealed := encryptDER(t, signDER(t, document, false), fx.bob)
	var got bytes.Buffer
	if _, err := open(bytes.NewReader(sealed), fx.bob, &got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), document) {
		t.Errorf("content %q", got.Bytes())
	}
	// And the envelopes Kurier sealed before RSAES-OAEP.
	dr, err := cms.DecryptReader(bytes.NewReader(legacyEncryptTo(t, fx.alice)), fx.alice.EncCert, fx.alice.EncKey, 0)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(dr); err != nil || !bytes.Equal(b, document) {
		t.Errorf("legacy envelope: %q, %v", b, err)
	}
}

func TestSignWriter_refused(t *testing.T) {
	var out bytes.Buffer
	sw, err := cms.SignWriter(&out, signerOf(fx.alice))
	if err != nil {
		t.Fatal(err)
	}
	if err := sw.Close(); err == nil {
		t.Error("Close of empty content succeeded")
	}
	if out.Len() != 0 {
		t.Errorf("refused empty content, yet wrote %d bytes", out.Len())
	}
	if _, err := cms.SignWriter(&out, cms.Signer{Cert: fx.alice.Cert, Key: fx.bob.Key}); err == nil {
		t.Error("SignWriter with a mismatched key succeeded")
	}
	if _, err := cms.EncryptWriter(&out, []*x509.Certificate{fx.alice.Cert}); err == nil {
		t.Error("EncryptWriter to an ECDSA certificate succeeded")
	}
	if _, err := cms.EncryptWriter(&out, nil); err == nil {
		t.Error("EncryptWriter to nobody succeeded")
	}
	if _, err := cms.DecryptReader(bytes.NewReader(encryptTo(t, fx.alice)), fx.alice.EncCert, fx.bob.EncKey, 0); !errors.Is(err, cms.ErrDecrypt) {
		t.Errorf("DecryptReader with bob's key = %v, want ErrDecrypt", err)
	}
}

// BenchmarkStream seals (sign and encrypt, to one recipient) and opens
// (decrypt and verify) 16 MiB with the streaming API, and for comparison
// with the whole-slice functions; MB/s is of content, B/op shows the
// memory each holds.
func BenchmarkStream(b *testing.B) {
	const size = 16 << 20
	b.Run("seal", func(b *testing.B) {
		b.SetBytes(size)
		b.ReportAllocs()
		for b.Loop() {
			seal(b, io.Discard, generator(size), fx.bob)
		}
	})
	b.Run("open", func(b *testing.B) {
		var sealed bytes.Buffer
		seal(b, &sealed, generator(size), fx.bob)
		b.SetBytes(size)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := open(bytes.NewReader(sealed.Bytes()), fx.bob, io.Discard, size); err != nil {
				b.Fatal(err)
			}
		}
	})
	content, err := io.ReadAll(generator(size))
	if err != nil {
		b.Fatal(err)
	}
	recipients := []*x509.Certificate{fx.bob.EncCert}
	b.Run("seal whole", func(b *testing.B) {
		b.SetBytes(size)
		b.ReportAllocs()
		for b.Loop() {
			signed, err := cms.Sign(content, signerOf(fx.alice))
			if err != nil {
				b.Fatal(err)
			}
			if _, err := cms.Encrypt(signed, recipients); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("open whole", func(b *testing.B) {
		sealed := encryptDER(b, signDER(b, content, false), fx.bob)
		p := participantPolicy()
		p.MaxSize = 2 * size
		b.SetBytes(size)
		b.ReportAllocs()
		for b.Loop() {
			signed, err := cms.Decrypt(sealed, fx.bob.EncCert, fx.bob.EncKey, 2*size)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := cms.Verify(signed, p); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// indefinite re-encodes DER with every constructed element in the
// indefinite-length form, primitives as they are: BER that no encoder
// Kurier knows writes, but that BER allows.
func indefinite(t testing.TB, der []byte) []byte {
	t.Helper()
	var out []byte
	for len(der) > 0 {
		var v asn1.RawValue
		rest, err := asn1.Unmarshal(der, &v)
		if err != nil {
			t.Fatal(err)
		}
		if v.IsCompound && v.Tag < 31 {
			out = append(out, byte(v.Class<<6|0x20|v.Tag), 0x80)
			out = append(append(out, indefinite(t, v.Bytes)...), 0, 0)
		} else {
			out = append(out, v.FullBytes...)
		}
		der = rest
	}
	return out
}

// TestStream_indefiniteEverywhere reads SignedData and EnvelopedData whose
// every constructed element has an indefinite length, the certificates and
// signed attributes included: they verify and open, as their DER does.
func TestStream_indefiniteEverywhere(t *testing.T) {
	signed := indefinite(t, signDER(t, document, false))
	got, err := readSigned(signed, participantPolicy())
	if err != nil || !bytes.Equal(got, document) {
		t.Fatalf("VerifyReader = %q, %v", got, err)
	}
	if v, err := cms.Verify(signed, participantPolicy()); err != nil || !bytes.Equal(v.Content, document) {
		t.Fatalf("Verify = %v", err)
	}
	sealed := indefinite(t, encryptDER(t, document, fx.alice))
	if got, err := readEnveloped(sealed, 0); err != nil || !bytes.Equal(got, document) {
		t.Fatalf("DecryptReader = %q, %v", got, err)
	}
}
