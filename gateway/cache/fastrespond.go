package cache

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/textproto"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/meridian-edge/meridian/gateway/headers"
	"golang.org/x/net/http/httpguts"
)

// serveFast answers c's current request when it is a fresh hit that needs
// nothing but the stored response: the same bytes, but for header order,
// that serveStored sends through net/http. Otherwise it returns the lookup
// it made (nil when it made none) and served false, for the server to use.
// err is set when the connection failed while answering; it must close.
func (h *siteHandler) serveFast(c *fastConn, hooks FastHooks, start time.Time) (_ *fastFound, served bool, err error) {
	req := &c.req
	m := h.c.metrics
	if req.directives {
		clientDirectives(req, !h.site.IgnoreClientDirectives)
	}
	var call FastCall
	var id string
	if hooks != nil {
		if c.l.idName != "" {
			// Before the hooks, as the server's middleware gives the
			// request its ID before the plugins: they see the ID the
			// response will carry.
			id = c.l.opts.NewRequestID(string(req.reqID))
		}
		var ok bool
		if call, ok = c.beginHooks(hooks, id, start); !ok {
			m.fastRoute.Inc()
			return nil, false, nil
		}
		if call != nil && !hookedPlain(req, call) {
			m.fastHooked.Inc()
			f := &fastFound{noLookup: true, reqID: id}
			f.call.Store(&callBox{call})
			return f, false, nil
		}
	}
	if ck := hookedKey(call); ck != "" {
		c.key = appendOverrideKey(c.key[:0], h.site.SiteID, ck)
	} else {
		c.key = appendFastURL(append(append(c.key[:0], h.site.SiteID...), 0), req, &h.site)
	}
	key := string(c.key)
	header := req.header
	if call != nil {
		header = func() http.Header { return hookedHeader(req, call) }
	}
	st, varyMiss := h.c.lookupWith(context.Background(), key, header)
	// What the server gets when the fast path does not answer (built only
	// then: a served hit allocates nothing for it).
	handOff := func(stale bool) *fastFound {
		f := &fastFound{key: key, st: st, varyMiss: varyMiss, stale: stale}
		if call != nil {
			f.call.Store(&callBox{call})
			f.reqID = id
		}
		return f
	}
	switch {
	case st == nil:
		m.fastMiss.Inc()
		return handOff(false), false, nil
	case !req.simple:
		m.fastRequest.Inc()
		return handOff(false), false, nil
	case st.meta.Status != http.StatusOK:
		m.fastStale.Inc()
		return handOff(true), false, nil
	}
	f := h.c.freshnessAt(st, h.c.nowOr(start))
	if f.NoCache || !f.Fresh() {
		m.fastStale.Inc()
		return handOff(true), false, nil
	}
	notModified := false
	if req.inm != nil || req.ims != nil {
		if notModified = validatorsMatch(req, st.meta.Header); !notModified {
			// A full response to a conditional request: ServeContent's, with
			// its Accept-Ranges and Last-Modified rewriting, is the server's.
			m.fastRequest.Inc()
			return handOff(false), false, nil
		}
	}
	size := st.size()
	// Before the reply, as the hit: a client may read metrics right after.
	// A HEAD or a 304 sends no body, so adds no served bytes.
	sentBody := size
	if req.head || notModified {
		sentBody = 0
	}
	h.countHitBytes(st.tier, sentBody)
	m.fastServed.Inc()

	var out []byte
	if notModified {
		out = append(c.out[:0], "HTTP/1.1 304 Not Modified\r\n"...)
		out = appendNotModifiedHeader(out, h.site.responseHeaders(c.rule).Applied(st.meta.Header), h.proxy.Via11())
	} else {
		out = append(c.out[:0], "HTTP/1.1 200 OK\r\n"...)
		out = h.c.fastHeader(out, st, h.site.responseHeaders(c.rule), h.proxy.Via11(), size)
	}
	out = append(out, "Age: "...)
	out = strconv.AppendInt(out, int64(f.Age/time.Second), 10)
	out = append(out, "\r\nCache-Status: "...)
	out = appendHitStatus(out, st, f, "")
	out = append(out, "\r\n"...)
	if _, ok := st.meta.Header["Date"]; !ok {
		out = append(out, "Date: "...)
		out = time.Now().UTC().AppendFormat(out, http.TimeFormat)
		out = append(out, "\r\n"...)
	}
	if c.l.idName != "" {
		if id == "" {
			id = c.l.opts.NewRequestID(string(req.reqID))
		}
		out = append(out, c.l.opts.RequestIDHeader...)
		out = append(out, ": "...)
		out = append(out, id...)
		out = append(out, "\r\n"...)
	}
	status := http.StatusOK
	if notModified {
		status = http.StatusNotModified
	}
	if call != nil {
		defer call.Close()
		var ok bool
		if out, ok = c.respondHooks(call, out, status); !ok {
			st.close()
			if err := c.sendFailed(&h.site, h.proxy.Via11(), call, req, id, start); err != nil {
				return nil, false, err
			}
			return nil, true, nil
		}
	}
	if req.close || c.l.closing.Load() {
		out = append(out, "Connection: close\r\n"...)
	}
	out = append(out, "\r\n"...)
	c.out = out

	if d := c.l.srv.WriteTimeout; d > 0 {
		_ = c.conn.SetWriteDeadline(time.Now().Add(d))
	}
	var sent int64
	switch {
	case req.head || notModified:
		_, err = c.hw.writev(out, nil)
	case st.rs == nil:
		sent, err = c.hw.writev(out, st.body)
		sent = max(0, sent-int64(len(out)))
	default:
		sent, err = writeHeadAndBody(&c.hw, out, st.reader())
	}
	st.close()
	if err != nil {
		// A client gone or a tier body that failed mid-way (an L2 block
		// whose checksum does not match): the connection is closed, so the
		// client sees a truncated response, never a short "complete" one.
		// Either way the request was answered, in part: it is logged and
		// counted with what was sent, and a failed store says so.
		if c.l.opts.Observe != nil {
			c.obs.BodyError = storeBodyError(err)
			c.obs.Cache = hitResult(st.tier)
			c.observe(h.site.SiteID, req, id, status, sent, start, "")
		}
		return nil, false, err
	}
	if c.l.opts.Observe != nil {
		c.obs.Cache = hitResult(st.tier)
		c.observe(h.site.SiteID, req, id, status, sent, start, "")
	}
	return nil, true, nil
}

// validatorsMatch reports whether req's If-None-Match (or, without it,
// If-Modified-Since) makes the answer a 304, as http.ServeContent decides
// for serveStored: any ETag in If-None-Match matching the stored one by weak
// comparison, or "*"; else the stored Last-Modified, to the second, not
// after If-Modified-Since.
func validatorsMatch(req *fastRequest, hd http.Header) bool {
	if req.inm != nil {
		etag := ""
		if v := hd["Etag"]; len(v) > 0 {
			etag = v[0]
		}
		buf := string(req.inm)
		for {
			buf = textproto.TrimString(buf)
			if len(buf) == 0 {
				return false
			}
			if buf[0] == ',' {
				buf = buf[1:]
				continue
			}
			if buf[0] == '*' {
				return true
			}
			tag, rest := scanETag(buf)
			if tag == "" {
				return false
			}
			if strings.TrimPrefix(tag, "W/") == strings.TrimPrefix(etag, "W/") {
				return true
			}
			buf = rest
		}
	}
	mod := lastModified(hd)
	if mod.IsZero() || len(req.ims) == 0 {
		return false
	}
	t, err := http.ParseTime(string(req.ims))
	return err == nil && mod.Truncate(time.Second).Compare(t) <= 0
}

// scanETag reads one entity tag (W/"x" or "x") from the start of s, as
// net/http does for If-None-Match.
func scanETag(s string) (etag, rest string) {
	s = textproto.TrimString(s)
	start := 0
	if strings.HasPrefix(s, "W/") {
		start = 2
	}
	if len(s[start:]) < 2 || s[start] != '"' {
		return "", ""
	}
	for i := start + 1; i < len(s); i++ {
		switch c := s[i]; {
		case c == 0x21 || c >= 0x23 && c <= 0x7e || c >= 0x80:
		case c == '"':
			return s[:i+1], s[i+1:]
		default:
			return "", ""
		}
	}
	return "", ""
}

// lastModified is the stored Last-Modified as serveStored parses it; zero
// when absent, unparsable or the Unix epoch (which net/http treats as none).
func lastModified(hd http.Header) time.Time {
	v := hd["Last-Modified"]
	if len(v) == 0 {
		return time.Time{}
	}
	t, err := http.ParseTime(v[0])
	if err != nil || t.Equal(time.Unix(0, 0)) {
		return time.Time{}
	}
	return t
}

// appendNotModifiedHeader writes the header of the 304 serveStored sends
// through http.ServeContent: the stored fields without the representation's
// Content-Type, Content-Length and Content-Encoding, Last-Modified in
// net/http's format (and none when there is an ETag), then our Via.
func appendNotModifiedHeader(out []byte, hd http.Header, via string) []byte {
	lastMod := ""
	if _, etag := hd["Etag"]; !etag {
		if mod := lastModified(hd); !mod.IsZero() {
			lastMod = mod.UTC().Format(http.TimeFormat)
		}
	}
	return appendFields(out, hd, lastMod, via, "Content-Type", "Content-Encoding", "Last-Modified")
}

// appendFields writes hd as net/http writes a response header (fields
// sorted, invalid names skipped, line breaks in values turned to spaces and
// values trimmed) without the fields serveStored replaces or drops, and
// without drop; then Last-Modified when lastMod is set, and our Via.
func appendFields(out []byte, hd http.Header, lastMod, via string, drop ...string) []byte {
	keys := make([]string, 0, len(hd)+1)
	for k := range hd {
		switch {
		case cdnOnly(k) || k == "Content-Length" || k == "Age" || slices.Contains(drop, k):
		case httpguts.ValidHeaderFieldName(k):
			keys = append(keys, k)
		}
	}
	if lastMod != "" {
		keys = append(keys, "Last-Modified")
	}
	slices.Sort(keys)
	for _, k := range keys {
		if k == "Last-Modified" && lastMod != "" {
			out = appendField(out, k, lastMod)
			continue
		}
		for _, v := range hd[k] {
			out = appendField(out, k, v)
		}
	}
	out = append(out, "Via: "...)
	out = append(out, via...)
	return append(out, "\r\n"...)
}

// appendField writes one header line as net/http does: line breaks in the
// value turned to spaces, the value trimmed.
func appendField(out []byte, k, v string) []byte {
	if strings.ContainsAny(v, "\r\n") {
		v = strings.NewReplacer("\n", " ", "\r", " ").Replace(v)
	}
	v = textproto.TrimString(v)
	out = append(out, k...)
	out = append(out, ": "...)
	out = append(out, v...)
	return append(out, "\r\n"...)
}

// writeHeadAndBody sends head and then a streamed body through w (the
// connection's, reused per response); the body's first block leaves with
// head in one writev. On a socket (w.fs not nil) a body in a local file (an
// L2 hit) is sent by sendfile instead, head first with MSG_MORE
// (tier.FileWriter).
func writeHeadAndBody(w *fileHeadWriter, head []byte, body io.Reader) (int64, error) {
	w.head = head
	defer func() { w.head = nil }()
	var dst io.Writer = w
	if w.fs == nil {
		dst = &w.headWriter
	}
	var (
		n   int64
		err error
	)
	if wt, ok := body.(io.WriterTo); ok {
		n, err = wt.WriteTo(dst)
	} else {
		n, err = io.Copy(dst, body)
	}
	if err == nil && len(w.head) > 0 {
		_, err = w.writev(w.head, nil) // an empty body
	}
	return n, err
}

// headWriter is a fast connection's writer: every response the fast path
// sends goes through writev. As an io.Writer (a streamed body's WriteTo) it
// sends head, when set, with the first bytes written.
type headWriter struct {
	conn net.Conn
	vw   *vecWriter // the raw writev on a TCP socket; nil: through conn
	head []byte
	// vec and bufs hold conn's writev buffers: kept here, in a writer that
	// lives as long as its connection, because a local net.Buffers escapes
	// through the net.Conn (two allocations per hit).
	vec  [2][]byte
	bufs net.Buffers
}

// writev sends a and then b in one writev and returns the bytes written.
func (w *headWriter) writev(a, b []byte) (int64, error) {
	if w.vw != nil {
		return w.vw.write(a, b)
	}
	if len(a) == 0 {
		n, err := w.conn.Write(b)
		return int64(n), err
	}
	w.vec = [2][]byte{a, b}
	w.bufs = w.vec[:]
	n, err := w.bufs.WriteTo(w.conn)
	w.vec, w.bufs = [2][]byte{}, nil // b may be a mapping that is unmapped once its body closes
	return n, err
}

func (w *headWriter) Write(p []byte) (int, error) {
	n, err := w.writev(w.head, p)
	held := int64(len(w.head))
	w.head = nil
	if n < held {
		return 0, err
	}
	return int(n - held), err
}

// fileHeadWriter is a headWriter that also sends file ranges when its
// connection is a socket (fs not nil).
type fileHeadWriter struct {
	headWriter
	fs *fileSender
}

// WriteFile implements tier.FileWriter.
func (w *fileHeadWriter) WriteFile(fd int, off, n int64) (int64, error) {
	return w.fs.sendFile(&w.head, fd, off, n)
}

// appendFastURL appends requestURL's result for a parsed request on a plain
// connection to b.
func appendFastURL(b []byte, req *fastRequest, site *SitePolicy) []byte {
	b = append(b, "http://"...)
	b = appendNormHost(b, req.host)
	b = appendNormEscapes(b, req.path)
	return appendQuery(b, req.query, site)
}

// remoteAddr is the connection's RemoteAddr as a string, made once.
func (c *fastConn) remoteAddr() string {
	if c.remote == "" {
		c.remote = c.conn.RemoteAddr().String()
	}
	return c.remote
}

// resolveClient sets the current request's client (c.client, c.remote)
// to FastOptions.ClientAddr's answer; the string is made again only when
// the client changes (a proxy's connection carries many clients).
func (c *fastConn) resolveClient() {
	if !c.peer.IsValid() {
		ta, ok := c.conn.RemoteAddr().(*net.TCPAddr)
		if !ok {
			c.noPeer = true
			return
		}
		ap := ta.AddrPort()
		c.peer = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		c.valuesFn = c.headerValues
	}
	a := c.l.opts.ClientAddr(c.peer, c.valuesFn)
	if a == c.client && c.remote != "" {
		return
	}
	c.client, c.remote = a, a.String()
}

// headerValues returns the current request's values of the header field
// name (lower case), in c.vals.
func (c *fastConn) headerValues(name string) [][]byte {
	c.vals = c.vals[:0]
	for _, f := range c.req.fields[:c.req.nf] {
		if fold(f[0], name) {
			c.vals = append(c.vals, f[1])
		}
	}
	return c.vals
}

func (c *fastConn) observe(site string, req *fastRequest, id string, status int, sent int64, start time.Time, generated string) {
	if string(req.target) != c.lastTarget { // as host: often the same again
		c.lastTarget = string(req.target)
	}
	o := &c.obs
	o.Site, o.Method, o.Host, o.RequestURI, o.RemoteAddr, o.RequestID = site, http.MethodGet, c.lastHost, c.lastTarget, c.remoteAddr(), id
	if req.head {
		o.Method = http.MethodHead
	}
	o.Status, o.Bytes, o.Elapsed, o.Generated = status, sent, time.Since(start), generated
	o.req = req
	c.l.opts.Observe(o)
	*o = FastObservation{}
}

// hitResult is FastObservation.Cache for a fresh hit from tier, without
// allocating.
func hitResult(tier string) string {
	switch tier {
	case "l1":
		return "hit-l1"
	case "l2":
		return "hit-l2"
	case "l3":
		return "hit-l3"
	}
	return "hit"
}

// maxHeaderMemo bounds the memo of serialised headers; it is emptied when
// full (the hot objects come straight back).
const maxHeaderMemo = 1024

// headerMemo keeps the serialised header block of the stored responses the
// fast path serves most, keyed like freshMemo (metaKey) and by the body's
// length.
type headerMemo struct {
	mu sync.RWMutex
	m  map[headerKey][]byte
}

type headerKey struct {
	metaKey
	size int64
	// pol is the site's response header policy the block was made with:
	// a reload that changes it makes new blocks.
	pol *headers.Policy
}

// fastHeader appends st's header fields as serveStored sends them, except
// Age, Cache-Status's own entry, Date (when the origin sent none) and the
// connection's fields, which change per request.
func (c *Cache) fastHeader(out []byte, st *stored, pol *headers.Policy, via string, size int64) []byte {
	if !st.shared {
		return appendStoredHeader(out, pol.Applied(st.meta.Header), via, size)
	}
	k := headerKey{keyOf(st.meta), size, pol}
	hm := &c.headers
	hm.mu.RLock()
	b, ok := hm.m[k]
	hm.mu.RUnlock()
	if !ok {
		b = appendStoredHeader(nil, pol.Applied(st.meta.Header), via, size)
		hm.mu.Lock()
		if hm.m == nil || len(hm.m) >= maxHeaderMemo {
			hm.m = make(map[headerKey][]byte, maxHeaderMemo/4)
		}
		hm.m[k] = b
		hm.mu.Unlock()
	}
	return append(out, b...)
}

// appendStoredHeader writes hd as serveStored sends it for a 200: the
// stored fields (see appendFields), our Via, Accept-Ranges and
// Content-Length.
func appendStoredHeader(out []byte, hd http.Header, via string, size int64) []byte {
	out = appendFields(out, hd, "", via, "Accept-Ranges")
	out = append(out, "Accept-Ranges: bytes\r\nContent-Length: "...)
	out = strconv.AppendInt(out, size, 10)
	return append(out, "\r\n"...)
}

// storeBodyError is a fast answer's FastObservation.BodyError for the
// error that ended its body: "" when writing to the client failed (it went
// away or stalled past the write timeout: not the PoP's failure, and what
// net/http's path leaves unmarked too), else "store-error".
func storeBodyError(err error) string {
	switch {
	case errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ECONNRESET), errors.Is(err, net.ErrClosed),
		errors.Is(err, os.ErrDeadlineExceeded):
		return ""
	}
	return "store-error"
}
