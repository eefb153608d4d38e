package tlog_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/mod/sumdb/note"

	"kurier.dev/kurier/tlog"
)

var origin = tlog.Origin("stadt.example")

func testRoot(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

func TestOrigin(t *testing.T) {
	if got, want := tlog.Origin("amtsgericht.example"), "amtsgericht.example/kurier-log"; got != want {
		t.Errorf("Origin = %q, want %q", got, want)
	}
}

func TestCheckpoint_Marshal(t *testing.T) {
	c := tlog.Checkpoint{Origin: "example.com/behind-the-sofa", Size: 20852163, Root: mustB64(t, "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=")}
	want := "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
	if got := string(c.Marshal()); got != want {
		t.Errorf("Marshal = %q, want %q", got, want)
	}
	got, err := tlog.ParseCheckpoint([]byte(want))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(c, got); diff != "" {
		t.Errorf("ParseCheckpoint (-want +got):\n%s", diff)
	}
	empty := tlog.Checkpoint{Origin: origin, Size: 0, Root: tlog.EmptyRoot()}
	got, err = tlog.ParseCheckpoint(empty.Marshal())
	if err != nil || got.Size != 0 {
		t.Errorf("ParseCheckpoint(empty tree) = %v, %v", got, err)
	}
}

func mustB64(t *testing.T, s string) []byte {
	t.Helper()
	c, err := tlog.ParseCheckpoint([]byte("o\n1\n" + s + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	return c.Root
}

func TestParseCheckpoint_Malformed(t *testing.T) {
	root := "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I="
	tests := map[string]string{
		"empty":                  "",
		"no final newline":       "o\n1\n" + root,
		"two lines":              "o\n1\n",
		"extension line":         "o\n1\n" + root + "\next\n",
		"empty origin":           "\n1\n" + root + "\n",
		"control in origin":      "o\tx\n1\n" + root + "\n",
		"not UTF-8":              "o\xff\n1\n" + root + "\n",
		"empty size":             "o\n\n" + root + "\n",
		"leading zero":           "o\n01\n" + root + "\n",
		"signed size":            "o\n+1\n" + root + "\n",
		"negative size":          "o\n-1\n" + root + "\n",
		"hex size":               "o\n0x1\n" + root + "\n",
		"size overflow":          "o\n18446744073709551616\n" + root + "\n",
		"space after size":       "o\n1 \n" + root + "\n",
		"short root":             "o\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxqw==\n",
		"unpadded root":          "o\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I\n",
		"URL base64 root":        "o\n1\nCsUYapGGPo4dkMgIAUqom_Xajj7h2fB2MPA3j2jxq2I=\n",
		"non-canonical root":     "o\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2J=\n",
		"CRLF":                   "o\r\n1\r\n" + root + "\r\n",
		"larger than the limit":  strings.Repeat("o", tlog.MaxCheckpointSize) + "\n1\n" + root + "\n",
		"blank line at the end":  "o\n1\n" + root + "\n\n",
		"blank line in the body": "o\n\n1\n" + root + "\n",
	}
	for name, body := range tests {
		t.Run(name, func(t *testing.T) {
			if c, err := tlog.ParseCheckpoint([]byte(body)); !errors.Is(err, tlog.ErrMalformed) {
				t.Errorf("ParseCheckpoint = %+v, %v; want ErrMalformed", c, err)
			}
		})
	}
	if _, err := tlog.ParseCheckpoint([]byte("o\n18446744073709551615\n" + root + "\n")); err != nil {
		t.Errorf("ParseCheckpoint(largest size): %v", err)
	}
}

func TestSignOpen(t *testing.T) {
	skey, vkey, err := tlog.GenerateKey(origin)
	if err != nil {
		t.Fatal(err)
	}
	c := tlog.Checkpoint{Origin: origin, Size: 1234, Root: testRoot("a")}
	signed, err := tlog.Sign(c, skey)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(signed, c.Marshal()) || !bytes.Contains(signed, []byte("\n\n— "+origin+" ")) {
		t.Errorf("signed checkpoint is not a signed note of the body:\n%s", signed)
	}
	got, err := tlog.Open(signed, vkey)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if diff := cmp.Diff(c, got); diff != "" {
		t.Errorf("Open (-want +got):\n%s", diff)
	}

	t.Run("cosigned", func(t *testing.T) {
		// A further signature (a witness's) is ignored.
		wskey, _, err := note.GenerateKey(rand.Reader, "witness.example")
		if err != nil {
			t.Fatal(err)
		}
		ws, err := note.NewSigner(wskey)
		if err != nil {
			t.Fatal(err)
		}
		n, err := note.Open(signed, note.VerifierList(mustVerifier(t, vkey)))
		if err != nil {
			t.Fatal(err)
		}
		cosigned, err := note.Sign(n, ws)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := tlog.Open(cosigned, vkey); err != nil || got.Size != c.Size {
			t.Errorf("Open(cosigned) = %v, %v", got, err)
		}
	})

	otherSkey, otherVkey, err := tlog.GenerateKey(origin) // same name, another key
	if err != nil {
		t.Fatal(err)
	}
	byOther, err := tlog.Sign(c, otherSkey)
	if err != nil {
		t.Fatal(err)
	}
	_, foreignVkey, err := tlog.GenerateKey(tlog.Origin("kreis-soest.example"))
	if err != nil {
		t.Fatal(err)
	}
	// A key named after another origin that signs this body anyway.
	wrongOriginSkey, wrongOriginVkey, err := tlog.GenerateKey(tlog.Origin("kreis-soest.example"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := note.NewSigner(wrongOriginSkey)
	if err != nil {
		t.Fatal(err)
	}
	wrongOrigin, err := note.Sign(&note.Note{Text: string(c.Marshal())}, s)
	if err != nil {
		t.Fatal(err)
	}
	tampered := bytes.Replace(signed, []byte("\n1234\n"), []byte("\n1235\n"), 1)
	// A signature that is valid but over other text: swap the signature line of another checkpoint in.
	other, err := tlog.Sign(tlog.Checkpoint{Origin: origin, Size: 1, Root: testRoot("b")}, skey)
	if err != nil {
		t.Fatal(err)
	}
	swapped := append(c.Marshal(), other[bytes.Index(other, []byte("\n\n"))+1:]...)

	tests := []struct {
		name   string
		signed []byte
		vkey   string
		want   error
	}{
		{"another key of the same name", signed, otherVkey, tlog.ErrSignature},
		{"signed by another key", byOther, vkey, tlog.ErrSignature},
		{"another log's key", signed, foreignVkey, tlog.ErrSignature},
		{"tampered body", tampered, vkey, tlog.ErrSignature},
		{"signature of another checkpoint", swapped, vkey, tlog.ErrSignature},
		{"origin is not the key's name", wrongOrigin, wrongOriginVkey, tlog.ErrSignature},
		{"no signature", c.Marshal(), vkey, tlog.ErrMalformed},
		{"body only, blank line", append(c.Marshal(), '\n'), vkey, tlog.ErrMalformed},
		{"too large", append(bytes.Repeat([]byte("x"), tlog.MaxCheckpointSize), signed...), vkey, tlog.ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, err := tlog.Open(tt.signed, tt.vkey); !errors.Is(err, tt.want) {
				t.Errorf("Open = %+v, %v; want %v", got, err, tt.want)
			}
		})
	}

	t.Run("body with an extension line", func(t *testing.T) {
		s, err := note.NewSigner(skey)
		if err != nil {
			t.Fatal(err)
		}
		ext, err := note.Sign(&note.Note{Text: string(c.Marshal()) + "extension\n"}, s)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tlog.Open(ext, vkey); !errors.Is(err, tlog.ErrMalformed) {
			t.Errorf("Open: err %v, want ErrMalformed", err)
		}
	})

	t.Run("bad verifier key", func(t *testing.T) {
		if _, err := tlog.Open(signed, "nonsense"); err == nil {
			t.Error("Open with a malformed verifier key succeeded")
		}
	})

	t.Run("sign refuses", func(t *testing.T) {
		for name, c := range map[string]tlog.Checkpoint{
			"another origin": {Origin: tlog.Origin("kreis-soest.example"), Size: 1, Root: testRoot("a")},
			"short root":     {Origin: origin, Size: 1, Root: testRoot("a")[:31]},
			"empty origin":   {Size: 1, Root: testRoot("a")},
		} {
			if _, err := tlog.Sign(c, skey); err == nil {
				t.Errorf("Sign(%s) succeeded", name)
			}
		}
		if _, err := tlog.Sign(c, "PRIVATE+KEY+nonsense"); err == nil {
			t.Error("Sign with a malformed key succeeded")
		}
	})
}

func mustVerifier(t *testing.T, vkey string) note.Verifier {
	t.Helper()
	v, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestVerifierKey(t *testing.T) {
	skey, vkey, err := tlog.GenerateKey(tlog.Origin("stadt.example"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := tlog.VerifierKey(skey)
	if err != nil {
		t.Fatal(err)
	}
	if got != vkey {
		t.Fatalf("VerifierKey = %q, want %q", got, vkey)
	}
	for _, bad := range []string{"", vkey, "PRIVATE+KEY+x", skey[:len(skey)-4] + "AAAA"} {
		if _, err := tlog.VerifierKey(bad); err == nil {
			t.Errorf("tlog.VerifierKey(%q) succeeded", bad)
		}
	}
}

func TestOriginDomain(t *testing.T) {
	if d, err := tlog.OriginDomain(tlog.Origin("stadt.example")); err != nil || d != "stadt.example" {
		t.Fatalf("OriginDomain = %q, %v", d, err)
	}
	for _, bad := range []string{"stadt.example", "/kurier-log", "a b/kurier-log", "stadt.example/kurier-log/x"} {
		if _, err := tlog.OriginDomain(bad); err == nil {
			t.Errorf("tlog.OriginDomain(%q) succeeded", bad)
		}
	}
}

func TestPeekSize(t *testing.T) {
	skey, _, err := tlog.GenerateKey(origin)
	if err != nil {
		t.Fatal(err)
	}
	signed, err := tlog.Sign(tlog.Checkpoint{Origin: origin, Size: 42, Root: testRoot("x")}, skey)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := tlog.PeekSize(signed); err != nil || n != 42 {
		t.Fatalf("PeekSize = %d, %v; want 42", n, err)
	}
	if _, err := tlog.PeekSize([]byte("stadt.example/kurier-log\n42\n")); err == nil {
		t.Error("PeekSize of an unsigned body succeeded")
	}
}
