package bundle_test

import (
	"archive/zip"
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestBundle_RezippedInfoZIP: a genuine bundle unzipped and zipped again
// with Info-ZIP, as a compliance officer's archive might do it (folder
// entries, its extra fields, its own order; stored or deflated), reads
// as the same bundle.
func TestBundle_RezippedInfoZIP(t *testing.T) {
	zipTool, err := exec.LookPath("zip")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("zip not on PATH, and CI=true: install it (apt-get install zip)")
		}
		t.Skip("zip (Info-ZIP) not on PATH; install it with apt-get install zip")
	}
	want := fresh(t)
	dir := t.TempDir()
	for _, f := range entries(t, fx.zip) {
		p := filepath.Join(dir, filepath.FromSlash(f.name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, f.data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for name, flags := range map[string][]string{"deflated": {"-r", "-q"}, "stored": {"-r", "-q", "-0"}} {
		t.Run(name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "rezipped.zip")
			cmd := exec.Command(zipTool, append(flags, out, ".")...)
			cmd.Dir = dir
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("zip: %v\n%s", err, b)
			}
			data, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.ContainsFunc(zipNames(t, data), func(n string) bool { return strings.HasSuffix(n, "/") }) {
				t.Fatal("the re-zipped bundle has no folder entry; the test would show nothing")
			}
			got, err := read(data)
			if err != nil {
				t.Fatalf("Read of the re-zipped bundle: %v", err)
			}
			if diff := cmp.Diff(want, got, sameBundle...); diff != "" {
				t.Errorf("the re-zipped bundle reads differently (-want +got):\n%s", diff)
			}
		})
	}
}

// TestHostile_RezippedEntries: what re-zipping adds is taken only as far
// as it is harmless. Folder entries of the bundle's own folders, another
// order and stored entries pass; other folders, a folder entry with
// content, a symbolic link and a file outside the format are refused.
func TestHostile_RezippedEntries(t *testing.T) {
	orig := entries(t, fx.zip)
	slices.Reverse(orig)
	build := func(t *testing.T, extra ...zip.FileHeader) []byte {
		var buf bytes.Buffer
		zw := zip.NewWriter(&buf)
		var rename []string
		for _, h := range extra {
			if h.Comment != "content" {
				if _, err := zw.CreateHeader(&h); err != nil {
					t.Fatal(err)
				}
				continue
			}
			// The zip package writes no content into a folder: written
			// under a stand-in name with a trailing "_", renamed below.
			folder := strings.HasSuffix(h.Name, "/")
			if folder {
				h.Name = strings.TrimSuffix(h.Name, "/") + "_"
				rename = append(rename, h.Name)
			}
			h.Comment = ""
			w, err := zw.CreateHeader(&h)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.Write([]byte("x")); err != nil {
				t.Fatal(err)
			}
		}
		for _, f := range orig {
			w, err := zw.CreateHeader(&zip.FileHeader{Name: f.name, Method: zip.Store})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.Write(f.data); err != nil {
				t.Fatal(err)
			}
		}
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
		out := buf.Bytes()
		for _, n := range rename {
			out = bytes.ReplaceAll(out, []byte(n), []byte(strings.TrimSuffix(n, "_")+"/"))
		}
		return out
	}
	dir := func(name string) zip.FileHeader {
		h := zip.FileHeader{Name: name}
		h.SetMode(fs.ModeDir | 0o755)
		return h
	}
	link := zip.FileHeader{Name: "evidence/99-Delivery.p7m"}
	link.SetMode(fs.ModeSymlink | 0o777)
	for _, tc := range []struct {
		name  string
		extra []zip.FileHeader
		want  string // "" for a bundle that reads
	}{
		{"own folders, reversed, stored", []zip.FileHeader{dir("evidence/"), dir("logs/"), dir("logs/amtsgericht.example/")}, ""},
		{"the content folder", []zip.FileHeader{dir("content/")}, ""},
		{"a nested content folder", []zip.FileHeader{dir("content/more/")}, `unexpected entry "content/more/"`},
		{"another file in the content folder", []zip.FileHeader{{Name: "content/klage.pdf", Comment: "content"}}, `unexpected entry "content/klage.pdf"`},
		{"a folder of its own", []zip.FileHeader{dir("__MACOSX/")}, `unexpected entry "__MACOSX/"`},
		{"a folder outside", []zip.FileHeader{dir("../")}, `unexpected entry "../"`},
		{"a nested folder", []zip.FileHeader{dir("evidence/more/")}, `unexpected entry "evidence/more/"`},
		{"a folder with content", []zip.FileHeader{{Name: "evidence/", Comment: "content"}}, `unexpected entry "evidence/"`},
		{"a symbolic link", []zip.FileHeader{link}, "is not a regular file"},
		{"a file outside the format", []zip.FileHeader{{Name: ".DS_Store", Comment: "content"}}, `unexpected entry ".DS_Store"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := read(build(t, tc.extra...))
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Read: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("Read: %v, want an error saying %s", err, tc.want)
			}
		})
	}
}

// zipNames lists a zip file's entry names.
func zipNames(t *testing.T, data []byte) []string {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range zr.File {
		names = append(names, f.Name)
	}
	return names
}
