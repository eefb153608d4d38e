package envelope

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func valid(t testing.TB) *Envelope {
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
		Expires:       time.Date(2026, 11, 30, 10, 15, 2, 123456789, time.FixedZone("CET", 3600)),
		PayloadSHA256: strings.Repeat("ab", 32), PayloadSize: 42,
		Files: []File{
			{Name: "klage.pdf", Size: 10, SHA256: strings.Repeat("01", 32)},
			{Name: "Anlage K1 (Vertrag).pdf", Size: 20, SHA256: strings.Repeat("c2", 32)},
		},
	}
}

// validV2 returns a valid version 2 envelope, as senders wrote them before
// version 3: no document digests.
func validV2(t testing.TB) *Envelope {
	t.Helper()
	e := valid(t)
	e.Version = Version2
	for i := range e.Files {
		e.Files[i].SHA256 = ""
	}
	return e
}

// validV1 returns a valid version 1 envelope, as senders wrote them before
// version 2.
func validV1(t testing.TB) *Envelope {
	t.Helper()
	e := validV2(t)
	e.Version, e.Expires = Version1, time.Time{}
	return e
}

func TestEnvelope_RoundTrip(t *testing.T) {
	tests := map[string]struct {
		env         func(t testing.TB) *Envelope
		wantContain []string
		wantAbsent  string
	}{
		"version 3": {
			env: valid,
			wantContain: []string{
				`{"version":3,`,
				`"created":"2026-11-23T09:15:02.123456789Z","expires":"2026-11-30T09:15:02.123456789Z","payload_sha256":`,
				`"files":[{"name":"klage.pdf","size":10,"sha256":"` + strings.Repeat("01", 32) + `"},`,
			},
		},
		"version 2": {
			env: validV2,
			wantContain: []string{
				`{"version":2,`,
				`"created":"2026-11-23T09:15:02.123456789Z","expires":"2026-11-30T09:15:02.123456789Z","payload_sha256":`,
				`"files":[{"name":"klage.pdf","size":10},`,
			},
			wantAbsent: `"sha256":`,
		},
		"version 1": {
			env:         validV1,
			wantContain: []string{`{"version":1,`, `"created":"2026-11-23T09:15:02.123456789Z","payload_sha256":`, `"files":[{"name":"klage.pdf","size":10},`},
			wantAbsent:  `"expires"`,
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			e := tt.env(t)
			b, err := e.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range tt.wantContain {
				if !bytes.Contains(b, []byte(want)) {
					t.Errorf("%s not in %s", want, b)
				}
			}
			if tt.wantAbsent != "" && bytes.Contains(b, []byte(tt.wantAbsent)) {
				t.Errorf("%s in %s", tt.wantAbsent, b)
			}
			if !bytes.Contains(b, []byte(`<Müller> & Söhne`)) {
				t.Errorf("subject escaped: %s", b)
			}
			got, err := Parse(b)
			if err != nil {
				t.Fatal(err)
			}
			if got.Version != e.Version || !got.Created.Equal(e.Created) || !got.Expires.Equal(e.Expires) {
				t.Errorf("parsed version %d, created %v, expires %v; want %d, %v, %v", got.Version, got.Created, got.Expires, e.Version, e.Created, e.Expires)
			}
			if !slices.Equal(got.Files, e.Files) {
				t.Errorf("parsed files %v, want %v", got.Files, e.Files)
			}
			again, err := got.Marshal()
			if err != nil || !bytes.Equal(again, b) {
				t.Fatalf("re-marshal differs: %s vs %s (%v)", again, b, err)
			}
			if Digest(b) == Digest(again[:len(again)-1]) {
				t.Error("digest ignores content")
			}
		})
	}
}

// TestParse_Version1 pins the version 1 form byte for byte: envelopes
// signed before version 2 must still parse and marshal to the same bytes.
func TestParse_Version1(t *testing.T) {
	const v1 = `{"version":1,"id":"019a0000-0000-7000-8000-000000000000","from":"poststelle@stadt.example",` +
		`"to":["eingang@amtsgericht.example"],"subject":"Klage <Müller> & Söhne","type":"Schriftsatz","reference":"4 C 12/26",` +
		`"created":"2026-11-23T09:15:02.123456789Z","payload_sha256":"` + "abababababababababababababababababababababababababababababababab" + `",` +
		`"payload_size":42,"files":[{"name":"klage.pdf","size":10}]}`
	e, err := Parse([]byte(v1))
	if err != nil {
		t.Fatal(err)
	}
	if e.Version != Version1 || !e.Expires.IsZero() {
		t.Errorf("version %d, expires %v; want 1 and none", e.Version, e.Expires)
	}
	b, err := e.Marshal()
	if err != nil || string(b) != v1 {
		t.Fatalf("re-marshal of a version 1 envelope:\n%s\nwant\n%s (%v)", b, v1, err)
	}
}

// TestParse_Version2 pins the version 2 form byte for byte: envelopes
// signed before version 3 must still parse and marshal to the same bytes.
func TestParse_Version2(t *testing.T) {
	const v2 = `{"version":2,"id":"019a0000-0000-7000-8000-000000000000","from":"poststelle@stadt.example",` +
		`"to":["eingang@amtsgericht.example"],"subject":"Klage","type":"Schriftsatz","reference":"4 C 12/26",` +
		`"created":"2026-11-23T09:15:02.123456789Z","expires":"2026-11-30T09:15:02Z","payload_sha256":"` + "abababababababababababababababababababababababababababababababab" + `",` +
		`"payload_size":42,"files":[{"name":"klage.pdf","size":10},{"name":"leer.txt","size":0}]}`
	e, err := Parse([]byte(v2))
	if err != nil {
		t.Fatal(err)
	}
	if e.Version != Version2 || e.Expires.IsZero() || e.Files[0].SHA256 != "" {
		t.Errorf("version %d, expires %v, first file %+v; want 2, an expiry and no digest", e.Version, e.Expires, e.Files[0])
	}
	b, err := e.Marshal()
	if err != nil || string(b) != v2 {
		t.Fatalf("re-marshal of a version 2 envelope:\n%s\nwant\n%s (%v)", b, v2, err)
	}
}

// TestEnvelopeOld_Fields checks that the version 2 form is the current one
// with file entries without sha256, and the version 1 form version 2
// without expires, key for key and in order.
func TestEnvelopeOld_Fields(t *testing.T) {
	keys := func(typ reflect.Type) []string {
		var ks []string
		for i := range typ.NumField() {
			ks = append(ks, typ.Field(i).Tag.Get("json")+" "+typ.Field(i).Type.String())
		}
		return ks
	}
	oldFiles := func(k string) string {
		return strings.Replace(k, "[]envelope.File", "[]envelope.fileV1", 1)
	}
	v3 := keys(reflect.TypeFor[Envelope]())
	want := make([]string, len(v3))
	for i, k := range v3 {
		want[i] = oldFiles(k)
	}
	if got := keys(reflect.TypeFor[envelopeV2]()); !slices.Equal(got, want) {
		t.Errorf("envelopeV2 fields %q, want %q", got, want)
	}
	want = slices.DeleteFunc(want, func(k string) bool { return strings.HasPrefix(k, "expires ") })
	if got := keys(reflect.TypeFor[envelopeV1]()); !slices.Equal(got, want) {
		t.Errorf("envelopeV1 fields %q, want %q", got, want)
	}
	wantFile := slices.DeleteFunc(keys(reflect.TypeFor[File]()), func(k string) bool { return strings.HasPrefix(k, "sha256 ") })
	if got := keys(reflect.TypeFor[fileV1]()); !slices.Equal(got, wantFile) {
		t.Errorf("fileV1 fields %q, want %q", got, wantFile)
	}
}

func TestParse_NonCanonical(t *testing.T) {
	for _, version := range []int{Version1, Version2, Version} {
		mk := map[int]func(testing.TB) *Envelope{Version1: validV1, Version2: validV2, Version: valid}[version]
		b, err := mk(t).Marshal()
		if err != nil {
			t.Fatal(err)
		}
		head := []byte(`{"version":` + strconv.Itoa(version) + `,`)
		cases := map[string][]byte{
			"leading space": append([]byte(" "), b...),
			"trailing data": append(append([]byte{}, b...), []byte(`{}`)...),
			"unknown field": bytes.Replace(b, head, append(slices.Clip(head), `"x":1,`...), 1),
			"duplicate key": bytes.Replace(b, head, append(slices.Clip(head), head[1:]...), 1),
			"escaped html":  bytes.Replace(b, []byte(`&`), []byte(`\u0026`), 1),
			"too large":     append(append([]byte{}, b...), bytes.Repeat([]byte(" "), MaxSize)...),
			"created not in UTC": bytes.Replace(b, []byte(`"created":"2026-11-23T09:15:02.123456789Z"`),
				[]byte(`"created":"2026-11-23T10:15:02.123456789+01:00"`), 1),
			"reordered keys": append(bytes.Replace(b[:len(b)-1], head, []byte(`{`), 1),
				`,"version":`+strconv.Itoa(version)+`}`...),
		}
		if version == Version1 {
			withExpires := func(v string) []byte {
				return bytes.Replace(b, []byte(`Z","payload_sha256"`), []byte(`Z","expires":`+v+`,"payload_sha256"`), 1)
			}
			cases["version 1 with expires"] = withExpires(`"2026-11-30T09:15:02Z"`)
			cases["version 1 with zero expires"] = withExpires(`"0001-01-01T00:00:00Z"`)
			cases["version 1 with null expires"] = withExpires(`null`)
		}
		if version == Version1 || version == Version2 {
			withDigest := func(v string) []byte {
				return bytes.Replace(b, []byte(`"size":10}`), []byte(`"size":10,"sha256":`+v+`}`), 1)
			}
			cases["with a file digest"] = withDigest(`"` + strings.Repeat("01", 32) + `"`)
			cases["with an empty file digest"] = withDigest(`""`)
		}
		if version == Version {
			digest := []byte(`,"sha256":"` + strings.Repeat("01", 32) + `"`)
			replace := func(with string) []byte { return bytes.Replace(b, digest, []byte(with), 1) }
			cases["without a file digest"] = replace(``)
			cases["with an empty file digest"] = replace(`,"sha256":""`)
			cases["with a null file digest"] = replace(`,"sha256":null`)
			cases["file digest in upper case"] = replace(`,"sha256":"` + strings.Repeat("0A", 32) + `"`)
			cases["file digest too short"] = replace(`,"sha256":"` + strings.Repeat("01", 31) + `"`)
			cases["file digest too long"] = replace(`,"sha256":"` + strings.Repeat("01", 33) + `"`)
			cases["file digest not hex"] = replace(`,"sha256":"` + strings.Repeat("0g", 32) + `"`)
			cases["file digest as a number"] = replace(`,"sha256":1`)
			cases["file digest before size"] = bytes.Replace(b, []byte(`"size":10,"sha256":"`+strings.Repeat("01", 32)+`"`),
				[]byte(`"sha256":"`+strings.Repeat("01", 32)+`","size":10`), 1)
		}
		if version != Version1 {
			expires := []byte(`"expires":"2026-11-30T09:15:02.123456789Z"`)
			replace := func(with string) []byte { return bytes.Replace(b, expires, []byte(with), 1) }
			cases["without expires"] = bytes.Replace(b, append(slices.Clip(expires), ','), nil, 1)
			cases["with null expires"] = replace(`"expires":null`)
			cases["with zero expires"] = replace(`"expires":"0001-01-01T00:00:00Z"`)
			cases["expires not in UTC"] = replace(`"expires":"2026-11-30T10:15:02.123456789+01:00"`)
			cases["expires with trailing zeros"] = replace(`"expires":"2026-11-30T09:15:02.123456789000Z"`)
			cases["expires equals created"] = replace(`"expires":"2026-11-23T09:15:02.123456789Z"`)
			cases["expires before created"] = replace(`"expires":"2026-11-22T09:15:02.123456789Z"`)
			cases["expires as a number"] = replace(`"expires":1795000000`)
			cases["expires after files"] = append(bytes.Replace(b[:len(b)-1], append(slices.Clip(expires), ','), nil, 1),
				append(append([]byte(`,`), expires...), '}')...)
		}
		for name, in := range cases {
			t.Run("version "+strconv.Itoa(version)+"/"+name, func(t *testing.T) {
				if bytes.Equal(in, b) {
					t.Fatal("test case did not change the envelope")
				}
				if _, err := Parse(in); !errors.Is(err, ErrInvalid) {
					t.Fatalf("Parse(%s) = %v, want ErrInvalid", in, err)
				}
			})
		}
	}
}

func TestEnvelope_Validate(t *testing.T) {
	many := func(n int) []File {
		fs := make([]File, n)
		for i := range fs {
			fs[i] = File{Name: strings.Repeat("x", 1+i%200) + "-" + string(rune('a'+i%26)) + "-" + itoa(i), Size: 1, SHA256: strings.Repeat("0", 64)}
		}
		return fs
	}
	cases := map[string]func(e *Envelope){
		"version 0":           func(e *Envelope) { e.Version = 0 },
		"version 4":           func(e *Envelope) { e.Version = 4 },
		"no file digest":      func(e *Envelope) { e.Files[1].SHA256 = "" },
		"file digest upper":   func(e *Envelope) { e.Files[0].SHA256 = strings.Repeat("AB", 32) },
		"file digest short":   func(e *Envelope) { e.Files[0].SHA256 = "ab" },
		"file digest not hex": func(e *Envelope) { e.Files[0].SHA256 = strings.Repeat("x", 64) },
		"version 2 digest":    func(e *Envelope) { e.Version = Version2 },
		"version 1 digest":    func(e *Envelope) { e.Version, e.Expires = Version1, time.Time{} },
		"no expires":          func(e *Envelope) { e.Expires = time.Time{} },
		"expires at created":  func(e *Envelope) { e.Expires = e.Created.UTC() },
		"expires before":      func(e *Envelope) { e.Expires = e.Created.Add(-time.Nanosecond) },
		"version 1 expires":   func(e *Envelope) { e.Version = Version1 },
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
	t.Run("version 1 without expires is fine", func(t *testing.T) {
		if err := validV1(t).Validate(); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("version 2 without file digests is fine", func(t *testing.T) {
		if err := validV2(t).Validate(); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("expires a nanosecond after created is fine", func(t *testing.T) {
		e := valid(t)
		e.Expires = e.Created.Add(time.Nanosecond)
		if err := e.Validate(); err != nil {
			t.Fatal(err)
		}
	})
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
		Subject: "s", Created: time.Unix(0, 0), Expires: time.Unix(86400, 0), PayloadSHA256: strings.Repeat("0", 64), PayloadSize: 1,
		Files: []File{{Name: "f", Size: 1, SHA256: strings.Repeat("1", 64)}},
	}
	for _, v := range []int{Version, Version2, Version1} {
		e.Version = v
		if v != Version {
			e.Files[0].SHA256 = ""
		}
		if v == Version1 {
			e.Expires = time.Time{}
		}
		b, err := e.Marshal()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
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
		hasKey := bytes.Contains(in, []byte(`"expires":`))
		digests := bytes.Count(in, []byte(`,"sha256":"`))
		switch e.Version {
		case Version1:
			if !e.Expires.IsZero() || digests > 0 {
				t.Fatalf("accepted a version 1 envelope with an expiry or a file digest: %q", in)
			}
		case Version2, Version:
			if !hasKey || !e.Expires.After(e.Created) {
				t.Fatalf("accepted a version %d envelope without an expiry after its creation: %q", e.Version, in)
			}
			if e.Version == Version2 && digests > 0 {
				t.Fatalf("accepted a version 2 envelope with a file digest: %q", in)
			}
			for _, f := range e.Files {
				if e.Version == Version && !IsDigest(f.SHA256) {
					t.Fatalf("accepted a version 3 file entry without a digest: %q", in)
				}
			}
		default:
			t.Fatalf("accepted version %d: %q", e.Version, in)
		}
	})
}

// TestHostile_Text refuses, in every text a person is shown (subject,
// type, reference, file names), the characters that make text say
// something else than it does: C0 and C1 controls, DEL, and bidirectional
// embeddings, overrides and isolates. Other text from beyond ASCII stays
// welcome. The refusal names the character, and Parse refuses it too, so
// a node refuses such an envelope at submission.
func TestHostile_Text(t *testing.T) {
	hostile := []rune{0x00, 0x07, 0x1b, 0x7f, 0x80, 0x85, 0x9b, 0x9f, 0x202a, 0x202b, 0x202c, 0x202d, 0x202e, 0x2066, 0x2067, 0x2068, 0x2069}
	fields := map[string]func(e *Envelope, s string){
		"subject":   func(e *Envelope, s string) { e.Subject = s },
		"type":      func(e *Envelope, s string) { e.Type = s },
		"reference": func(e *Envelope, s string) { e.Reference = s },
		"file name": func(e *Envelope, s string) { e.Files[0].Name = s },
	}
	for field, set := range fields {
		for _, r := range hostile {
			t.Run(fmt.Sprintf("%s U+%04X", field, r), func(t *testing.T) {
				e := valid(t)
				set(e, "rechnung"+string(r)+"fdp.exe")
				err := e.Validate()
				if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), fmt.Sprintf("U+%04X", r)) {
					t.Fatalf("Validate = %v, want ErrInvalid naming U+%04X", err, r)
				}
			})
		}
		t.Run(field+" other scripts", func(t *testing.T) {
			e := valid(t)
			set(e, "Bescheid über Grundsteuer – مرحبا – 你好 ‎Ω")
			if err := e.Validate(); err != nil {
				t.Fatalf("Validate = %v, want it accepted", err)
			}
		})
	}
	t.Run("Parse", func(t *testing.T) {
		e := valid(t)
		b, err := e.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		evil := bytes.Replace(b, []byte("klage.pdf"), []byte(`klage\u202efdp.exe`), 1)
		if _, err := Parse(evil); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "U+202E") {
			t.Fatalf("Parse = %v, want ErrInvalid naming U+202E", err)
		}
	})
}
