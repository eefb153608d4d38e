package daemon

import (
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// checkYAML compares a parsed config document with the shape of Config
// before it is decoded, so that every mistake is named by its YAML key
// and line ("limits.retention (line 12): ...") in the words of the
// config file, not of Go types as the decoder's errors are. It reports
// every mistake it finds.
func checkYAML(doc *yaml.Node) error {
	if doc.Kind == 0 || doc.Kind == yaml.DocumentNode && len(doc.Content) == 0 {
		return errors.New("the file is empty; deploy/kurierd.yaml is a complete example")
	}
	if doc.Kind == yaml.DocumentNode {
		doc = doc.Content[0]
	}
	return errors.Join(checkValue("", doc, reflect.TypeFor[Config]())...)
}

var durationType = reflect.TypeFor[time.Duration]()

// checkValue checks one value of type t at path.
func checkValue(path string, n *yaml.Node, t reflect.Type) []error {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil // left out: the default
	}
	bad := func(format string, args ...any) []error {
		return []error{fmt.Errorf("%s (line %d): %s", path, n.Line, fmt.Sprintf(format, args...))}
	}
	switch {
	case t == durationType:
		if n.Kind != yaml.ScalarNode {
			return bad("give a duration such as 720h")
		}
		// A bare number (0 too) is no duration to the decoder: it wants
		// the unit.
		if _, err := time.ParseDuration(n.Value); err != nil || n.Tag == "!!int" || n.Tag == "!!float" {
			return bad("%q is not a duration such as 90s, 15m or 720h (units h, m, s; there is none for days)", n.Value)
		}
		return nil
	case t.Kind() == reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return bad("give the keys %s here, one per line", strings.Join(yamlKeys(t), ", "))
		}
		return checkMapping(path, n, t)
	case t.Kind() == reflect.Map:
		if n.Kind != yaml.MappingNode {
			return bad("give one `name: value` line per entry here")
		}
		var errs []error
		for i := 0; i+1 < len(n.Content); i += 2 {
			errs = append(errs, checkValue(join(path, n.Content[i].Value), n.Content[i+1], t.Elem())...)
		}
		return errs
	case t.Kind() == reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return bad("give a list here: [a, b] or one `- item` line each")
		}
		var errs []error
		for i, item := range n.Content {
			errs = append(errs, checkValue(fmt.Sprintf("%s[%d]", path, i), item, t.Elem())...)
		}
		return errs
	}
	if n.Kind != yaml.ScalarNode {
		return bad("give a single value here, not a list or keys")
	}
	// The decoder's own reading of the value, in the config's words.
	if err := n.Decode(reflect.New(t).Interface()); err != nil {
		switch t.Kind() {
		case reflect.Int, reflect.Int64, reflect.Uint32:
			return bad("%q is not a whole number", n.Value)
		case reflect.Float64:
			return bad("%q is not a number", n.Value)
		case reflect.Bool:
			return bad("%q is neither true nor false", n.Value)
		}
		return bad("%q is not a valid value here", n.Value)
	}
	return nil
}

// checkMapping checks the keys of a YAML mapping against struct t.
func checkMapping(path string, n *yaml.Node, t reflect.Type) []error {
	fields := yamlFields(t)
	var errs []error
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		at := join(path, k.Value)
		if k.Tag == "!!merge" {
			// `<<: *defaults` merges the keys of another mapping here:
			// they are checked as if written here.
			errs = append(errs, checkMerged(path, n.Content[i+1], t)...)
			continue
		}
		ft, ok := fields[k.Value]
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("%s (line %d): no such key; the keys here are %s", at, k.Line, strings.Join(yamlKeys(t), ", ")))
		case seen[k.Value]:
			errs = append(errs, fmt.Errorf("%s (line %d): given twice", at, k.Line))
		default:
			errs = append(errs, checkValue(at, n.Content[i+1], ft)...)
		}
		seen[k.Value] = true
	}
	return errs
}

// checkMerged checks what a merge key brings in: a mapping, or a list of
// them, each against struct t.
func checkMerged(path string, n *yaml.Node, t reflect.Type) []error {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	switch n.Kind {
	case yaml.MappingNode:
		return checkMapping(path, n, t)
	case yaml.SequenceNode:
		var errs []error
		for _, m := range n.Content {
			errs = append(errs, checkMerged(path, m, t)...)
		}
		return errs
	}
	return []error{fmt.Errorf("%s (line %d): `<<` merges the keys of a mapping, such as *defaults", join(path, "<<"), n.Line)}
}

// yamlFields maps struct t's YAML keys to their types.
func yamlFields(t reflect.Type) map[string]reflect.Type {
	fields := map[string]reflect.Type{}
	for f := range t.Fields() {
		if name, _, _ := strings.Cut(f.Tag.Get("yaml"), ","); name != "" && name != "-" {
			fields[name] = f.Type
		}
	}
	return fields
}

// yamlKeys lists struct t's YAML keys, sorted.
func yamlKeys(t reflect.Type) []string {
	return slices.Sorted(maps.Keys(yamlFields(t)))
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}
