package client_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kurier.dev/kurier/client"
	"kurier.dev/kurier/evidence/audit"
	"kurier.dev/kurier/evidence/bundle"
)

// TestClient_ExportContent: the recipient exports a bundle with the
// originals it kept at fetch, and the sender one with its documents
// signed again; each verifies offline, every document checked against
// the envelope's digests. Content of another message, or documents other
// than those sent, is refused with ErrContentNotOfMessage and no bundle.
func TestClient_ExportContent(t *testing.T) {
	ctx := ctxT(t)
	ag, ct := dial(t, agency), dial(t, court)
	docs := []client.Document{{Name: "klage.pdf", Data: []byte("%PDF-1.7 Klage")}, {Name: "anlage.txt", Data: []byte("Anlage K1")}}
	id := send(t, ag, docs...)
	other := send(t, ag, client.Document{Name: "klage.pdf", Data: []byte("%PDF-1.7 Klagx")}, client.Document{Name: "anlage.txt", Data: []byte("Anlage K1")})
	base := t.TempDir()
	for _, m := range []string{id, other} {
		if _, err := ct.FetchWith(ctx, m, client.FetchOptions{Dir: base, PerMessage: true, KeepSealed: true}); err != nil {
			t.Fatalf("FetchWith %s: %v", m, err)
		}
	}
	dir := filepath.Join(base, id)

	checkContent := func(t *testing.T, b *bundle.Bundle, r *audit.Report, sealed bool) {
		t.Helper()
		if !r.OK() || b == nil || b.Signed == nil || (b.Sealed != nil) != sealed {
			t.Fatalf("report OK %v, bundle %v; failed: %+v", r.OK(), b != nil, r.Failed())
		}
		for _, d := range r.Documents {
			if d.Content != audit.Pass || d.SHA256 == "" {
				t.Errorf("document %+v: want its digest and its content checked", d)
			}
		}
		var buf bytes.Buffer
		if err := b.Write(&buf, time.Now()); err != nil {
			t.Fatalf("Write: %v", err)
		}
		if r := audit.Verify("bundle.zip", buf.Bytes(), audit.Options{Roots: agency.Roots}); !r.OK() || !hasCheck(r, audit.CheckDocument, audit.Pass) {
			t.Fatalf("offline report not OK: %+v", r.Failed())
		}
	}

	t.Run("recipient, the fetch folder", func(t *testing.T) {
		signed, sealed, err := client.LoadContent(dir)
		if err != nil || signed == nil || sealed == nil {
			t.Fatalf("LoadContent(%s): %v, %d and %d bytes", dir, err, len(signed), len(sealed))
		}
		b, r, err := ct.ExportWith(ctx, id, client.ExportOptions{Signed: signed, Sealed: sealed})
		if err != nil {
			t.Fatalf("ExportWith: %v", err)
		}
		checkContent(t, b, r, true)
		if !hasCheck(r, audit.CheckSealedPayload, audit.Pass) {
			t.Error("the payload as delivered was not checked")
		}
	})
	t.Run("recipient, the signed original alone", func(t *testing.T) {
		signed, sealed, err := client.LoadContent(filepath.Join(dir, client.SignedFile))
		if err != nil || sealed != nil {
			t.Fatalf("LoadContent: %v, %d bytes sealed", err, len(sealed))
		}
		b, r, err := ct.ExportWith(ctx, id, client.ExportOptions{Signed: signed})
		if err != nil {
			t.Fatalf("ExportWith: %v", err)
		}
		checkContent(t, b, r, false)
	})
	t.Run("sender, its documents signed again", func(t *testing.T) {
		signed, err := ag.SignOriginal(docs)
		if err != nil {
			t.Fatal(err)
		}
		b, r, err := ag.ExportWith(ctx, id, client.ExportOptions{Signed: signed})
		if err != nil {
			t.Fatalf("ExportWith: %v", err)
		}
		checkContent(t, b, r, false)
	})

	// Each refused, the error naming the part that failed.
	what := map[string]string{
		"another message's originals":        "the documents are not those the envelope lists, and the payload is not the one delivered",
		"another message's payload":          "the content does not verify as the message's: the payload is not the one delivered",
		"a document other than the one sent": "the content does not verify as the message's: the documents are not those the envelope lists",
		"documents signed by the recipient":  "the content does not verify as the message's: the signature over the documents does not hold",
	}
	refused := map[string]func(t *testing.T) (*client.Client, client.ExportOptions){
		"another message's originals": func(t *testing.T) (*client.Client, client.ExportOptions) {
			signed, sealed, err := client.LoadContent(filepath.Join(base, other))
			if err != nil {
				t.Fatal(err)
			}
			return ct, client.ExportOptions{Signed: signed, Sealed: sealed}
		},
		"another message's payload": func(t *testing.T) (*client.Client, client.ExportOptions) {
			signed, _, err := client.LoadContent(dir)
			if err != nil {
				t.Fatal(err)
			}
			_, sealed, err := client.LoadContent(filepath.Join(base, other))
			if err != nil {
				t.Fatal(err)
			}
			return ct, client.ExportOptions{Signed: signed, Sealed: sealed}
		},
		"a document other than the one sent": func(t *testing.T) (*client.Client, client.ExportOptions) {
			signed, err := ag.SignOriginal([]client.Document{docs[0], {Name: "anlage.txt", Data: []byte("Anlage K2")}})
			if err != nil {
				t.Fatal(err)
			}
			return ag, client.ExportOptions{Signed: signed}
		},
		"documents signed by the recipient": func(t *testing.T) (*client.Client, client.ExportOptions) {
			signed, err := ct.SignOriginal(docs)
			if err != nil {
				t.Fatal(err)
			}
			return ct, client.ExportOptions{Signed: signed}
		},
	}
	for name, mk := range refused {
		t.Run(name, func(t *testing.T) {
			c, o := mk(t)
			b, r, err := c.ExportWith(ctx, id, o)
			if !errors.Is(err, client.ErrContentNotOfMessage) || b != nil || r == nil {
				t.Fatalf("ExportWith = bundle %v, report %v, %v; want ErrContentNotOfMessage, no bundle", b != nil, r != nil, err)
			}
			if !strings.Contains(err.Error(), "content/") {
				t.Errorf("error %q does not name the content file at fault", err)
			}
			if !strings.Contains(err.Error(), what[name]) {
				t.Errorf("error %q does not say %q", err, what[name])
			}
		})
	}

	t.Run("payload without the signed original", func(t *testing.T) {
		_, sealed, _ := client.LoadContent(dir)
		if _, _, err := ct.ExportWith(ctx, id, client.ExportOptions{Sealed: sealed}); err == nil || !strings.Contains(err.Error(), client.SignedFile) {
			t.Fatalf("ExportWith = %v, want it refused naming %s", err, client.SignedFile)
		}
	})
	t.Run("a folder without the signed original", func(t *testing.T) {
		empty := t.TempDir()
		if err := os.WriteFile(filepath.Join(empty, client.SealedFile), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, _, err := client.LoadContent(empty); err == nil || !strings.Contains(err.Error(), client.SignedFile) {
			t.Fatalf("LoadContent = %v, want it to name the missing %s", err, client.SignedFile)
		}
	})
}
