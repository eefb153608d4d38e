package audit_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"kurier.dev/kurier/evidence/audit"
	"kurier.dev/kurier/evidence/bundle"
	"kurier.dev/kurier/pki"
	"kurier.dev/kurier/pki/cms"
	"kurier.dev/kurier/pki/pkitest"
)

// v1Dir holds a version 1 bundle as Kurier wrote it before version 2,
// with what it was verified with then and the checks made: see
// evidence/bundle/v1_test.go.
var v1Dir = filepath.Join("..", "bundle", "testdata", "v1")

func readFile(t *testing.T, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(v1Dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestVerify_V1 verifies the version 1 bundle as `kurier verify --ca
// ca.pem --since before.checkpoint --log-key log.vkey` did before
// version 2: the same checks, subjects, outcomes and words.
func TestVerify_V1(t *testing.T) {
	roots, err := pki.LoadCertificates(filepath.Join(v1Dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	o := audit.Options{
		Roots:   roots,
		Since:   []audit.File{{Name: "before.checkpoint", Data: readFile(t, "before.checkpoint")}},
		LogKeys: strings.Fields(string(readFile(t, "log.vkey"))),
	}
	r := audit.Verify("bundle.zip", readFile(t, "bundle.zip"), o)
	if !r.OK() {
		t.Fatalf("the version 1 bundle does not verify:\n%s", dump(r))
	}
	var want []audit.Check
	if err := json.Unmarshal(readFile(t, "checks.json"), &want); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, r.Checks); diff != "" {
		t.Errorf("checks of the version 1 bundle (-then +now):\n%s", diff)
	}
	if len(r.OtherLogs) != 0 || r.Log == nil || len(r.Entries) != 4 || r.Entries[0].Log != r.Log.Origin {
		t.Errorf("logs: %+v and %+v, entries %+v", r.Log, r.OtherLogs, r.Entries)
	}
}

// freshV1 returns the fixture's bundle as version 1, with a version 1
// index the node signed: as a node and client before version 2 made it.
func freshV1(t *testing.T) *bundle.Bundle {
	t.Helper()
	b := fresh(t)
	b.Version = 1
	for i := range b.Evidence {
		b.Evidence[i].Log = ""
	}
	resignIndex(t, b, func(ix *bundle.Index) { ix.Version = 1 })
	return b
}

// resignIndex signs b's index anew by the development node after edit
// changed it.
func resignIndex(t *testing.T, b *bundle.Bundle, edit func(ix *bundle.Index)) {
	t.Helper()
	node, err := pki.LoadIdentity(filepath.Join(fx.dir, "node"))
	if err != nil {
		t.Fatal(err)
	}
	signed, err := cms.ParseSigned(b.Index)
	if err != nil {
		t.Fatal(err)
	}
	ix, err := bundle.ParseIndex(signed.Content)
	if err != nil {
		t.Fatal(err)
	}
	edit(ix)
	js, err := ix.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if b.Index, err = cms.Sign(js, pkitest.Signer(node)); err != nil {
		t.Fatal(err)
	}
}

func TestVerify_V1Written(t *testing.T) {
	o := roots()
	o.Since = []audit.File{{Name: "before.checkpoint", Data: fx.before}}
	r := verify(t, freshV1(t), o)
	if !r.OK() {
		t.Fatalf("a version 1 bundle does not verify:\n%s", dump(r))
	}
	wantCheck(t, r, audit.CheckFormat, "bundle.zip", audit.Pass, "a Kurier evidence bundle for message")
	for _, c := range r.Checks {
		if c.Name == audit.CheckLogKey {
			t.Errorf("a version 1 bundle with a log key check: %+v", c)
		}
	}
}

func TestTamper_V1(t *testing.T) {
	t.Run("drop the last evidence", func(t *testing.T) {
		b := freshV1(t)
		b.Evidence = b.Evidence[:3]
		r := verify(t, b, roots())
		wantFail(t, r, audit.CheckIndex, bundle.FileIndex, "the bundle lacks number 4")
	})
	t.Run("index of version 2", func(t *testing.T) {
		b := freshV1(t)
		resignIndex(t, b, func(ix *bundle.Index) { ix.Version = 2 })
		r := verify(t, b, roots())
		wantFail(t, r, audit.CheckIndex, bundle.FileIndex, "an index of format version 2 in a bundle of version 1")
	})
	t.Run("version 2 with an index of version 1", func(t *testing.T) {
		b := fresh(t)
		resignIndex(t, b, func(ix *bundle.Index) { ix.Version = 1 })
		r := verify(t, b, roots())
		wantFail(t, r, audit.CheckIndex, bundle.FileIndex, "an index of format version 1 in a bundle of version 2")
	})
	t.Run("index by another node", func(t *testing.T) {
		// Version 1's rule: the index's signer serves the issuer of
		// every node evidence.
		authority := copyCA(t)
		evil, err := authority.IssueNode(filepath.Join(t.TempDir(), "evil"), []string{"stadt.example"})
		if err != nil {
			t.Fatal(err)
		}
		b := freshV1(t)
		signed, err := cms.ParseSigned(b.Index)
		if err != nil {
			t.Fatal(err)
		}
		if b.Index, err = cms.Sign(signed.Content, pkitest.Signer(evil)); err != nil {
			t.Fatal(err)
		}
		r := verify(t, b, roots())
		wantCheck(t, r, audit.CheckIndexSignature, bundle.FileIndex, audit.Pass, "")
		wantFail(t, r, audit.CheckIndex, bundle.FileIndex, "which does not serve amtsgericht.example, the issuer of evidence/02-Delivery.p7m")
	})
}
