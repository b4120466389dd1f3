package cache

import (
	"bytes"
	"compress/gzip"
	"io"
	"mime"
	"net/http"
	"strings"
	"sync"

	"github.com/meridian-edge/meridian/gateway/cache/policy"
)

// Compression at the edge (SitePolicy.Compress): a storable response the
// origin sent uncompressed is gzipped once, when it is fetched, and stored
// so; every later hit serves the stored bytes (no per-hit work, sendfile and
// the fast path unchanged). As Varnish's beresp.do_gzip and a CDN's
// "compress objects automatically", but kept as Vary: Accept-Encoding
// variants rather than gunzipped for each client that does not take gzip:
// the cache already keys those variants on the normalised field
// (policy.NormalizeAcceptEncoding), so a client that does not accept gzip
// gets its own identity fill.

// MinCompressSize is the smallest Content-Length worth compressing (as
// nginx's gzip_min_length and CloudFront's 1,000 bytes): below it the gzip
// framing saves little or nothing. A response without a length is
// compressed.
const MinCompressSize = 1024

// compressLevel is gzip's level for stored objects: each is compressed once
// and served many times, so a better ratio is worth more CPU than nginx's
// per-response default of 1.
const compressLevel = 6

// compressibleType reports whether a Content-Type is text-like: what
// CloudFront, Cloudflare and nginx's usual gzip_types compress.
func compressibleType(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return false
	}
	if strings.HasPrefix(mt, "text/") {
		return mt != "text/event-stream" // a stream, not a document
	}
	if strings.HasSuffix(mt, "+json") || strings.HasSuffix(mt, "+xml") {
		return true
	}
	switch mt {
	case "application/javascript", "application/x-javascript", "application/ecmascript",
		"application/json", "application/ld+json", "application/xml", "application/xhtml+xml",
		"application/rss+xml", "application/atom+xml", "application/wasm",
		"application/vnd.ms-fontobject", "application/x-font-ttf", "font/ttf", "font/otf",
		"image/svg+xml", "image/x-icon", "image/vnd.microsoft.icon", "image/bmp":
		return true
	}
	return false
}

// compressCandidate reports whether resp, about to be stored, is one the
// edge compresses for clients that accept gzip: a 200 (or a heuristically
// cacheable error page) of a text-like type, without a Content-Encoding of
// its own, not marked no-transform (RFC 9111 5.2.2.6), and not known to be
// smaller than MinCompressSize. The decision does not depend on the client,
// so that every variant of the object carries the same Vary.
func compressCandidate(resp *http.Response) bool {
	switch resp.StatusCode {
	case http.StatusOK, http.StatusNotFound, http.StatusGone:
	default:
		return false
	}
	h := resp.Header
	if _, encoded := h["Content-Encoding"]; encoded {
		return false
	}
	if resp.ContentLength >= 0 && resp.ContentLength < MinCompressSize {
		return false
	}
	if d, _ := policy.ResponseDirectives(h); d.Has("no-transform") {
		return false
	}
	if policy.ParseDirectives(h.Values("Cache-Control")).Has("no-transform") {
		return false
	}
	return compressibleType(h.Get("Content-Type"))
}

// addVaryAcceptEncoding adds Accept-Encoding to h's Vary unless listed.
func addVaryAcceptEncoding(h http.Header) {
	for _, f := range policy.VaryFields(h) {
		if f == "accept-encoding" {
			return
		}
	}
	h.Add("Vary", "Accept-Encoding")
}

// weakETag returns etag as a weak validator: the compressed bytes are not
// the origin's, so a strong validator would claim byte equality that does
// not hold (RFC 9110 8.8.1; nginx's gzip does the same). If-None-Match
// compares weakly, so revalidation with the origin still works.
func weakETag(etag string) string {
	if etag == "" || strings.HasPrefix(etag, "W/") {
		return etag
	}
	return "W/" + etag
}

// gzipPool recycles gzip writers: a level-6 writer holds about a megabyte
// of compressor state, too much to make for every fill.
type gzipPool struct{ p sync.Pool }

func (g *gzipPool) get(w io.Writer) *gzip.Writer {
	if zw, ok := g.p.Get().(*gzip.Writer); ok {
		zw.Reset(w)
		return zw
	}
	zw, _ := gzip.NewWriterLevel(w, compressLevel) // the level is valid
	return zw
}

func (g *gzipPool) put(zw *gzip.Writer) { g.p.Put(zw) }

// compressResponse makes resp's body its gzip encoding and its header say
// so. The fill then streams and stores the compressed bytes; the origin's
// read errors pass through unchanged, so a cut origin body is still a cut
// response (with the same body_error reason).
func (c *Cache) compressResponse(resp *http.Response, site string) {
	h := resp.Header
	h.Set("Content-Encoding", "gzip")
	h.Del("Content-Length")
	if et := h.Get("ETag"); et != "" {
		h.Set("ETag", weakETag(et))
	}
	resp.ContentLength = -1
	b := &gzipBody{src: resp.Body, pool: &c.gzip, in: make([]byte, 32<<10), done: func(in, out int64) {
		c.metrics.compressed(site, in, out)
	}}
	b.zw = c.gzip.get(&b.out)
	resp.Body = b
}

// gzipBody reads its source and returns the source's gzip encoding.
type gzipBody struct {
	src     io.ReadCloser
	pool    *gzipPool
	zw      *gzip.Writer
	out     bytes.Buffer
	in      []byte
	eof     bool
	read    int64 // source bytes
	written int64 // compressed bytes returned
	done    func(in, out int64)
}

func (g *gzipBody) Read(p []byte) (int, error) {
	for g.out.Len() == 0 && !g.eof {
		n, err := g.src.Read(g.in)
		if n > 0 {
			g.read += int64(n)
			g.zw.Write(g.in[:n]) // into a bytes.Buffer: cannot fail
		}
		switch {
		case err == io.EOF:
			g.zw.Close()
			g.eof = true
		case err != nil:
			return 0, err
		}
	}
	if g.out.Len() > 0 {
		n, _ := g.out.Read(p)
		g.written += int64(n)
		if g.eof && g.out.Len() == 0 && g.done != nil {
			g.done(g.read, g.written)
			g.done = nil
		}
		return n, nil
	}
	return 0, io.EOF
}

func (g *gzipBody) Close() error {
	if g.zw != nil {
		g.pool.put(g.zw)
		g.zw = nil
	}
	return g.src.Close()
}
