package cache

import (
	"bytes"
	"net/http"
	"net/netip"
	"net/textproto"
	"strconv"
	"strings"
	"time"

	"github.com/meridian-edge/meridian/gateway/proxy"
	"golang.org/x/net/http/httpguts"
)

// Why hooks on the fast path: a site's plugin chain (middleware/plugin) runs
// around the cache, and without hooks here every request of a site with a
// plugin went through net/http, at about twice the CPU of a fast hit
// before the plugin itself cost anything (BenchmarkPoPHitWrk in
// middleware/plugin: 21-23 µs against 9-10 µs per hit). With hooks, the
// fast path runs the chain's request phase before its lookup (with the
// request headers and cache key it set), answers the hit when the chain
// asked for nothing more (FastCall.Plain), and runs the response phase on
// the answer's header block. When it cannot answer after the chain ran (a
// miss, a rewrite, a direct answer), it hands the connection to net/http
// with the call, and the chain's middleware there takes the call over
// (TakeFastCall) instead of running the plugins a second time: a plugin
// sees each request once, whichever path serves it.

// FastHooks runs a site's request and response hooks on the fast path; the
// plugin middleware implements it. Route it with WithFastHooks.
type FastHooks interface {
	// BeginFast runs the request hooks for req. With ok false the hooks
	// did not run and will not run here: the request goes to the server
	// untouched. With call nil and ok true no hook applies to this
	// request, and the fast path serves it as for a site without hooks.
	BeginFast(req *FastHookRequest) (call FastCall, ok bool)
}

// FastCall is one request's run through FastHooks, from its request phase
// on. Exactly one owner ends it: the fast path, after its answer, or the
// middleware that takes it over from the server's handler chain
// (TakeFastCall); a call nobody took is closed with its connection.
type FastCall interface {
	// Plain reports whether the request hooks asked for nothing the fast
	// path cannot do on a hit: they changed request and response headers,
	// chose a cache key (CacheKey), or decided what matters on a miss only
	// (origin, TTL); they did not rewrite the request, forbid storing or
	// answer. Only then may the fast path serve the request.
	Plain() bool
	// CacheKey is the cache key the hooks chose ("": the URL's), as
	// WithKey gives it to the handler.
	CacheKey() string
	// RequestHeaderChanges returns the request header changes in the order
	// made (the caller must not change them).
	RequestHeaderChanges() []HeaderChange
	// Response runs the response hooks on an answer about to be sent, with
	// its status and header fields, which they may change. False means a
	// fail-closed chain's hook failed: send FailBody as a 503 instead.
	Response(status int, h *FastHeader) bool
	// FailBody is the body of the 503 a failed fail-closed chain answers
	// to the request of id.
	FailBody(id string) string
	// Close ends the call.
	Close()
}

// HeaderChange is a change a hook made to a request header: Name
// (canonical) removed, or set to the single Value.
type HeaderChange struct {
	Name, Value string
	Remove      bool
}

// FastHookRequest is a request on the fast path as its hooks see it: valid
// during BeginFast only (its views point into the connection's buffer).
type FastHookRequest struct {
	// Method is GET or HEAD; Host as sent; Path the escaped path and
	// RawQuery the query without '?'.
	Method, Host, Path, RawQuery string
	// Client is the connection's remote address.
	Client netip.AddrPort
	// Start is when the request's head was read (a monotonic clock
	// reading): hooks that time the request start from it instead of
	// reading the clock again.
	Start time.Time
	req   *fastRequest
	// idName is the request ID header (lower case) and id the request's
	// ID, which replaces what the client sent in it, as the server's
	// middleware does; idName "" without IDs.
	idName, id string
}

// Values returns the request's values of header name (any case), as
// net/http's Header would hold them after the request ID middleware.
func (r *FastHookRequest) Values(name string) []string {
	if r.idName != "" && len(name) == len(r.idName) && strings.EqualFold(name, r.idName) {
		return []string{r.id}
	}
	var vs []string
	for _, f := range r.req.fields[:r.req.nf] {
		if len(f[0]) == len(name) && strings.EqualFold(string(f[0]), name) && !fold(f[0], "host") {
			vs = append(vs, string(f[1]))
		}
	}
	return vs
}

// Each calls fn for each header field (name canonical) but Host, in the
// order sent.
func (r *FastHookRequest) Each(fn func(name, value string)) {
	for _, f := range r.req.fields[:r.req.nf] {
		if fold(f[0], "host") || (r.idName != "" && fold(f[0], r.idName)) {
			continue
		}
		fn(textproto.CanonicalMIMEHeaderKey(string(f[0])), string(f[1]))
	}
	if r.idName != "" {
		fn(textproto.CanonicalMIMEHeaderKey(r.idName), r.id)
	}
}

// WithFastHooks returns h, a handler made by this package's Cache.Handler,
// for FastOptions.Route, with hooks the fast path runs around its answers
// for h's site. Any other handler is returned as is.
func WithFastHooks(h http.Handler, hooks FastHooks) http.Handler {
	sh, ok := h.(*siteHandler)
	if !ok || hooks == nil {
		return h
	}
	return &hookedSite{siteHandler: sh, hooks: hooks}
}

// hookedSite is a site handler with the hooks the fast path runs for it; as
// a handler, it is the site handler (the server's chain runs the hooks as
// middleware).
type hookedSite struct {
	*siteHandler
	hooks FastHooks
}

// fastSite resolves what Route returned for the fast path.
func fastSite(h http.Handler) (*siteHandler, FastHooks) {
	switch v := h.(type) {
	case *siteHandler:
		return v, nil
	case *hookedSite:
		return v.siteHandler, v.hooks
	}
	return nil, nil
}

// TakeFastCall returns, and takes over, the FastCall the fast path began
// for r before handing r's connection to the server (nil when there is
// none). The caller must end it (FastCall.Close).
func TakeFastCall(r *http.Request) FastCall {
	cc, _ := r.Context().Value(connValue).(*coalescingConn)
	if cc == nil {
		return nil
	}
	f := cc.found.Load()
	if f == nil {
		return nil
	}
	if b := f.call.Swap(nil); b != nil {
		return b.c
	}
	return nil
}

// callBox holds a FastCall for an atomic swap.
type callBox struct{ c FastCall }

// directiveHeader reports whether a request header changes how the fast
// path may serve a stored response (see fastRequest.simple): a hook that
// sets or removes one leaves the request to the server.
func directiveHeader(name string) bool {
	switch name {
	case "Authorization", "Cache-Control", "Pragma", "Range", "If-Match", "If-Unmodified-Since",
		"If-Range", "If-None-Match", "If-Modified-Since", "Connection", "Host", "Content-Length",
		"Transfer-Encoding", "Upgrade", "Expect", "Te", "Trailer":
		return true
	}
	return false
}

// FastHeader is the header block of an answer of the fast path
// ("Name: value\r\n" lines), as response hooks read and change it. The
// fields that frame the message (Content-Length, Transfer-Encoding,
// Connection) are the server's: hooks can not change them.
type FastHeader struct {
	b []byte
}

// Values returns the values of field name (any case).
func (h *FastHeader) Values(name string) []string {
	var vs []string
	for pos := 0; ; {
		k, v, _, end, ok := nextLine(h.b, pos)
		if !ok {
			return vs
		}
		if len(k) == len(name) && strings.EqualFold(string(k), name) {
			vs = append(vs, string(v))
		}
		pos = end
	}
}

// Each calls fn for each field, in order.
func (h *FastHeader) Each(fn func(name, value string)) {
	for pos := 0; ; {
		k, v, _, end, ok := nextLine(h.b, pos)
		if !ok {
			return
		}
		fn(string(k), string(v))
		pos = end
	}
}

// Set replaces the fields named name with one of value.
func (h *FastHeader) Set(name, value string) {
	if FramingField(name) || !httpguts.ValidHeaderFieldName(name) {
		return
	}
	h.del(name)
	h.add(name, value)
}

// Add appends a field; values with line breaks are written as net/http
// writes them (breaks turned to spaces).
func (h *FastHeader) Add(name, value string) {
	if FramingField(name) || !httpguts.ValidHeaderFieldName(name) {
		return
	}
	h.add(name, value)
}

func (h *FastHeader) add(name, value string) {
	h.b = appendField(h.b, textproto.CanonicalMIMEHeaderKey(name), value)
}

// Del removes the fields named name.
func (h *FastHeader) Del(name string) {
	if FramingField(name) || name == "" {
		return
	}
	h.del(name)
}

// del scans lines itself rather than with nextLine: it needs no value, and
// nextLine's splitting doubled the cost of a Set (BenchmarkFastHeaderSet,
// 120 against 218 ns), which a hooked hit pays per response header.
func (h *FastHeader) del(name string) {
	b := h.b
	w := 0 // the kept lines are moved down to b[:w]; w never passes pos
	for pos := 0; pos < len(b); {
		eol := bytes.IndexByte(b[pos:], '\n')
		if eol < 0 {
			w += copy(b[w:], b[pos:]) // a last line without LF, if any
			break
		}
		end := pos + eol + 1
		if line := b[pos:end]; len(line) > len(name) && line[len(name)] == ':' && strings.EqualFold(string(line[:len(name)]), name) {
			pos = end // dropped
			continue
		}
		if w != pos {
			copy(b[w:], b[pos:end])
		}
		w += end - pos
		pos = end
	}
	h.b = b[:w]
}

// nextLine returns the field line of b at pos: its name, its value, where
// it starts and ends (after its CRLF); ok false when no complete line is
// left. A line without a colon has an empty name.
func nextLine(b []byte, pos int) (k, v []byte, start, end int, ok bool) {
	eol := bytes.Index(b[pos:], crlf)
	if eol < 0 {
		return nil, nil, 0, 0, false
	}
	line := b[pos : pos+eol]
	if colon := bytes.IndexByte(line, ':'); colon > 0 {
		k, v = line[:colon], bytes.TrimLeft(line[colon+1:], " ")
	}
	return k, v, pos, pos + eol + 2, true
}

// FramingField reports whether a response field frames the message
// (Content-Length, Transfer-Encoding, Connection): the server's to write,
// never a hook's to change, on either path.
func FramingField(name string) bool {
	switch len(name) {
	case len("Connection"):
		return strings.EqualFold(name, "Connection")
	case len("Content-Length"):
		return strings.EqualFold(name, "Content-Length")
	case len("Transfer-Encoding"):
		return strings.EqualFold(name, "Transfer-Encoding")
	}
	return false
}

// beginHooks runs hooks' request phase for c's current request, whose
// request ID is id and which began at start.
func (c *fastConn) beginHooks(hooks FastHooks, id string, start time.Time) (FastCall, bool) {
	if !c.client.IsValid() {
		c.client, _ = netip.ParseAddrPort(c.remoteAddr())
	}
	req := &c.req
	hr := &c.hookReq
	hr.Method = http.MethodGet
	if req.head {
		hr.Method = http.MethodHead
	}
	if string(req.path) != c.lastPath { // as host: a connection often asks for one path again
		c.lastPath = string(req.path)
	}
	hr.Host, hr.Path, hr.RawQuery, hr.Client, hr.req = c.lastHost, c.lastPath, string(req.query), c.client, req
	hr.idName, hr.id, hr.Start = c.l.idName, id, start
	call, ok := hooks.BeginFast(hr)
	hr.req, hr.id = nil, ""
	return call, ok
}

// hookedPlain reports whether the fast path may serve call's request, and
// updates req.simple to the request as the hooks left it: they changed
// nothing but headers, set none that bears on how a stored response is
// served, and removed none of the validators the fast path reads (a hook
// removing Authorization, as a bearer-token check does, makes the request
// simple).
func hookedPlain(req *fastRequest, call FastCall) bool {
	if !call.Plain() {
		return false
	}
	removed := false
	for _, ch := range call.RequestHeaderChanges() {
		switch {
		case !directiveHeader(ch.Name):
		case ch.Remove && simplifying(ch.Name):
			removed = true
		default:
			return false
		}
	}
	if removed && !req.simple {
		req.simple = simpleWithout(req, call.RequestHeaderChanges())
	}
	return true
}

// simplifying: request fields whose removal can only make a request simple.
func simplifying(name string) bool {
	switch name {
	case "Authorization", "Cache-Control", "Pragma", "Range", "If-Match", "If-Unmodified-Since", "If-Range":
		return true
	}
	return false
}

// simpleWithout is fastRequest.simple for req without the fields the hooks
// removed (when they set none of them again: see hookedPlain).
func simpleWithout(req *fastRequest, changes []HeaderChange) bool {
	inm, ims := 0, 0
	for _, f := range req.fields[:req.nf] {
		name := textproto.CanonicalMIMEHeaderKey(string(f[0]))
		switch {
		case name == "If-None-Match":
			inm++
		case name == "If-Modified-Since":
			ims++
		case simplifying(name):
			gone := false
			for _, ch := range changes {
				if ch.Name == name && ch.Remove {
					gone = true
				}
			}
			if !gone {
				return false
			}
		}
	}
	return inm <= 1 && ims <= 1
}

// hookedKey is the cache key call's hooks chose, "" for none (or no call).
func hookedKey(call FastCall) string {
	if call == nil {
		return ""
	}
	return call.CacheKey()
}

// hookedHeader is req's header as the hooks left it, for a Vary lookup.
func hookedHeader(req *fastRequest, call FastCall) http.Header {
	h := req.header()
	for _, ch := range call.RequestHeaderChanges() {
		if ch.Remove {
			delete(h, ch.Name)
		} else {
			h[ch.Name] = []string{ch.Value}
		}
	}
	return h
}

// respondHooks runs call's response phase on out, a response head without
// its final CRLF: its fields, after the status line, are what the hooks
// read and change. False: a fail-closed chain's hook failed.
func (c *fastConn) respondHooks(call FastCall, out []byte, status int) ([]byte, bool) {
	line := bytes.Index(out, crlf) + 2
	c.fh.b = out[line:]
	ok := call.Response(status, &c.fh)
	out = append(out[:line], c.fh.b...)
	c.fh.b = nil
	return out, ok
}

// sendFailed answers the 503 of a fail-closed chain whose response hook
// failed, as the server's middleware does.
func (c *fastConn) sendFailed(pol *SitePolicy, via string, call FastCall, req *fastRequest, id string, start time.Time) error {
	site := pol.SiteID
	body, ctype := "", "text/plain; charset=utf-8"
	if len(pol.ErrorPage) > 0 && proxy.AcceptsHTML((&FastHookRequest{req: req}).Values("Accept")) {
		// The site's own page for browsers, as on the server's path.
		body, ctype = proxy.SitePage(pol.ErrorPage, http.StatusServiceUnavailable, ViaName(c.l.c.opts.PoPID), id), "text/html; charset=utf-8"
	} else {
		body = call.FailBody(id)
	}
	// The fields of every page the PoP makes itself (proxy.WritePage).
	out := append(c.out[:0], "HTTP/1.1 503 Service Unavailable\r\nCache-Control: no-store\r\nContent-Type: "...)
	out = append(out, ctype...)
	out = append(out, "\r\nX-Content-Type-Options: nosniff\r\nCache-Status: meridian; detail=plugin-failure\r\nVia: "...)
	out = append(out, via...)
	out = append(out, "\r\nContent-Length: "...)
	out = strconv.AppendInt(out, int64(len(body)), 10)
	out = append(out, "\r\nDate: "...)
	out = time.Now().UTC().AppendFormat(out, http.TimeFormat)
	out = append(out, "\r\n"...)
	if id != "" {
		out = appendField(out, c.l.opts.RequestIDHeader, id)
	}
	if req.close || c.l.closing.Load() {
		out = append(out, "Connection: close\r\n"...)
	}
	out = append(out, "\r\n"...)
	if !req.head {
		out = append(out, body...)
	}
	c.out = out
	if d := c.l.srv.WriteTimeout; d > 0 {
		_ = c.conn.SetWriteDeadline(time.Now().Add(d))
	}
	if _, err := c.hw.writev(out, nil); err != nil {
		return err
	}
	if c.l.opts.Observe != nil {
		c.observe(site, req, id, http.StatusServiceUnavailable, int64(len(body)), start, "plugin-failure")
	}
	return nil
}
