package envelope

import "testing"

// The node parses every envelope it is given (canonical form and all
// checks) before it verifies the signature over it.

func BenchmarkMarshal(b *testing.B) {
	e := valid(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e.Marshal(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParse(b *testing.B) {
	raw, err := valid(b).Marshal()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(raw); err != nil {
			b.Fatal(err)
		}
	}
}
