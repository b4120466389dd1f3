package cache

import (
	"bytes"
	"net/http"
	"net/textproto"

	"golang.org/x/net/http/httpguts"
)

// The fast path reads request heads itself and answers only the ones it
// understands completely. Its parser is deliberately narrower than net/http's:
// it accepts the common shape of a cacheable request (GET or HEAD, HTTP/1.1,
// an origin-form target of plain characters, one Host, no body framing) and
// reports anything else as not understood, so that net/http, with its own
// checks and error responses, sees those bytes unchanged. Being narrower is
// what makes it safe: a request can never mean one thing here and another to
// net/http, because any request this parser accepts is one whose meaning
// leaves no room for interpretation (no Content-Length, Transfer-Encoding,
// obsolete line folding, bare CR or LF, or duplicate Host).

// maxFastFields bounds the header fields of a request taken by the fast path.
const maxFastFields = 64

// fastRequest is one parsed request head. Its byte slices point into the
// connection's read buffer and are valid until the next read.
type fastRequest struct {
	fastHead
	nf     int
	fields [maxFastFields][2][]byte // name, value; only [:nf] are this request's
}

// fastHead is what parseFastRequest resets per request (not the fields
// array: clearing its 3 KiB was a tenth of the parse).
type fastHead struct {
	head   bool   // HEAD (else GET)
	target []byte // origin-form request target, as sent
	path   []byte // target before '?'
	query  []byte // target after '?', nil when there is none
	host   []byte
	// close: the client sent Connection: close.
	close bool
	// simple: nothing in the request but If-None-Match and
	// If-Modified-Since changes how a fresh stored response is served (no
	// other conditionals, Range or Authorization; Cache-Control and Pragma
	// are settled per site, see directives); other requests are looked up
	// here and answered by the server.
	simple bool
	// directives: the client sent Cache-Control or Pragma. Whether that
	// leaves the request simple depends on its site (see
	// SitePolicy.IgnoreClientDirectives and clientDirectives).
	directives bool
	reqID      []byte // the request ID header's value, when asked for
	// inm and ims are If-None-Match and If-Modified-Since (nil: absent):
	// the fast path answers the 304s they lead to (a browser revalidating
	// its copy of an object the PoP holds fresh).
	inm, ims []byte
}

// parseFastRequest parses head, a request head ending in CRLF CRLF. idHeader
// names the request ID header to capture (lower case, may be empty). It
// returns false for every request the fast path must leave to net/http.
func parseFastRequest(head []byte, idHeader string, req *fastRequest) bool {
	req.fastHead, req.nf = fastHead{simple: true}, 0
	eol := bytes.Index(head, crlf)
	if eol < 0 {
		return false
	}
	line := head[:eol]
	switch {
	case bytes.HasPrefix(line, []byte("GET ")):
		line = line[4:]
	case bytes.HasPrefix(line, []byte("HEAD ")):
		line, req.head = line[5:], true
	default:
		return false
	}
	sp := bytes.IndexByte(line, ' ')
	if sp <= 0 || string(line[sp+1:]) != "HTTP/1.1" {
		return false
	}
	req.target = line[:sp]
	if !parseFastTarget(req) {
		return false
	}
	rest := head[eol+2:]
	for len(rest) > 0 {
		eol = bytes.Index(rest, crlf)
		if eol < 0 {
			return false
		}
		line, rest = rest[:eol], rest[eol+2:]
		if len(line) == 0 {
			return len(rest) == 0 && len(req.host) > 0
		}
		if !fastField(req, line, idHeader) {
			return false
		}
	}
	return false // no empty line: not a complete head
}

var crlf = []byte("\r\n")

// parseFastTarget accepts an origin-form target made of characters that
// net/url keeps exactly as sent (so the cache key computed here is the one
// the handler computes from the parsed URL), with valid percent-escapes, and
// no dot segments (which a server's router may clean or redirect).
func parseFastTarget(req *fastRequest) bool {
	t := req.target
	if len(t) == 0 || t[0] != '/' {
		return false
	}
	q := bytes.IndexByte(t, '?')
	req.path = t
	if q >= 0 {
		req.path, req.query = t[:q], t[q+1:]
	}
	if !plainChars(req.path, false) || (req.query != nil && !plainChars(req.query, true)) {
		return false
	}
	p := req.path
	return !bytes.Contains(p, []byte("/./")) && !bytes.Contains(p, []byte("/../")) &&
		!bytes.HasSuffix(p, []byte("/.")) && !bytes.HasSuffix(p, []byte("/.."))
}

// plainChars: RFC 3986 pchar (and '/' and, in a query, '?').
func plainChars(b []byte, query bool) bool {
	for i := 0; i < len(b); i++ {
		c := b[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '-' || c == '.' || c == '_' || c == '~' || c == '/' || c == ':' || c == '@':
		case c == '!' || c == '$' || c == '&' || c == '\'' || c == '(' || c == ')' ||
			c == '*' || c == '+' || c == ',' || c == ';' || c == '=':
		case c == '?' && query:
		case c == '%':
			if i+2 >= len(b) || !isHex(b[i+1]) || !isHex(b[i+2]) {
				return false
			}
			i += 2
		default:
			return false
		}
	}
	return true
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// fastField takes one header field line.
func fastField(req *fastRequest, line []byte, idHeader string) bool {
	colon := bytes.IndexByte(line, ':')
	if colon <= 0 || req.nf == maxFastFields {
		return false // also a line starting with SP or HTAB (obs-fold)
	}
	name := line[:colon]
	for _, c := range name {
		if !httpguts.IsTokenRune(rune(c)) {
			return false
		}
	}
	value := line[colon+1:]
	for _, c := range value {
		if c < 0x20 && c != '\t' || c == 0x7f {
			return false // bare CR or LF, NUL and other controls
		}
	}
	value = textproto.TrimBytes(value) // no CR or LF left to trim: only SP and HTAB
	req.fields[req.nf] = [2][]byte{name, value}
	req.nf++
	switch {
	case fold(name, "host"):
		if req.host != nil || !validHost(value) {
			return false
		}
		req.host = value
	case fold(name, "connection"):
		return fastConnection(req, value)
	case fold(name, "content-length"), fold(name, "transfer-encoding"), fold(name, "upgrade"),
		fold(name, "expect"), fold(name, "trailer"), fold(name, "te"):
		return false
	case fold(name, "if-none-match"):
		if req.inm != nil {
			req.simple = false // net/http reads the first line only: not ours to judge
		}
		req.inm = value
	case fold(name, "if-modified-since"):
		if req.ims != nil {
			req.simple = false
		}
		req.ims = value
	case fold(name, "cache-control"), fold(name, "pragma"):
		req.directives = true
	case fold(name, "authorization"), fold(name, "range"),
		fold(name, "if-match"), fold(name, "if-unmodified-since"), fold(name, "if-range"):
		req.simple = false
	case idHeader != "" && fold(name, idHeader):
		if req.reqID == nil { // the first, as Header.Get (middleware.RequestID) takes it
			req.reqID = value
		}
	}
	return true
}

// fastConnection accepts the Connection values that change nothing but
// persistence; any other option (upgrade, a field name to drop) is the
// server's to handle.
func fastConnection(req *fastRequest, v []byte) bool {
	for len(v) > 0 {
		var opt []byte
		if i := bytes.IndexByte(v, ','); i >= 0 {
			opt, v = v[:i], v[i+1:]
		} else {
			opt, v = v, nil
		}
		opt = bytes.Trim(opt, " \t")
		switch {
		case len(opt) == 0 || fold(opt, "keep-alive"):
		case fold(opt, "close"):
			req.close = true
		default:
			return false
		}
	}
	return true
}

// validHost accepts a host name or IP literal with an optional port.
func validHost(h []byte) bool {
	if len(h) == 0 || len(h) > 255 {
		return false
	}
	for _, c := range h {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '-' || c == '.' || c == ':' || c == '[' || c == ']' || c == '_':
		default:
			return false
		}
	}
	return true
}

// fold compares b with the lower-case ASCII string s, ignoring case.
func fold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

// header builds the request's header fields as net/http would parse them,
// for a Vary lookup; only requests that need it pay for it.
func (req *fastRequest) header() http.Header {
	h := make(http.Header, req.nf)
	for _, f := range req.fields[:req.nf] {
		k := textproto.CanonicalMIMEHeaderKey(string(f[0]))
		if k == "Host" {
			continue // net/http moves it to Request.Host
		}
		h[k] = append(h[k], string(f[1]))
	}
	return h
}

// clientDirectives settles a request whose client sent Cache-Control or
// Pragma, once its site is known. A site that honours them has the server
// apply them (the request is not simple). Otherwise they are dropped from
// the request here, as the gateway drops them before the site's plugins
// and cache on net/http, so that a browser's reload (Cache-Control:
// max-age=0) is still a fast hit and plugins see the same request on both
// paths; only-if-cached, which the gateway keeps, goes to the server.
func clientDirectives(req *fastRequest, honor bool) {
	if honor {
		req.simple = false
		return
	}
	n := 0
	for _, f := range req.fields[:req.nf] {
		if fold(f[0], "cache-control") {
			if onlyIfCached(f[1]) {
				req.simple = false
				return
			}
			continue
		}
		if fold(f[0], "pragma") {
			continue
		}
		req.fields[n] = f
		n++
	}
	req.nf = n
}

// onlyIfCached reports whether a Cache-Control value lists only-if-cached.
func onlyIfCached(v []byte) bool {
	for d := range bytes.SplitSeq(v, []byte(",")) {
		if fold(bytes.TrimSpace(d), "only-if-cached") {
			return true
		}
	}
	return false
}
