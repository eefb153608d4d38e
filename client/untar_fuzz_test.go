package client

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"kurier.dev/kurier/envelope"
)

// manifestOf reads a fuzzed manifest, one "name:size" a line, keeping only
// what an envelope could list (envelope.CheckFileName), and at most eight
// files: each is synced to disk, which would leave little time to fuzz.
func manifestOf(s string) []envelope.File {
	var out []envelope.File
	for line := range strings.Lines(s) {
		if len(out) == 8 {
			break
		}
		name, size, ok := strings.Cut(strings.TrimSuffix(line, "\n"), ":")
		n, err := strconv.ParseInt(size, 10, 64)
		if !ok || err != nil || n < 0 || envelope.CheckFileName(name) != nil {
			continue
		}
		out = append(out, envelope.File{Name: name, Size: n})
	}
	return out
}

func manifestText(docs []Document) string {
	var b strings.Builder
	for _, d := range docs {
		b.WriteString(d.Name + ":" + strconv.Itoa(len(d.Data)) + "\n")
	}
	return b.String()
}

// rawTar packs headers as they are, for entries the client never writes.
func rawTar(f *testing.F, hdrs ...*tar.Header) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range hdrs {
		if err := tw.WriteHeader(h); err != nil {
			f.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			tw.Write(make([]byte, h.Size))
		}
	}
	tw.Close()
	return buf.Bytes()
}

// FuzzHostile_Untar unpacks a document bundle against a manifest, both as a
// sender could make them. Whatever they hold, untar writes nothing outside
// its folder; when it succeeds the folder holds exactly the manifest's
// files with their sizes, in its order; when it fails its error stays
// short, whatever names the bundle carries. The seeds are bundles as the
// client packs them and entries it never writes (directories, links, paths,
// long names).
func FuzzHostile_Untar(f *testing.F) {
	seeds := [][]Document{
		{{Name: "klage.pdf", Data: []byte("%PDF-1.7 …")}},
		{{Name: "a.txt", Data: []byte("eins")}, {Name: "b.txt", Data: nil}, {Name: "Anlage K1 – Vertrag.pdf", Data: bytes.Repeat([]byte("x"), 700)}},
		{{Name: strings.Repeat("n", 200) + ".txt", Data: []byte("long name, PAX")}},
	}
	for _, docs := range seeds {
		var b bytes.Buffer
		if _, err := writeTar(&b, docs); err != nil {
			f.Fatal(err)
		}
		f.Add(b.Bytes(), manifestText(docs))
	}
	f.Add(rawTar(f, &tar.Header{Typeflag: tar.TypeDir, Name: "sub/", Mode: 0o755}), "sub:0\n")
	f.Add(rawTar(f, &tar.Header{Typeflag: tar.TypeSymlink, Name: "a.txt", Linkname: "/etc/passwd"}), "a.txt:0\n")
	f.Add(rawTar(f, &tar.Header{Typeflag: tar.TypeSymlink, Name: strings.Repeat("lang", 1000), Linkname: "/etc/passwd"}), "a.txt:0\n")
	f.Add(rawTar(f, &tar.Header{Typeflag: tar.TypeReg, Name: "../a.txt", Size: 3, Mode: 0o644}), "a.txt:3\n")
	f.Add(rawTar(f, &tar.Header{Typeflag: tar.TypeReg, Name: "a.txt", Size: 3, Mode: 0o644}, &tar.Header{Typeflag: tar.TypeReg, Name: "a.txt", Size: 3, Mode: 0o644}), "a.txt:3\na.txt:3\n")
	f.Add(rawTar(f, &tar.Header{Typeflag: tar.TypeReg, Name: strings.Repeat("\u202e", 3000), Size: 1, Mode: 0o644}), "a.txt:1\n")
	f.Add([]byte("not a tar file"), "a.txt:1\n")

	f.Fuzz(func(t *testing.T, bundle []byte, manifestText string) {
		manifest := manifestOf(manifestText)
		root := t.TempDir()
		into := filepath.Join(root, "files")
		if err := os.Mkdir(into, 0o700); err != nil {
			t.Fatal(err)
		}
		names, err := untar(bytes.NewReader(bundle), manifest, into, int64(len(bundle)))
		if outside, _ := os.ReadDir(root); len(outside) != 1 {
			t.Fatalf("untar wrote beside its folder: %v", outside)
		}
		if err != nil {
			if len(err.Error()) > 512 {
				t.Fatalf("an error of %d bytes: %.200q…", len(err.Error()), err.Error())
			}
			return
		}
		entries, rerr := os.ReadDir(into)
		if rerr != nil || len(entries) != len(manifest) || len(names) != len(manifest) {
			t.Fatalf("untar succeeded with %d names and %d files (%v) for a manifest of %d", len(names), len(entries), rerr, len(manifest))
		}
		for i, m := range manifest {
			fi, err := os.Lstat(filepath.Join(into, m.Name))
			if names[i] != m.Name || err != nil || !fi.Mode().IsRegular() || fi.Size() != m.Size {
				t.Fatalf("file %d: %q, %v, %v; the manifest lists %q of %d bytes", i, names[i], fi, err, m.Name, m.Size)
			}
		}
	})
}
