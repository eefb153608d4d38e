package envelope

import (
	"bytes"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"
)

func valid(t *testing.T) *Envelope {
	t.Helper()
	id, err := NewID()
	if err != nil {
		t.Fatal(err)
	}
	return &Envelope{
		Version: Version, ID: id, From: "poststelle@stadt.example",
		To: []string{"eingang@amtsgericht.example"}, Subject: "Klage <Müller> & Söhne",
		Type: "Schriftsatz", Reference: "4 C 12/26",
		Created:       time.Date(2026, 11, 23, 10, 15, 2, 123456789, time.FixedZone("CET", 3600)),
		PayloadSHA256: strings.Repeat("ab", 32), PayloadSize: 42,
		Files: []File{{Name: "klage.pdf", Size: 10}, {Name: "Anlage K1 (Vertrag).pdf", Size: 20}},
	}
}

func TestEnvelope_RoundTrip(t *testing.T) {
	e := valid(t)
	b, err := e.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte(`"created":"2026-11-23T09:15:02.123456789Z"`)) {
		t.Errorf("created not written in UTC: %s", b)
	}
	if !bytes.Contains(b, []byte(`<Müller> & Söhne`)) {
		t.Errorf("subject escaped: %s", b)
	}
	got, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	again, err := got.Marshal()
	if err != nil || !bytes.Equal(again, b) {
		t.Fatalf("re-marshal differs: %s vs %s (%v)", again, b, err)
	}
	if Digest(b) == Digest(again[:len(again)-1]) {
		t.Error("digest ignores content")
	}
}

func TestParse_NonCanonical(t *testing.T) {
	b, err := valid(t).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string][]byte{
		"leading space": append([]byte(" "), b...),
		"trailing data": append(append([]byte{}, b...), []byte(`{}`)...),
		"unknown field": bytes.Replace(b, []byte(`{"version":1,`), []byte(`{"version":1,"x":1,`), 1),
		"duplicate key": bytes.Replace(b, []byte(`{"version":1,`), []byte(`{"version":1,"version":1,`), 1),
		"escaped html":  bytes.Replace(b, []byte(`&`), []byte(`\u0026`), 1),
		"too large":     append(append([]byte{}, b...), bytes.Repeat([]byte(" "), MaxSize)...),
	}
	cases["reordered keys"] = append(bytes.Replace(b[:len(b)-1], []byte(`{"version":1,`), []byte(`{`), 1), []byte(`,"version":1}`)...)
	for name, in := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := Parse(in); !errors.Is(err, ErrInvalid) {
				t.Fatalf("Parse = %v, want ErrInvalid", err)
			}
		})
	}
}

func TestEnvelope_Validate(t *testing.T) {
	many := func(n int) []File {
		fs := make([]File, n)
		for i := range fs {
			fs[i] = File{Name: strings.Repeat("x", 1+i%200) + "-" + string(rune('a'+i%26)) + "-" + itoa(i), Size: 1}
		}
		return fs
	}
	cases := map[string]func(e *Envelope){
		"version":             func(e *Envelope) { e.Version = 2 },
		"id not uuid":         func(e *Envelope) { e.ID = "123" },
		"id uppercase":        func(e *Envelope) { e.ID = strings.ToUpper(e.ID) },
		"id version 4":        func(e *Envelope) { e.ID = "0b6f4b7c-6a3e-4b8e-9a7e-0a4d3c2b1a09" },
		"bad from":            func(e *Envelope) { e.From = "nobody" },
		"no recipients":       func(e *Envelope) { e.To = nil },
		"duplicate recipient": func(e *Envelope) { e.To = []string{e.To[0], e.To[0]} },
		"bad recipient":       func(e *Envelope) { e.To = []string{"x@y"} },
		"empty subject":       func(e *Envelope) { e.Subject = "  " },
		"control in subject":  func(e *Envelope) { e.Subject = "a\x00b" },
		"long reference":      func(e *Envelope) { e.Reference = strings.Repeat("a", MaxReferenceLen+1) },
		"no created":          func(e *Envelope) { e.Created = time.Time{} },
		"bad digest":          func(e *Envelope) { e.PayloadSHA256 = strings.Repeat("AB", 32) },
		"short digest":        func(e *Envelope) { e.PayloadSHA256 = "ab" },
		"zero size":           func(e *Envelope) { e.PayloadSize = 0 },
		"no files":            func(e *Envelope) { e.Files = nil },
		"too many files":      func(e *Envelope) { e.Files = many(MaxFiles + 1) },
		"file name slash":     func(e *Envelope) { e.Files[0].Name = "a/b.pdf" },
		"file name backslash": func(e *Envelope) { e.Files[0].Name = `a\b.pdf` },
		"file name dotdot":    func(e *Envelope) { e.Files[0].Name = ".." },
		"file name too long":  func(e *Envelope) { e.Files[0].Name = strings.Repeat("ä", 128) },
		"file name control":   func(e *Envelope) { e.Files[0].Name = "a\nb" },
		"file name repeated":  func(e *Envelope) { e.Files[1].Name = e.Files[0].Name },
		"negative file size":  func(e *Envelope) { e.Files[0].Size = -1 },
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			e := valid(t)
			mutate(e)
			if err := e.Validate(); !errors.Is(err, ErrInvalid) {
				t.Fatalf("Validate = %v, want ErrInvalid", err)
			}
			if _, err := e.Marshal(); err == nil {
				t.Fatal("Marshal accepted an invalid envelope")
			}
		})
	}
	t.Run("1000 files and a 255-byte name are fine", func(t *testing.T) {
		e := valid(t)
		e.Files = many(MaxFiles)
		e.Files[0].Name = strings.Repeat("a", MaxFileNameLen)
		if err := e.Validate(); err != nil {
			t.Fatal(err)
		}
	})
}

func itoa(i int) string { return strconv.Itoa(i) }

func FuzzParse(f *testing.F) {
	e := &Envelope{
		Version: Version, ID: "019a0000-0000-7000-8000-000000000000", From: "a@b.example", To: []string{"c@d.example"},
		Subject: "s", Created: time.Unix(0, 0), PayloadSHA256: strings.Repeat("0", 64), PayloadSize: 1,
		Files: []File{{Name: "f", Size: 1}},
	}
	b, err := e.Marshal()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		e, err := Parse(in)
		if err != nil {
			return
		}
		out, err := e.Marshal()
		if err != nil || !bytes.Equal(out, in) {
			t.Fatalf("accepted bytes that do not re-marshal identically: %q", in)
		}
	})
}
