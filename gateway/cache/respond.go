package cache

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/meridian-edge/meridian/gateway/cache/policy"
	"github.com/meridian-edge/meridian/gateway/proxy"
	"github.com/meridian-edge/meridian/middleware"
)

// respond answers one request from a released flight.
func (h *siteHandler) respond(w http.ResponseWriter, r *http.Request, key, u string, reqCC policy.Directives, f *flight, rd *reader, resp *http.Response, fwd, detail string) {
	res := f.res
	site := h.site.SiteID
	switch res.kind {
	case kindStream:
		cs := "meridian; fwd=" + fwd + "; fwd-status=" + strconv.Itoa(res.status)
		if res.storing {
			cs += "; stored"
		}
		if detail != "" {
			cs += "; detail=" + detail
			h.c.metrics.request(site, "origin", resCollapsed)
		} else {
			h.c.metrics.request(site, "origin", resMiss)
		}
		h.writeStream(w, r, rd, res, cs)
	case kindStored:
		rd.Close()
		st := h.c.reopen(r.Context(), res.stored)
		if st == nil { // evicted meanwhile: fetch on our own
			h.fetch(w, r, key, u, nil, reqCC, fwd, false)
			return
		}
		defer st.close()
		if res.hit {
			fr := h.c.freshness(st)
			h.countHit(st.tier)
			h.serveStored(w, r, st, hitStatus(st, fr, ""), fr.Age)
			return
		}
		h.c.metrics.request(site, st.tier, resRevalidated)
		h.serveStored(w, r, st, "meridian; fwd="+fwd+"; fwd-status=304; detail="+st.tier, -1)
	case kindPass:
		rd.Close()
		if res.status >= 500 && res.stored != nil && policy.StaleIfErrorAllowed(h.c.freshness(res.stored), reqCC, h.site.staleIfError(r.URL.EscapedPath())) {
			if resp != nil {
				resp.Body.Close()
			}
			h.serveStaleIfError(w, r, res.stored, fwd)
			return
		}
		if resp == nil { // a waiter: make our own request (fetch handles it)
			h.fetch(w, r, key, u, nil, reqCC, fwd, false)
			return
		}
		h.c.metrics.request(site, "origin", resPass)
		cs := "meridian; fwd=" + fwd + "; fwd-status=" + strconv.Itoa(resp.StatusCode)
		if res.notStored != "" {
			// RFC 9211's detail: why the response was not stored (no-store,
			// private, set-cookie, authorization, vary-star, too-large, ...).
			cs += "; detail=not-stored-" + res.notStored
		}
		h.writeResponse(w, r, resp, cs)
	case kindError:
		rd.Close()
		if res.stored != nil && policy.StaleIfErrorAllowed(h.c.freshness(res.stored), reqCC, h.site.staleIfError(r.URL.EscapedPath())) {
			h.serveStaleIfError(w, r, res.stored, fwd)
			return
		}
		h.c.metrics.request(site, "origin", resError)
		if r.Context().Err() != nil && !proxy.IsTimeout(res.err) {
			return // the client went away
		}
		h.writeOriginError(w, r, u, fwd, res.err)
	}
}

func (h *siteHandler) serveStaleIfError(w http.ResponseWriter, r *http.Request, st *stored, fwd string) {
	st = h.c.reopen(r.Context(), st)
	if st == nil {
		h.writeOriginError(w, r, r.URL.String(), fwd, errString("the stored copy disappeared while the origin failed"))
		return
	}
	defer st.close()
	h.c.metrics.request(h.site.SiteID, st.tier, resStale)
	f := h.c.freshness(st)
	h.serveStored(w, r, st, hitStatus(st, f, "stale-if-error"), f.Age)
}

// cdnOnly reports whether a response field is addressed to the CDN and is
// not passed on to clients, as Fastly and Cloudflare do: Surrogate-Control
// (our freshness, see policy.TargetedDirectives), and the Surrogate-Key and
// Cache-Tag that purge by surrogate key selects on (they stay in the stored
// metadata; clients have no use for them and should not learn them).
func cdnOnly(k string) bool {
	return k == "Surrogate-Control" || k == "Surrogate-Key" || k == "Cache-Tag"
}

// dropCDNOnly deletes the cdnOnly fields from h.
func dropCDNOnly(h http.Header) {
	delete(h, "Surrogate-Control")
	delete(h, "Surrogate-Key")
	delete(h, "Cache-Tag")
}

// clientHeader copies a response header for the client: hop-by-hop fields
// are already gone; the fields addressed to the CDN (cdnOnly) are dropped.
func (h *siteHandler) clientHeader(dst, src http.Header, r *http.Request, cacheStatus string) {
	for k, v := range src {
		dst[k] = v
	}
	dropCDNOnly(dst)
	h.proxy.AddVia(dst, r.ProtoMajor, r.ProtoMinor)
	dst["Cache-Status"] = append(dst["Cache-Status"][:len(dst["Cache-Status"]):len(dst["Cache-Status"])], cacheStatus)
}

// writeStream sends a shared response from the fill. A GET with one
// byte range of a 200 whose length is known gets that range (206) while the
// whole object fills, as Varnish, nginx and the CDNs answer a range on a
// miss: a video player asking for bytes=0-1 does not download the file.
func (h *siteHandler) writeStream(w http.ResponseWriter, r *http.Request, rd *reader, res result, cs string) {
	defer rd.Close()
	hd := w.Header()
	h.clientHeader(hd, res.header, r, cs)
	skip, limit := int64(0), int64(-1) // the body part sent: all by default
	status := res.status
	if rg := r.Header.Get("Range"); rg != "" && r.Method == http.MethodGet && res.status == http.StatusOK && res.length >= 0 && r.Header.Get("If-Range") == "" {
		switch start, n, ok := singleRange(rg, res.length); {
		case ok && n > 0:
			skip, limit, status = start, n, http.StatusPartialContent
			hd.Set("Content-Range", "bytes "+strconv.FormatInt(start, 10)+"-"+strconv.FormatInt(start+n-1, 10)+"/"+strconv.FormatInt(res.length, 10))
			hd.Set("Content-Length", strconv.FormatInt(n, 10))
		case ok: // a single range that selects nothing of the object
			hd.Del("Content-Length")
			hd.Set("Content-Range", "bytes */"+strconv.FormatInt(res.length, 10))
			http.Error(w, "meridian: the requested range is beyond the object's "+strconv.FormatInt(res.length, 10)+" bytes", http.StatusRequestedRangeNotSatisfiable)
			return
		}
	}
	w.WriteHeader(status)
	if r.Method == http.MethodHead || !bodyAllowed(res.status) {
		return
	}
	rc := http.NewResponseController(w)
	buf := make([]byte, chunkSize)
	var sent int64
	defer func() { h.c.metrics.bytes.WithLabelValues(h.site.SiteID, "origin").Add(float64(sent)) }()
	for limit != 0 {
		n, err := rd.Read(r.Context(), buf)
		if n > 0 {
			part := buf[:n]
			if skip > 0 { // before the range: read past, as the fill must
				d := min(skip, int64(len(part)))
				part, skip = part[d:], skip-d
			}
			if limit >= 0 && int64(len(part)) > limit {
				part = part[:limit]
			}
			if _, werr := w.Write(part); werr != nil {
				return // client gone; the fill continues for the others
			}
			sent += int64(len(part))
			if limit > 0 {
				limit -= int64(len(part))
			}
			if rd.idle() {
				// Nothing more is here yet: let the client have what we have.
				_ = rc.Flush()
			}
		}
		if err == io.EOF {
			return
		}
		if err != nil {
			if r.Context().Err() != nil {
				return
			}
			// The origin broke mid-body: abort the client connection so it
			// sees a truncated response rather than a short "complete" one.
			middleware.MarkBodyError(r.Context(), originBodyError(err))
			panic(http.ErrAbortHandler)
		}
	}
}

// singleRange parses a Range field of exactly one byte range (RFC 9110
// 14.1.2: a-b, a-, or -suffix) against an object of size bytes: start and
// n, the bytes it selects (n is 0 when it starts past the end: 416). ok is
// false for anything else (several ranges, another unit, a malformed
// field), which is answered whole, as the RFC allows.
func singleRange(field string, size int64) (start, n int64, ok bool) {
	spec, found := strings.CutPrefix(field, "bytes=")
	if !found || strings.Contains(spec, ",") {
		return 0, 0, false
	}
	a, b, found := strings.Cut(strings.TrimSpace(spec), "-")
	if !found {
		return 0, 0, false
	}
	if a == "" { // the last b bytes
		suffix, err := strconv.ParseInt(b, 10, 64)
		if err != nil || suffix < 0 {
			return 0, 0, false
		}
		suffix = min(suffix, size)
		return size - suffix, suffix, true
	}
	first, err := strconv.ParseInt(a, 10, 64)
	if err != nil || first < 0 {
		return 0, 0, false
	}
	last := size - 1
	if b != "" {
		if last, err = strconv.ParseInt(b, 10, 64); err != nil || last < first {
			return 0, 0, false
		}
		last = min(last, size-1)
	}
	if first >= size {
		return first, 0, true
	}
	return first, last - first + 1, true
}

func bodyAllowed(status int) bool {
	return status != http.StatusNoContent && status != http.StatusNotModified && status >= 200
}

// writeResponse streams an origin response that only this client gets.
func (h *siteHandler) writeResponse(w http.ResponseWriter, r *http.Request, resp *http.Response, cs string) {
	defer resp.Body.Close()
	stop := context.AfterFunc(r.Context(), func() { resp.Body.Close() })
	defer stop()
	h.clientHeader(w.Header(), resp.Header, r, cs)
	w.WriteHeader(resp.StatusCode)
	if r.Method == http.MethodHead {
		return
	}
	rc := http.NewResponseController(w)
	buf := make([]byte, chunkSize)
	var sent int64
	defer func() { h.c.metrics.bytes.WithLabelValues(h.site.SiteID, "origin").Add(float64(sent)) }()
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
			sent += int64(n)
			_ = rc.Flush() // stream as the origin sends
		}
		if err == io.EOF {
			return
		}
		if err != nil {
			if r.Context().Err() != nil || errors.Is(err, context.Canceled) {
				return
			}
			middleware.MarkBodyError(r.Context(), originBodyError(err))
			panic(http.ErrAbortHandler)
		}
	}
}

// serveStored answers from a stored response: Age computed now (Date is
// never rewritten), Cache-Status, and for 200 responses conditional requests
// (If-None-Match before If-Modified-Since), Range (206/416) and HEAD. It
// counts the body bytes it sends (served bytes), the caller the request.
func (h *siteHandler) serveStored(w http.ResponseWriter, r *http.Request, st *stored, cs string, age time.Duration) {
	hd := w.Header()
	h.clientHeader(hd, st.meta.Header, r, cs)
	if age < 0 {
		age = policy.CurrentAge(st.meta.Header, st.meta.RequestTime, st.meta.ResponseTime, h.c.now())
	}
	hd["Age"] = []string{strconv.FormatInt(int64(age/time.Second), 10)}
	size := st.size()
	if st.meta.Status == http.StatusOK {
		if _, ok := hd["Content-Type"]; !ok {
			hd["Content-Type"] = nil // no sniffing: send what the origin sent
		}
		delete(hd, "Content-Length")
		if !needsServeContent(r) {
			// Fast path: nothing conditional or partial to evaluate. Writing
			// the body through w (not ServeContent's io.Copy) lets headers
			// and a small body leave in one write, and a large one in one
			// writev on a coalescing connection, without a copy.
			hd["Content-Length"] = []string{strconv.FormatInt(size, 10)}
			// Ranges of a stored response are served here (ServeContent
			// says so on its answers too), whatever the origin said.
			hd["Accept-Ranges"] = acceptRangesBytes
			if r.Method != http.MethodHead {
				// Counted before the reply, as the hit is, so that a client
				// reading the metrics right after sees it.
				h.countBytes(st.tier, size)
			}
			w.WriteHeader(http.StatusOK)
			if r.Method != http.MethodHead {
				if st.rs == nil {
					writeBody(w, r, st.body)
				} else {
					writeBodyFrom(w, r, st.reader(), size)
				}
			}
			return
		}
		var mod time.Time
		if lm := hd.Get("Last-Modified"); lm != "" {
			if t, err := http.ParseTime(lm); err == nil {
				mod = t
			}
		}
		// ServeContent decides what to send (304, 206 parts, 416, the
		// whole body): count what it writes.
		cw := &countingWriter{ResponseWriter: w}
		defer func() { h.countBytes(st.tier, cw.n) }()
		http.ServeContent(cw, r, "", mod, st.reader())
		return
	}
	body := r.Method != http.MethodHead && bodyAllowed(st.meta.Status)
	if bodyAllowed(st.meta.Status) {
		hd["Content-Length"] = []string{strconv.FormatInt(size, 10)}
	}
	if body {
		h.countBytes(st.tier, size)
	}
	w.WriteHeader(st.meta.Status)
	if body {
		_, _ = io.Copy(w, st.reader())
	}
}

// acceptRangesBytes is the Accept-Ranges of a stored 200 (never modified).
var acceptRangesBytes = []string{"bytes"}

// countingWriter counts the body bytes written through it, for
// http.ServeContent, whose choice of what to send only its writes tell.
type countingWriter struct {
	http.ResponseWriter
	n int64
}

func (w *countingWriter) Write(p []byte) (int, error) {
	n, err := w.ResponseWriter.Write(p)
	w.n += int64(n)
	return n, err
}

// ReadFrom keeps the underlying writer's ReadFrom (net/http's sendfile for a
// file-backed body) when it has one.
func (w *countingWriter) ReadFrom(src io.Reader) (int64, error) {
	var n int64
	var err error
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(src)
	} else {
		n, err = io.Copy(writerOnly{w.ResponseWriter}, src)
	}
	w.n += n
	return n, err
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *countingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// writerOnly hides every method but Write, so io.Copy does not call back
// into a ReadFrom.
type writerOnly struct{ io.Writer }

// reader returns the body from its start.
func (s *stored) reader() io.ReadSeeker {
	if s.rs != nil {
		_, _ = s.rs.Seek(0, io.SeekStart)
		return s.rs
	}
	return bytes.NewReader(s.body)
}

// reopen returns a copy of st that the caller may serve and must close: the
// metadata is copied, and a streamed body is opened again from the store,
// because several requests may serve one shared result at once.
func (c *Cache) reopen(ctx context.Context, st *stored) *stored {
	if st.rs == nil {
		return st.clone()
	}
	fresh, err := c.store.get(ctx, st.key)
	if err != nil {
		return nil
	}
	fresh.meta = st.meta.Clone()
	return fresh
}

// needsServeContent reports whether the request has preconditions or a
// Range that http.ServeContent must evaluate.
func needsServeContent(r *http.Request) bool {
	h := r.Header
	return h["Range"] != nil || h["If-None-Match"] != nil || h["If-Modified-Since"] != nil ||
		h["If-Match"] != nil || h["If-Unmodified-Since"] != nil
}

// originBodyError is the access log's body_error for an origin body that
// ended early with err, in the words of the error pages' Cache-Status
// details: origin-timeout when timeouts.idle or total ended it, else
// origin-error (reset, closed early, malformed chunking).
func originBodyError(err error) string {
	if errors.Is(err, context.DeadlineExceeded) {
		return proxy.DetailOriginTimeout
	}
	return proxy.DetailOriginError
}
