package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Error is one problem in a configuration file, located by line and field.
type Error struct {
	File  string
	Line  int
	Field string
	Msg   string
}

// Error renders "file:line: field: message", the form editors can jump to.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		b.WriteString(":" + strconv.Itoa(e.Line))
	}
	if e.Field != "" {
		b.WriteString(": " + e.Field)
	}
	b.WriteString(": " + e.Msg)
	return b.String()
}

// Load reads, checks and validates a configuration file, applying defaults.
// Every problem found is returned, joined, each as an *Error.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(path, data)
}

// Parse is Load for bytes already read; name is used in error messages.
func Parse(name string, data []byte) (*Config, error) {
	// yaml reports a tab in the indentation on the line before it; the
	// mistake is common enough to find it ourselves.
	for i, line := range strings.Split(string(data), "\n") {
		indent := line[:len(line)-len(strings.TrimLeft(line, " \t"))]
		if strings.Contains(indent, "\t") {
			return nil, &Error{File: name, Line: i + 1, Msg: "YAML syntax: a tab in the indentation; indent with spaces"}
		}
	}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &Error{File: name, Msg: "file is empty; see deploy/reference.yaml for a complete example"}
		}
		return nil, syntaxError(name, data, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, &Error{File: name, Line: extra.Line, Msg: "more than one YAML document; put the whole configuration in one"}
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	w := walker{file: name, lines: map[string]int{}, zero: map[string]bool{}}
	if !w.check(root, reflect.TypeFor[Config](), "") {
		return nil, joinSorted(w.errs)
	}
	// The walker replaced every rejected value by null and dropped repeated
	// keys, so the rest decodes and is validated in the same run: a typo in
	// one place does not hide a range error in another.
	cfg := &Config{}
	if err := root.Decode(cfg); err != nil {
		if len(w.errs) > 0 {
			return nil, joinSorted(w.errs)
		}
		// The walker checked shapes and scalars already; reaching here means a
		// case it does not know, so keep yaml's own words.
		return nil, &Error{File: name, Msg: err.Error()}
	}
	applyDefaults(cfg)
	errs := w.errs
	for _, e := range validate(cfg, w.zero) {
		if w.masks(e.Field) || w.misspelled(e.Field) {
			continue
		}
		e.File = name
		e.Line = w.line(e.Field)
		errs = append(errs, e)
	}
	if len(errs) > 0 {
		return nil, joinSorted(errs)
	}
	return cfg, nil
}

func joinSorted(errs []*Error) error {
	sort.SliceStable(errs, func(i, j int) bool { return errs[i].Line < errs[j].Line })
	out := make([]error, len(errs))
	for i, e := range errs {
		out[i] = e
	}
	return errors.Join(out...)
}

// walker checks the YAML tree against the Go types before decoding, so that
// an unknown key or a wrong type is reported with its field path, and records
// the line of every field for validation errors found later. It edits the
// tree so that it decodes despite the errors: a rejected value becomes null
// (the field keeps its default) and a repeated key is dropped.
type walker struct {
	file  string
	lines map[string]int
	errs  []*Error
	// rejected lists the paths whose value was replaced or dropped.
	rejected []string
	// suggested lists the fields an unknown key was probably meant to be
	// (pops[1].region for pops[1].regoin): their "missing" errors only
	// follow from the typo, which is reported with the suggestion.
	suggested []string
	// zero lists the duration fields set explicitly to 0, which defaults
	// would otherwise turn into their default without a word.
	zero map[string]bool
}

// misspelled tells whether a validation error on field only follows from
// an unknown key that was a misspelling of it (or of what contains it).
func (w *walker) misspelled(field string) bool {
	for _, p := range w.suggested {
		if field == p || within(field, p) {
			return true
		}
	}
	return false
}

// suggest returns the field name key was probably meant to be: the
// closest of names within an edit distance of 2 (a transposition counts
// one), or "".
func suggest(key string, names []string) string {
	best, bestD := "", 3
	for _, n := range names {
		if d := editDistance(key, n); d < bestD && d < len(key) {
			best, bestD = n, d
		}
	}
	return best
}

// editDistance is the optimal string alignment distance of a and b:
// insertions, deletions, substitutions and transpositions of neighbours.
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev2 := make([]int, len(rb)+1)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(rb)]
}

func (w *walker) fail(n *yaml.Node, path, format string, args ...any) {
	w.errs = append(w.errs, &Error{File: w.file, Line: n.Line, Field: path, Msg: fmt.Sprintf(format, args...)})
}

// reject reports a value that cannot be decoded as its field's type.
func (w *walker) reject(n *yaml.Node, path, format string, args ...any) {
	w.fail(n, path, format, args...)
	w.rejected = append(w.rejected, path)
}

// masks tells whether a validation error on field may only follow from a
// rejected value, which validation saw as unset: errors on the value itself,
// on what it contains or what contains it, and on the rest of its record
// (the PoP, site, zone or section it is in), whose checks compare fields with
// each other. Site names and defaults are also checked from plugins and tls.
func (w *walker) masks(field string) bool {
	for _, p := range w.rejected {
		if field == p || within(field, p) || within(p, field) {
			return true
		}
		if r := record(p); field == r || within(field, r) {
			return true
		}
		if (p == "sites" || within(p, "sites")) && (field == "tls.unknown_sni" || field == "plugins.sdk_sites" || within(field, "plugins.sdk_sites")) {
			return true
		}
	}
	return false
}

// within tells whether path lies inside the field or list at parent.
func within(path, parent string) bool {
	return strings.HasPrefix(path, parent+".") || strings.HasPrefix(path, parent+"[")
}

// record is the list item or section that path belongs to: "pops[0]" for
// "pops[0].cache.l1_size", "nats" for "nats.stream_replicas".
func record(path string) string {
	if i := strings.IndexByte(path, ']'); i >= 0 {
		return path[:i+1]
	}
	if i := strings.LastIndexByte(path, '.'); i >= 0 {
		return path[:i]
	}
	return path
}

// null stands in for a rejected value n.
func null(n *yaml.Node) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Line: n.Line, Column: n.Column}
}

// line finds the line of path, or of its nearest recorded parent, so that a
// missing field is reported where its parent stands.
func (w *walker) line(path string) int {
	for path != "" {
		if l, ok := w.lines[path]; ok {
			return l
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			break
		}
		path = path[:i]
	}
	return w.lines[""]
}

var (
	durationType = reflect.TypeFor[time.Duration]()
	byteSizeType = reflect.TypeFor[ByteSize]()
)

func yamlName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	return name
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// check checks n against t and reports whether n itself is acceptable; when
// it is not, the caller puts null in its place.
func (w *walker) check(n *yaml.Node, t reflect.Type, path string) bool {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	w.lines[path] = n.Line
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return true // an empty value keeps the default
	}
	rejected := len(w.rejected)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t == durationType:
		if n.Kind != yaml.ScalarNode {
			w.reject(n, path, "expected a duration like 30s or 5m, got a %s", kindName(n))
		} else if d, err := time.ParseDuration(n.Value); err != nil {
			w.reject(n, path, "%q is not a duration; expected a number with a unit, like 30s, 5m or 1h", n.Value)
		} else if d == 0 {
			w.zero[path] = true
		}
		return len(w.rejected) == rejected
	case t == byteSizeType:
		if n.Kind != yaml.ScalarNode {
			w.reject(n, path, "expected a size like 512MiB, got a %s", kindName(n))
		} else if _, err := ParseByteSize(n.Value); err != nil {
			w.reject(n, path, "%v", err)
		}
		return len(w.rejected) == rejected
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			w.reject(n, path, "expected a mapping of fields, got a %s", kindName(n))
			return false
		}
		fields := map[string]reflect.StructField{}
		var names []string
		for i := range t.NumField() {
			f := t.Field(i)
			if name := yamlName(f); name != "" && name != "-" {
				fields[name] = f
				names = append(names, name)
			}
		}
		seen := map[string]int{}
		kept := n.Content[:0:0]
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			f, ok := fields[k.Value]
			if !ok {
				if s := suggest(k.Value, names); s != "" {
					w.fail(k, join(path, k.Value), "unknown field; did you mean %s? expected one of %s", s, strings.Join(names, ", "))
					w.suggested = append(w.suggested, join(path, s))
				} else {
					w.fail(k, join(path, k.Value), "unknown field; expected one of %s", strings.Join(names, ", "))
				}
				continue
			}
			if first, dup := seen[k.Value]; dup {
				// yaml.v3 refuses a whole mapping with a repeated key;
				// keep the first.
				w.reject(k, join(path, k.Value), "set twice (first at line %d)", first)
				continue
			}
			seen[k.Value] = k.Line
			w.lines[join(path, k.Value)] = k.Line
			if !w.check(v, f.Type, join(path, k.Value)) {
				v = null(v)
			}
			kept = append(kept, k, v)
		}
		n.Content = kept
		return true
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			w.reject(n, path, "expected a list, got a %s", kindName(n))
			return false
		}
		for i, item := range n.Content {
			if !w.check(item, t.Elem(), fmt.Sprintf("%s[%d]", path, i)) {
				n.Content[i] = null(item)
			}
		}
		return true
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			w.reject(n, path, "expected a mapping, got a %s", kindName(n))
			return false
		}
		kept := n.Content[:0:0]
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if !w.check(k, t.Key(), join(path, k.Value)) {
				continue
			}
			if !w.check(v, t.Elem(), join(path, k.Value)) {
				v = null(v)
			}
			kept = append(kept, k, v)
		}
		n.Content = kept
		return true
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			w.reject(n, path, "expected a string, got a %s", kindName(n))
		}
	case reflect.Bool:
		if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" {
			w.reject(n, path, "expected true or false, got %s", describe(n))
		}
	case reflect.Int, reflect.Int64, reflect.Int32:
		if n.Kind != yaml.ScalarNode || n.Tag != "!!int" {
			w.reject(n, path, "expected a whole number, got %s", describe(n))
		} else if _, err := strconv.ParseInt(n.Value, 0, t.Bits()); err != nil {
			w.reject(n, path, "%s does not fit a %d-bit number", n.Value, t.Bits())
		}
	case reflect.Uint32, reflect.Uint64, reflect.Uint:
		if n.Kind != yaml.ScalarNode || n.Tag != "!!int" {
			w.reject(n, path, "expected a whole number, got %s", describe(n))
		} else if _, err := strconv.ParseUint(n.Value, 0, t.Bits()); err != nil {
			w.reject(n, path, "%s is not a whole number in [0, %d]", n.Value, uint64(1)<<t.Bits()-1)
		}
	case reflect.Float64:
		if n.Kind != yaml.ScalarNode || (n.Tag != "!!float" && n.Tag != "!!int") {
			w.reject(n, path, "expected a number, got %s", describe(n))
		}
	default:
		w.reject(n, path, "field of unsupported type %s (a bug in meridian; please report it)", t)
	}
	return len(w.rejected) == rejected
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "list"
	default:
		return "scalar"
	}
}

func describe(n *yaml.Node) string {
	if n.Kind == yaml.ScalarNode {
		return strconv.Quote(n.Value)
	}
	return "a " + kindName(n)
}
