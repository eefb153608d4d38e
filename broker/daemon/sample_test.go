package daemon

import (
	"os"
	"reflect"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// samplePath is the complete sample configuration that docs/OPERATIONS.md
// points operators to.
const samplePath = "../../deploy/kurierd.yaml"

// TestSampleConfig: the sample loads as it is, and sets and explains every
// key a config may have, so that it cannot fall behind Config.
func TestSampleConfig(t *testing.T) {
	if _, err := LoadConfig(samplePath); err != nil {
		t.Fatalf("the sample does not load: %v", err)
	}
	b, err := os.ReadFile(samplePath)
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	var walk func(path string, n *yaml.Node)
	walk = func(path string, n *yaml.Node) {
		switch n.Kind {
		case yaml.DocumentNode:
			walk(path, n.Content[0])
		case yaml.SequenceNode:
			for _, c := range n.Content {
				walk(path+"[]", c)
			}
		case yaml.MappingNode:
			explained := false // the key before, in the same block of lines, is
			for i := 0; i+1 < len(n.Content); i += 2 {
				k := n.Content[i]
				// A key is explained by a comment above it, or, within
				// limits:, by one above the block of keys it belongs to.
				inBlock := path != "" && i > 0 && k.Line == n.Content[i-2].Line+1
				explained = k.HeadComment != "" || inBlock && explained
				if !explained && !strings.HasSuffix(path, "[]") && path != "peers" {
					t.Errorf("%s: no comment explains it", join(path, k.Value))
				}
				have[join(path, k.Value)] = true
				walk(join(path, k.Value), n.Content[i+1])
			}
		}
	}
	walk("", &doc)
	for _, key := range configKeys("", reflect.TypeFor[Config]()) {
		if !have[key] {
			t.Errorf("the sample has no %s", key)
		}
	}
}

// configKeys lists the YAML keys of t, nested ones as parent.key; a list's
// items as parent[].key; the entries of a map are the operator's.
func configKeys(path string, t reflect.Type) []string {
	var keys []string
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		p := join(path, name)
		keys = append(keys, p)
		switch ft := f.Type; {
		case ft.Kind() == reflect.Struct && ft != durationType:
			keys = append(keys, configKeys(p, ft)...)
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
			keys = append(keys, configKeys(p+"[]", ft.Elem())...)
		}
	}
	return keys
}
