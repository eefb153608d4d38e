package evidence_test

import (
	"strings"
	"testing"

	"kurier.dev/kurier/evidence"
	"kurier.dev/kurier/pki/pkitest"
)

// The costs of issuing and checking one evidence, which a node pays
// several times per message: signing (the node's key), parsing (CMS and
// the statement) and verifying (signature, certificate chain and CRL).

func BenchmarkSign(b *testing.B) {
	st := statement(evidence.Delivery, strings.Repeat("c", 64))
	s := pkitest.Signer(fx.Node)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := evidence.Sign(st, s); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParse(b *testing.B) {
	der := signedDelivery(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := evidence.Parse(der); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerify(b *testing.B) {
	der := signedDelivery(b)
	p := policy(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := evidence.Verify(der, p); err != nil {
			b.Fatal(err)
		}
	}
}

func signedDelivery(b *testing.B) []byte {
	b.Helper()
	der, err := evidence.Sign(statement(evidence.Delivery, strings.Repeat("c", 64)), pkitest.Signer(fx.Node))
	if err != nil {
		b.Fatal(err)
	}
	return der
}
