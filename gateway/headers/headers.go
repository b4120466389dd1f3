// Package headers applies a site's configured header changes, nginx's
// add_header and proxy_set_header, Cloudflare's transform rules,
// CloudFront's response headers policies: fields set (replacing what the
// origin sent) and fields removed, on the responses a site's clients get
// and on the requests its origins get. It must not decide which responses
// they apply to; the cache and the origin pool call it.
package headers

import (
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// Policy is one direction's changes. A nil *Policy changes nothing.
type Policy struct {
	set    []field
	remove []string // canonical names
}

type field struct{ name, value string }

// responseOwned are the response fields a policy may not touch: those
// that frame the message or say what the PoP did with it, which the PoP
// writes per response.
var responseOwned = []string{"Age", "Cache-Status", "Connection", "Content-Encoding", "Content-Length", "Content-Range",
	"Date", "Keep-Alive", "Proxy-Connection", "Te", "Trailer", "Transfer-Encoding", "Upgrade", "Via", "X-Request-Id"}

// requestOwned are the request fields a policy may not touch: framing,
// the Host (origins[].host_header sets it), the PoP's loop and path
// marks, and what the cache sends to fill and revalidate what it stores
// (a configured Accept-Encoding would store one coding under another
// client's variant; a Range or a validator would turn a fill into a
// part or a 304).
var requestOwned = []string{"Accept-Encoding", "Cdn-Loop", "Connection", "Content-Length", "Host", "If-Match",
	"If-Modified-Since", "If-None-Match", "If-Range", "If-Unmodified-Since", "Keep-Alive", "Proxy-Connection", "Range",
	"Te", "Trailer", "Transfer-Encoding", "Upgrade", "Via"}

// ForResponses makes the policy for responses: set replaces (or adds)
// each field, remove drops each. It refuses invalid names and values, and
// the fields the PoP owns (Content-Length, Via, Cache-Status, ...).
func ForResponses(set map[string]string, remove []string) (*Policy, error) {
	return build(set, remove, responseOwned)
}

// ForRequests makes the policy for requests to origins, as ForResponses
// does; Host and the framing fields are refused.
func ForRequests(set map[string]string, remove []string) (*Policy, error) {
	return build(set, remove, requestOwned)
}

func build(set map[string]string, remove []string, owned []string) (*Policy, error) {
	if len(set) == 0 && len(remove) == 0 {
		return nil, nil
	}
	p := &Policy{}
	check := func(name string) (string, error) {
		if !httpguts.ValidHeaderFieldName(name) {
			return "", fmt.Errorf("%q is not a header field name", name)
		}
		c := http.CanonicalHeaderKey(name)
		if slices.Contains(owned, c) {
			return "", fmt.Errorf("%s is written by the PoP for each message (or for what the cache stores) and cannot be configured", c)
		}
		return c, nil
	}
	for name, value := range set {
		c, err := check(name)
		if err != nil {
			return nil, err
		}
		if !httpguts.ValidHeaderFieldValue(value) || strings.TrimSpace(value) != value {
			return nil, fmt.Errorf("%s: %q is not a header field value (control characters, or spaces at an end)", c, value)
		}
		if slices.ContainsFunc(p.set, func(f field) bool { return f.name == c }) {
			return nil, fmt.Errorf("%s is set twice (names are case-insensitive); keep one", c)
		}
		p.set = append(p.set, field{c, value})
	}
	for _, name := range remove {
		c, err := check(name)
		if err != nil {
			return nil, err
		}
		if slices.ContainsFunc(p.set, func(f field) bool { return f.name == c }) {
			return nil, fmt.Errorf("%s is both set and removed; keep one", c)
		}
		p.remove = append(p.remove, c)
	}
	slices.SortFunc(p.set, func(a, b field) int { return strings.Compare(a.name, b.name) })
	return p, nil
}

// Merge returns the changes of base and then over in one policy: over's
// set or remove of a field replaces base's for it. Either may be nil.
func Merge(base, over *Policy) *Policy {
	switch {
	case over == nil:
		return base
	case base == nil:
		return over
	}
	touched := func(name string) bool {
		return slices.Contains(over.remove, name) || slices.ContainsFunc(over.set, func(f field) bool { return f.name == name })
	}
	m := &Policy{}
	for _, f := range base.set {
		if !touched(f.name) {
			m.set = append(m.set, f)
		}
	}
	for _, n := range base.remove {
		if !touched(n) {
			m.remove = append(m.remove, n)
		}
	}
	m.set = append(m.set, over.set...)
	m.remove = append(m.remove, over.remove...)
	slices.SortFunc(m.set, func(a, b field) int { return strings.Compare(a.name, b.name) })
	return m
}

// Apply changes h in place.
func (p *Policy) Apply(h http.Header) {
	if p == nil {
		return
	}
	for _, n := range p.remove {
		delete(h, n)
	}
	for _, f := range p.set {
		h[f.name] = []string{f.value}
	}
}

// Applied returns a copy of h with the changes, leaving h as it is (a
// stored response's header, shared by every reader).
func (p *Policy) Applied(h http.Header) http.Header {
	if p == nil {
		return h
	}
	c := h.Clone()
	if c == nil {
		c = http.Header{}
	}
	p.Apply(c)
	return c
}

// Wrap returns w with the changes applied to the header of the final
// response when it is written (informational 1xx answers are left as
// they are). It keeps w's Flush, ReadFrom and, through Unwrap, Hijack.
func (p *Policy) Wrap(w http.ResponseWriter) http.ResponseWriter {
	if p == nil {
		return w
	}
	return &writer{ResponseWriter: w, p: p}
}

type writer struct {
	http.ResponseWriter
	p    *Policy
	done bool
}

// WriteHeader applies the policy once, before the final status.
func (w *writer) WriteHeader(code int) {
	if !w.done && code >= 200 {
		w.done = true
		w.p.Apply(w.ResponseWriter.Header())
	}
	w.ResponseWriter.WriteHeader(code)
}

// Write sends the header first, as net/http does for a Write without one.
func (w *writer) Write(b []byte) (int, error) {
	if !w.done {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

// ReadFrom keeps the underlying writer's sendfile path.
func (w *writer) ReadFrom(r io.Reader) (int64, error) {
	if !w.done {
		w.WriteHeader(http.StatusOK)
	}
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(w.ResponseWriter, r)
}

// Flush sends what is buffered, the header first.
func (w *writer) Flush() {
	if !w.done {
		w.WriteHeader(http.StatusOK)
	}
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *writer) Unwrap() http.ResponseWriter { return w.ResponseWriter }
