package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Locating YAML syntax errors.
//
// go.yaml.in/yaml/v3 renders a syntax error as "yaml: line N: problem". N
// comes from the parser's context mark when that is set and not on the first
// line, else from the problem mark. Marks count lines from 0, and only
// scanner errors add 1, so parser errors print a line one too early. The
// marks themselves are not exported. For the commonest mistake, a line
// indented wrongly inside a list or mapping, the context mark is the start of
// that block: "did not find expected '-' indicator" on line 3 of a list that
// starts on line 2 reads "line 1".
//
// Two kinds of re-parse recover the truth without copying the parser:
//
//   - The context line: parse the text again behind one extra empty line.
//     Every mark moves down a line, so the context mark is never on the first
//     line and is the one printed; the printed number, less the added line
//     (and less scanner errors' +1), is the 1-based line of the context mark.
//     For scanner errors that mark is where the scanner stopped (a ':' where
//     no value may start) or the start of what it was reading (a key without
//     ':', an unclosed quote), so it is the line to show.
//   - The problem line, for a parser error inside a block: parse growing
//     prefixes of the file, whole lines at a time, from the block's first
//     line. The parser reads the text once, front to back, and raises these
//     errors on the first token that does not fit the block; so the first
//     prefix that fails with the very same message ends on the line where
//     that token is, provided the prefix before it parses cleanly. Cutting
//     the text short cannot itself cause these messages: at the end of the
//     text the scanner closes every open block, and unclosed brackets or
//     quotes fail with other messages.
//
// When the lines before the problem line do not parse on their own (the
// problem line ends a quote or a bracket opened earlier), the token at fault
// may have started on an earlier line, and the message gives the range of
// lines it lies in.

// parserProblems are the problem texts yaml.v3 raises as parser (not scanner)
// errors (yaml_parser_set_parser_error* in parserc.go); yaml.v3 prints their
// mark without adding 1.
var parserProblems = map[string]bool{
	"did not find expected <stream-start>":   true,
	"did not find expected <document start>": true,
	"found undefined tag handle":             true,
	"did not find expected node content":     true,
	"did not find expected '-' indicator":    true,
	"did not find expected key":              true,
	"did not find expected ',' or ']'":       true,
	"did not find expected ',' or '}'":       true,
	"found duplicate %YAML directive":        true,
	"found incompatible YAML document":       true,
	"found duplicate %TAG directive":         true,
}

// blockProblems are the parser errors whose context mark is the start of a
// block list or mapping; the value names the block for the message.
var blockProblems = map[string]string{
	"did not find expected '-' indicator": "list",
	"did not find expected key":           "mapping",
}

// syntaxError turns a yaml.v3 parse error of data into an *Error at the line
// where the problem is (see the comment above).
func syntaxError(name string, data []byte, err error) *Error {
	line, problem := splitYAMLError(err.Error())
	e := &Error{File: name, Line: line, Msg: "YAML syntax: " + problem}
	ctx, ok := contextLine(data, problem)
	if !ok {
		// Keep yaml's own number: the file's line breaks or encoding are
		// ones this package does not count the way yaml does.
		return e
	}
	e.Line = ctx
	block, inBlock := blockProblems[problem]
	if !inBlock {
		return e
	}
	ends := lineEnds(data)
	prefix := func(k int) []byte { return data[:ends[k-1]] }
	same := func(k int) bool {
		perr := parseFirstDocument(prefix(k))
		return perr != nil && perr.Error() == err.Error()
	}
	clean := func(k int) bool { return k == 0 || parseFirstDocument(prefix(k)) == nil }
	// Bisect for a line k whose prefix fails as the whole file does while
	// the one before does not. If the lines before k parse cleanly, that
	// proves the offending token starts on line k; otherwise walk from the
	// block's start, so that k is the first such line, and report the range
	// back to the last clean prefix.
	lo, k := ctx-1, len(ends)
	for k-lo > 1 {
		if mid := (lo + k) / 2; same(mid) {
			k = mid
		} else {
			lo = mid
		}
	}
	if !clean(k - 1) {
		for k = ctx; k < len(ends) && !same(k); k++ {
		}
	}
	from := k
	for from > ctx && !clean(from-1) {
		from--
	}
	where := "in the " + block + " that starts on line " + strconv.Itoa(ctx)
	switch {
	case from < k:
		e.Line = from
		e.Msg += fmt.Sprintf(" (in lines %d to %d, %s)", from, k, where)
	case k != ctx:
		e.Line = k
		e.Msg += " (" + where + ")"
	}
	return e
}

// splitYAMLError splits "yaml: line N: problem" into N and problem; N is 0
// when yaml gave no line.
func splitYAMLError(msg string) (int, string) {
	msg = strings.TrimPrefix(msg, "yaml: ")
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if i := strings.IndexByte(rest, ':'); i > 0 {
			if n, err := strconv.Atoi(rest[:i]); err == nil {
				return n, strings.TrimSpace(rest[i+1:])
			}
		}
	}
	return 0, msg
}

// contextLine is the 1-based line of the mark yaml.v3 reports for problem,
// found by parsing data again one line further down.
func contextLine(data []byte, problem string) (int, bool) {
	// yaml.v3 also breaks lines at a lone CR, NEL, LS and PS, which editors
	// (and lineEnds) may not; UTF-16 text cannot take a UTF-8 newline.
	if bytes.Contains(bytes.ReplaceAll(data, []byte("\r\n"), nil), []byte("\r")) ||
		bytes.Contains(data, []byte("\u0085")) || bytes.Contains(data, []byte("\u2028")) || bytes.Contains(data, []byte("\u2029")) ||
		bytes.HasPrefix(data, []byte{0xfe, 0xff}) || bytes.HasPrefix(data, []byte{0xff, 0xfe}) {
		return 0, false
	}
	bom := []byte("\ufeff")
	shifted := make([]byte, 0, len(data)+1)
	if bytes.HasPrefix(data, bom) {
		shifted = append(append(append(shifted, bom...), '\n'), data[len(bom):]...)
	} else {
		shifted = append(append(shifted, '\n'), data...)
	}
	err := parseFirstDocument(shifted)
	if err == nil {
		return 0, false
	}
	n, p := splitYAMLError(err.Error())
	if p != problem {
		return 0, false
	}
	// A parser error prints the 0-based mark, which the added line turns
	// into the 1-based line; a scanner error prints one more.
	if !parserProblems[problem] {
		n--
	}
	if n < 1 || n > len(lineEnds(data)) {
		return 0, false
	}
	return n, true
}

// lineEnds lists the offset just past each line of data, its line break
// included; the last line may lack one.
func lineEnds(data []byte) []int {
	var ends []int
	for i, c := range data {
		if c == '\n' {
			ends = append(ends, i+1)
		}
	}
	if len(data) == 0 || data[len(data)-1] != '\n' {
		ends = append(ends, len(data))
	}
	return ends
}

// parseFirstDocument parses the first YAML document of data, as Parse does,
// and returns its syntax error if any.
func parseFirstDocument(data []byte) error {
	var n yaml.Node
	err := yaml.NewDecoder(bytes.NewReader(data)).Decode(&n)
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}
