package policy

import (
	"net/http"
	"sort"
	"strings"
)

// VaryFields returns the lower-cased, de-duplicated, sorted field names listed
// in every Vary line ("*" included as a member when present anywhere).
func VaryFields(h http.Header) []string {
	lines := h.Values("Vary")
	if len(lines) == 0 {
		return nil
	}
	var out []string
	seen := map[string]bool{}
	for _, l := range lines {
		for _, f := range strings.Split(l, ",") {
			f = strings.ToLower(strings.TrimSpace(f))
			if f == "" || seen[f] {
				continue
			}
			seen[f] = true
			out = append(out, f)
		}
	}
	sort.Strings(out)
	return out
}

// SecondaryKey builds the normalised secondary cache key of a request for the
// given Vary fields (RFC 9111 4.1): all lines of a field are combined, list
// members trimmed of whitespace, so "gzip,br" and "gzip, br" match. An absent
// field and an empty field are distinguished. Accept-Encoding counts as its
// NormalizeAcceptEncoding form, as the origin is sent that form.
func SecondaryKey(fields []string, req http.Header) string {
	var b strings.Builder
	for _, f := range fields {
		b.WriteString(f)
		vals := req.Values(f)
		if len(vals) == 0 {
			b.WriteString("\x01") // absent
			continue
		}
		b.WriteByte('=')
		if f == "accept-encoding" {
			b.WriteString(NormalizeAcceptEncoding(vals))
			b.WriteByte('\x00')
			continue
		}
		first := true
		for _, v := range vals {
			for _, m := range strings.Split(v, ",") {
				m = strings.Join(strings.Fields(m), " ")
				if !first {
					b.WriteByte(',')
				}
				first = false
				b.WriteString(m)
			}
		}
		b.WriteByte('\x00')
	}
	return b.String()
}
