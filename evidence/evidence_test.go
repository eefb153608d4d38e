package evidence_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"kurier.dev/kurier/envelope"
	"kurier.dev/kurier/evidence"
	"kurier.dev/kurier/pki"
	"kurier.dev/kurier/pki/cms"
	"kurier.dev/kurier/pki/pkitest"
)

var fx *pkitest.PKI

func TestMain(m *testing.M) { pkitest.Main(m, &fx) }

func statement(typ evidence.Type, prev string) *evidence.Statement {
	st := &evidence.Statement{
		Version: evidence.StatementVersion, Type: typ, MessageID: "019a0000-0000-7000-8000-000000000001",
		EnvelopeSHA256: strings.Repeat("a", 64), PayloadSHA256: strings.Repeat("b", 64),
		Sender: pkitest.Agency, Recipient: pkitest.Court, Issuer: "amtsgericht.example",
		Time: time.Now().UTC(), PreviousSHA256: prev,
	}
	if typ.ByRecipient() {
		st.Issuer = pkitest.Court
	}
	if typ == evidence.Rejection {
		st.Reason = "cannot-open: the payload does not decrypt"
	}
	return st
}

func policy(t testing.TB) cms.Policy {
	trust, err := fx.Trust()
	if err != nil {
		t.Fatal(err)
	}
	return cms.Policy{Trust: trust, At: time.Now()}
}

func TestStatement_Canonical(t *testing.T) {
	st := statement(evidence.Delivery, strings.Repeat("c", 64))
	b, err := st.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	want := `{"version":1,"type":"Delivery","message_id":"019a0000-0000-7000-8000-000000000001",`
	if !bytes.HasPrefix(b, []byte(want)) {
		t.Fatalf("statement starts %s, want %s", b, want)
	}
	got, err := evidence.ParseStatement(b)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Time.Equal(st.Time.Truncate(time.Microsecond)) || got.Type != st.Type {
		t.Fatalf("round trip: %+v", got)
	}
	for name, in := range map[string][]byte{
		"space":   append([]byte(" "), b...),
		"unknown": bytes.Replace(b, []byte(`"reason":""`), []byte(`"reason":"","x":1`), 1),
		"time":    bytes.Replace(b, []byte(`Z"`), []byte(`+00:00"`), 1),
	} {
		if _, err := evidence.ParseStatement(in); !errors.Is(err, evidence.ErrInvalid) {
			t.Errorf("%s: ParseStatement = %v, want ErrInvalid", name, err)
		}
	}
	for name, mutate := range map[string]func(*evidence.Statement){
		"type":           func(s *evidence.Statement) { s.Type = "Fax" },
		"hash":           func(s *evidence.Statement) { s.PayloadSHA256 = "AB" },
		"no recipient":   func(s *evidence.Statement) { s.Recipient = "" },
		"issuer address": func(s *evidence.Statement) { s.Issuer = pkitest.Court },
		"no reason":      func(s *evidence.Statement) { s.Type = evidence.NonDelivery },
		"no time":        func(s *evidence.Statement) { s.Time = time.Time{} },
	} {
		s := statement(evidence.Delivery, "")
		mutate(s)
		if _, err := s.Marshal(); !errors.Is(err, evidence.ErrInvalid) {
			t.Errorf("%s: Marshal = %v, want ErrInvalid", name, err)
		}
	}
}

func TestSignVerify_Roles(t *testing.T) {
	node := pkitest.Signer(fx.Node)
	court := pkitest.Signer(fx.IDs[pkitest.Court])
	agency := pkitest.Signer(fx.IDs[pkitest.Agency])

	der, err := evidence.Sign(statement(evidence.Delivery, ""), node)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := evidence.Verify(der, policy(t))
	if err != nil {
		t.Fatal(err)
	}
	if ev.Statement.Type != evidence.Delivery || ev.Digest() != evidence.Digest(der) {
		t.Fatalf("verified %+v", ev.Statement)
	}
	if _, err := evidence.Sign(statement(evidence.Acknowledgement, ""), court); err != nil {
		t.Fatalf("recipient signing its acknowledgement: %v", err)
	}

	// Sign refuses the wrong signer before signing anything.
	for name, tc := range map[string]struct {
		st *evidence.Statement
		s  cms.Signer
	}{
		"sender signs a Delivery":         {statement(evidence.Delivery, ""), agency},
		"node signs an Acknowledgement":   {statement(evidence.Acknowledgement, ""), node},
		"sender signs an Acknowledgement": {statement(evidence.Acknowledgement, ""), agency},
		"node signs a Rejection":          {statement(evidence.Rejection, ""), node},
		"sender signs a Rejection":        {statement(evidence.Rejection, ""), agency},
		"node signs for a foreign domain": {func() *evidence.Statement { s := statement(evidence.Delivery, ""); s.Issuer = "lg.example"; return s }(), node},
	} {
		if _, err := evidence.Sign(tc.st, tc.s); !errors.Is(err, evidence.ErrRole) {
			t.Errorf("%s: Sign = %v, want ErrRole", name, err)
		}
	}

	// Verify refuses the same, produced by signing the JSON directly.
	forge := func(st *evidence.Statement, s cms.Signer) []byte {
		b, err := st.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		der, err := cms.Sign(b, s)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	var ve *evidence.VerifyError
	_, err = evidence.Verify(forge(statement(evidence.Delivery, ""), agency), policy(t))
	if !errors.As(err, &ve) || ve.Step != "signer role" || !errors.Is(err, evidence.ErrRole) {
		t.Errorf("Delivery signed by the sender: %v, want a signer role failure", err)
	}
	_, err = evidence.Verify(forge(statement(evidence.Acknowledgement, ""), pkitest.Signer(fx.IDs[pkitest.Other])), policy(t))
	if !errors.Is(err, evidence.ErrRole) {
		t.Errorf("Acknowledgement signed by a third participant: %v, want ErrRole", err)
	}
	revoked := pkitest.Signer(fx.Revoked)
	st := statement(evidence.Acknowledgement, "")
	st.Recipient, st.Issuer = pkitest.Agency, pkitest.Agency
	_, err = evidence.Verify(forge(st, revoked), policy(t))
	if !errors.As(err, &ve) || ve.Step != "signature" || !errors.Is(err, pki.ErrRevoked) {
		t.Errorf("revoked signer: %v, want a signature failure with ErrRevoked", err)
	}
	tampered := bytes.Replace(der, []byte(`"Delivery"`), []byte(`"Retrieval"`), 1)
	if _, err := evidence.Verify(tampered, policy(t)); !errors.As(err, &ve) || ve.Step != "signature" {
		t.Errorf("tampered evidence: %v, want a signature failure", err)
	}
}

func TestCheckChain(t *testing.T) {
	node := pkitest.Signer(fx.Node)
	var ders [][]byte
	prev := ""
	for _, typ := range []evidence.Type{evidence.SubmissionAcceptance, evidence.Delivery, evidence.Retrieval} {
		st := statement(typ, prev)
		if typ == evidence.SubmissionAcceptance {
			st.Issuer = "stadt.example"
		}
		der, err := evidence.Sign(st, node)
		if err != nil {
			t.Fatal(err)
		}
		ders = append(ders, der)
		prev = evidence.Digest(der)
	}
	ack, err := evidence.Sign(statement(evidence.Acknowledgement, prev), pkitest.Signer(fx.IDs[pkitest.Court]))
	if err != nil {
		t.Fatal(err)
	}
	ders = append(ders, ack)
	links := func(ds ...[]byte) []evidence.Link {
		var out []evidence.Link
		for _, d := range ds {
			ev, err := evidence.Verify(d, policy(t))
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, ev.Link())
		}
		return out
	}
	if err := evidence.CheckChain(links(ders...)); err != nil {
		t.Fatalf("good chain: %v", err)
	}
	for name, chain := range map[string][][]byte{
		"gap":           {ders[0], ders[2], ders[3]},
		"swapped":       {ders[0], ders[2], ders[1], ders[3]},
		"no start":      {ders[1], ders[2]},
		"repeated":      {ders[0], ders[1], ders[1]},
		"ack first":     {ders[3]},
		"ack not first": {ders[0], ders[3]},
	} {
		if err := evidence.CheckChain(links(chain...)); !errors.Is(err, evidence.ErrChain) {
			t.Errorf("%s: CheckChain = %v, want ErrChain", name, err)
		}
	}
}

func TestAllowed(t *testing.T) {
	for _, tc := range []struct {
		from, to evidence.Type
		ok       bool
	}{
		{"", evidence.SubmissionAcceptance, true},
		{"", evidence.Delivery, false},
		{evidence.SubmissionAcceptance, evidence.Delivery, true},
		{evidence.Delivery, evidence.Retrieval, true},
		{evidence.Delivery, evidence.Acknowledgement, false},
		{evidence.Retrieval, evidence.Acknowledgement, true},
		{evidence.Retrieval, evidence.Retrieval, false},
		{evidence.Acknowledgement, evidence.Retrieval, false},
		{evidence.SubmissionRejection, evidence.Delivery, false},
		{evidence.SubmissionAcceptance, evidence.RelayAcceptance, true},
		{evidence.RelayAcceptance, evidence.Delivery, true},
		{evidence.RelayRejection, evidence.NonDelivery, true},
		{evidence.RelayRejection, evidence.Delivery, false},
		{evidence.NonDelivery, evidence.Retrieval, false},
		{evidence.Retrieval, evidence.Rejection, true},
		{evidence.Delivery, evidence.Rejection, false},
		{evidence.Rejection, evidence.Acknowledgement, false},
		{evidence.Acknowledgement, evidence.Rejection, false},
		{evidence.Rejection, evidence.Rejection, false},
	} {
		if got := evidence.Allowed(tc.from, tc.to); got != tc.ok {
			t.Errorf("Allowed(%q, %s) = %v, want %v", tc.from, tc.to, got, tc.ok)
		}
	}
}

// TestHostile_RejectionReason refuses, in a Rejection's reason, what the
// sender's software would show a person wrongly or not at all, and
// accepts the forms docs/PROTOCOL.md names; a statement carrying a
// refused reason cannot be signed or parsed.
func TestHostile_RejectionReason(t *testing.T) {
	for name, tc := range map[string]struct {
		code evidence.RejectionCode
		text string
		want string // "" for accepted
	}{
		"code only":           {evidence.CannotOpen, "", ""},
		"code and text":       {evidence.NotCompetent, "Zuständig ist das Landgericht Köln", ""},
		"other with text":     {evidence.OtherRejection, "Anlage K3 fehlt", ""},
		"other without text":  {evidence.OtherRejection, "", "needs a text"},
		"other with blanks":   {evidence.OtherRejection, "   ", "needs a text"},
		"unknown code":        {"rejected", "", "is not one of cannot-open, not-competent, other"},
		"bidi override":       {evidence.OtherRejection, "Frist \u202etsiw\u202c abgelaufen", "U+202E"},
		"isolate":             {evidence.CannotOpen, "a\u2066b", "U+2066"},
		"newline":             {evidence.OtherRejection, "erste Zeile\nzweite Zeile", "U+000A"},
		"C1 control":          {evidence.OtherRejection, "x\u009b2J", "U+009B"},
		"escape":              {evidence.OtherRejection, "\x1b[2Jweg", "U+001B"},
		"not UTF-8":           {evidence.OtherRejection, "\xff\xfe", "not UTF-8"},
		"too long":            {evidence.OtherRejection, strings.Repeat("x", evidence.MaxRejectionText+1), "at most 512"},
		"leading white space": {evidence.OtherRejection, " x", "white space"},
	} {
		t.Run(name, func(t *testing.T) {
			reason, err := evidence.RejectionReason(tc.code, tc.text)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("RejectionReason: %v", err)
				}
				code, text, err := evidence.ParseRejectionReason(reason)
				if err != nil || code != tc.code || text != tc.text {
					t.Fatalf("ParseRejectionReason(%q) = %s, %q, %v", reason, code, text, err)
				}
				st := statement(evidence.Rejection, strings.Repeat("c", 64))
				st.Reason = reason
				if _, err := evidence.Sign(st, pkitest.Signer(fx.IDs[pkitest.Court])); err != nil {
					t.Fatalf("Sign: %v", err)
				}
				return
			}
			if err == nil || !errors.Is(err, evidence.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("RejectionReason: %v, want ErrInvalid containing %q", err, tc.want)
			}
			// The same reason, put into a statement by hand.
			st := statement(evidence.Rejection, strings.Repeat("c", 64))
			st.Reason = string(tc.code)
			if tc.text != "" {
				st.Reason += ": " + tc.text
			}
			if _, err := st.Marshal(); !errors.Is(err, evidence.ErrInvalid) {
				t.Errorf("Marshal of a statement with reason %q: %v, want ErrInvalid", st.Reason, err)
			}
		})
	}
	st := statement(evidence.Rejection, strings.Repeat("c", 64))
	st.Reason = ""
	if _, err := st.Marshal(); err == nil || !strings.Contains(err.Error(), "needs a reason") {
		t.Errorf("Rejection without reason: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte{0x30, 0x80})
	f.Add([]byte(`{"version":1}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		ev, err := evidence.Parse(in)
		if err != nil {
			return
		}
		if err := ev.Statement.Validate(); err != nil {
			t.Fatalf("Parse accepted an invalid statement: %v", err)
		}
	})
}

// TestHostile_StatementReason: the reason of every type that gives one
// refuses what envelopes refuse — control and bidirectional characters,
// invalid UTF-8 — since the Prüfprotokoll and kurier's output show it to
// a person; and ReasonText turns any text into a reason a statement
// accepts, which is what a node signs.
func TestHostile_StatementReason(t *testing.T) {
	hostile := []string{"timeout \u202Edetaler", "line\nbreak", "nul\x00", "del\x7f", "c1\u0085", "isolate\u2066"}
	for _, typ := range []evidence.Type{evidence.SubmissionRejection, evidence.RelayRejection, evidence.NonDelivery} {
		prev := strings.Repeat("0", 64)
		if typ == evidence.SubmissionRejection {
			prev = ""
		}
		for _, reason := range hostile {
			s := statement(typ, prev)
			if typ == evidence.SubmissionRejection {
				s.Recipient = ""
			}
			// Evidence signed before nodes cleaned their reasons keeps
			// verifying; those who show a reason escape it.
			s.Reason = reason
			if err := s.Validate(); err != nil {
				t.Errorf("%s reason %q: Validate = %v, want it read (and escaped where shown)", typ, reason, err)
			}
			plain := evidence.ReasonText(reason)
			if strings.IndexFunc(plain, envelope.Hostile) >= 0 {
				t.Errorf("%s reason %q made plain as %q, which still holds a hostile character", typ, reason, plain)
			}
		}
		s := statement(typ, prev)
		if typ == evidence.SubmissionRejection {
			s.Recipient = ""
		}
		s.Reason = "the node of kreis.example refused the message: no mailbox x@kreis.example (\"ä\")"
		if err := s.Validate(); err != nil {
			t.Errorf("%s with a plain reason: %v", typ, err)
		}
	}
	s := statement(evidence.NonDelivery, strings.Repeat("0", 64))
	s.Reason = "\xff\xfe"
	if err := s.Validate(); !errors.Is(err, evidence.ErrInvalid) {
		t.Errorf("a reason that is not UTF-8: Validate = %v, want ErrInvalid", err)
	}
	if got := evidence.ReasonText(strings.Repeat("€", evidence.MaxReasonLen)); len(got) > evidence.MaxReasonLen || !utf8.ValidString(got) || len(got) < evidence.MaxReasonLen-2 {
		t.Errorf("ReasonText of a long text: %d bytes, valid UTF-8 %v", len(got), utf8.ValidString(got))
	}
}
