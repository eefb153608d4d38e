package canonjson

import (
	"errors"
	"testing"
)

type doc struct {
	B string `json:"b"`
	A int    `json:"a"`
}

func TestMarshal(t *testing.T) {
	got, err := Marshal(doc{B: "<Müller & Söhne>", A: 1})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"b":"<Müller & Söhne>","a":1}`; string(got) != want {
		t.Fatalf("Marshal = %s, want %s", got, want)
	}
}

func TestUnmarshal(t *testing.T) {
	var d doc
	if err := Unmarshal([]byte(`{"b":"x","a":2}`), &d); err != nil || d.A != 2 {
		t.Fatalf("Unmarshal = %v, %+v", err, d)
	}
	for name, in := range map[string]string{
		"unknown field": `{"b":"x","c":1}`,
		"trailing":      `{"b":"x"}{}`,
		"trailing text": `{"b":"x"} x`,
		"not json":      `{`,
	} {
		if err := Unmarshal([]byte(in), &d); err == nil {
			t.Errorf("%s: Unmarshal accepted %q", name, in)
		}
	}
	if err := Unmarshal([]byte(`{"b":"x"} {}`), &d); !errors.Is(err, ErrTrailing) {
		t.Errorf("trailing object: %v, want ErrTrailing", err)
	}
}
