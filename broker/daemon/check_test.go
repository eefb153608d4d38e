package daemon

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/evidence"
	"kurier.dev/kurier/pki/cms"
)

// TestFaultCheckEvidence checks CheckStore's evidence checks on evidence
// signed by the development node's own certificate: damage that badger's
// checksums cannot see (a DER changed behind them, a lost link, a wrong
// head) is reported, and an intact chain is not.
func TestFaultCheckEvidence(t *testing.T) {
	cfg, err := Dev(t.TempDir(), DevListen)
	if err != nil {
		t.Fatal(err)
	}
	f, err := loadFiles(cfg)
	if err != nil {
		t.Fatal(err)
	}
	signer := cms.Signer{Cert: f.id.Cert, Key: f.id.Key, Chain: f.id.Chain}
	digest := func(s string) string { h := sha256.Sum256([]byte(s)); return hex.EncodeToString(h[:]) }
	at := time.Now().UTC().Truncate(time.Second)
	var evs []broker.Evidence
	prev := ""
	for i, typ := range []evidence.Type{evidence.SubmissionAcceptance, evidence.Delivery} {
		issuer := "stadt.example"
		if typ == evidence.Delivery {
			issuer = "amtsgericht.example"
		}
		der, err := evidence.Sign(&evidence.Statement{
			Version: evidence.StatementVersion, Type: typ, MessageID: "0193a1b2-0000-7000-8000-000000000001",
			EnvelopeSHA256: digest("envelope"), PayloadSHA256: digest("payload"),
			Sender: DevAgency, Recipient: DevCourt, Issuer: issuer, Time: at, PreviousSHA256: prev,
		}, signer)
		if err != nil {
			t.Fatal(err)
		}
		evs = append(evs, broker.Evidence{MessageID: "0193a1b2-0000-7000-8000-000000000001", Recipient: DevCourt, Type: string(typ), DER: der, LeafIndex: uint64(i)})
		prev = evidence.Digest(der)
	}
	head := broker.Copy{Recipient: DevCourt, Head: prev}

	// A month on, the node's CRL is past its next update: intact evidence
	// is still intact.
	later := func() time.Time { return time.Now().Add(30 * 24 * time.Hour) }
	f.trust.SetClock(later)
	if got := checkEvidence(f.trust, []broker.Copy{head}, evs); len(got) == 0 {
		t.Fatal("with the CRL stale, the node's trust store accepts the evidence; the test no longer shows why the check leaves the CRL out")
	}
	intact, err := intactTrust(f)
	if err != nil {
		t.Fatal(err)
	}
	intact.SetClock(later)

	flipped := append([]broker.Evidence(nil), evs...)
	flipped[1].DER = append([]byte(nil), evs[1].DER...)
	flipped[1].DER[len(flipped[1].DER)/2] ^= 0x01

	for name, tt := range map[string]struct {
		copies []broker.Copy
		evs    []broker.Evidence
		want   string // "" for no problem
	}{
		"intact":          {[]broker.Copy{head}, evs, ""},
		"flipped DER":     {[]broker.Copy{head}, flipped, "Delivery evidence at leaf 1 of the node's own log"},
		"lost first link": {[]broker.Copy{head}, evs[1:], "chain of " + DevCourt},
		"wrong head":      {[]broker.Copy{{Recipient: DevCourt, Head: digest("other")}}, evs, "its head is not the digest of its last evidence"},
	} {
		t.Run(name, func(t *testing.T) {
			got := checkEvidence(intact, tt.copies, tt.evs)
			if tt.want == "" {
				if len(got) != 0 {
					t.Errorf("problems %q, want none", got)
				}
				return
			}
			if len(got) != 1 || !strings.Contains(got[0], tt.want) {
				t.Errorf("problems %q, want one with %q", got, tt.want)
			}
		})
	}
}
