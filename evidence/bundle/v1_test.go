package bundle_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"kurier.dev/kurier/evidence/bundle"
	"kurier.dev/kurier/tlog"
)

// testdata/v1 holds a bundle of format version 1 as Kurier wrote it before
// version 2 (on a development node, with the code of that time), dated
// written, with the development CA's certificate (ca.pem), a checkpoint
// of the node's log from before the message (before.checkpoint), the
// node's log key (log.vkey) and the checks kurier verify made of it then
// (checks.json, with --since and --log-key). Package audit verifies it
// with these.
var v1Dir = filepath.Join("testdata", "v1")

func readV1(t testing.TB) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(v1Dir, "bundle.zip"))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestBundle_ReadV1(t *testing.T) {
	golden := readV1(t)
	b, err := read(golden)
	if err != nil {
		t.Fatalf("Read of a version 1 bundle: %v", err)
	}
	if b.Version != 1 || b.FormatVersion() != 1 || len(b.Logs) != 0 || len(b.Evidence) != 4 {
		t.Fatalf("read version %d with %d other logs and %d evidence, want version 1 with none and 4", b.Version, len(b.Logs), len(b.Evidence))
	}
	for _, e := range b.Evidence {
		if e.Log != "" {
			t.Errorf("%s is in log %q; version 1 names none", e.Name, e.Log)
		}
	}

	// Written again, it is the same file: the version 1 writer is the one
	// that wrote it.
	if again := write(t, b); !bytes.Equal(again, golden) {
		t.Error("a version 1 bundle read and written again differs from the file")
		want, got := entries(t, golden), entries(t, again)
		if diff := cmp.Diff(names(want), names(got)); diff != "" {
			t.Errorf("entries (-file +written):\n%s", diff)
		}
		for _, f := range want {
			if !bytes.Equal(f.data, got.get(f.name)) {
				t.Errorf("%s differs", f.name)
			}
		}
	}

	// Its manifest cannot pass for version 2, which names every evidence's
	// log.
	fs := entries(t, golden).manifest(t, func(m map[string]any) { m["version"] = 2 })
	if _, err := read(fs.zip(t)); !errors.Is(err, bundle.ErrFormat) || !strings.Contains(err.Error(), "not in the form Kurier writes") {
		t.Errorf("Read of a version 1 manifest claiming version 2 = %v, want ErrFormat", err)
	}
}

func names(fs files) []string {
	var out []string
	for _, f := range fs {
		out = append(out, f.name)
	}
	return out
}

func TestBundle_WriteV1(t *testing.T) {
	b := fresh(t)
	b.Version = 1
	for i := range b.Evidence {
		b.Evidence[i].Log = ""
	}
	data := write(t, b)
	got, err := read(data)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	if diff := cmp.Diff(b, got, sameBundle...); diff != "" {
		t.Errorf("read back (-wrote +read):\n%s", diff)
	}
	fs := entries(t, data)
	if m := fs.get(bundle.FileManifest); !bytes.Contains(m, []byte(`"version": 1,`)) || bytes.Contains(m, []byte(`"log"`)) || bytes.Contains(m, []byte(`"logs"`)) {
		t.Errorf("version 1 manifest:\n%s", m)
	}
	if readme := fs.get(bundle.FileReadme); !bytes.Equal(readme, entries(t, readV1(t)).get(bundle.FileReadme)) {
		t.Errorf("version 1 README.txt is not the one version 1 bundles hold:\n%s", readme)
	}

	for name, change := range map[string]func(b *bundle.Bundle){
		"with an evidence's log": func(b *bundle.Bundle) { b.Evidence[0].Log = tlog.Origin("stadt.example") },
		"with other logs":        func(b *bundle.Bundle) { b.Logs = withLogs(t).Logs },
	} {
		t.Run(name, func(t *testing.T) {
			b := fresh(t)
			b.Version = 1
			for i := range b.Evidence {
				b.Evidence[i].Log = ""
			}
			change(b)
			if err := b.Write(&bytes.Buffer{}, written); !errors.Is(err, bundle.ErrFormat) {
				t.Errorf("Write = %v, want ErrFormat", err)
			}
		})
	}
}
