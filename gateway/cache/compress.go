package cache

import (
	"bytes"
	"compress/gzip"
	"io"
	"mime"
	"net/http"
	"strings"
	"sync"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/zstd"

	"github.com/meridian-edge/meridian/gateway/cache/policy"
)

// Compression at the edge (SitePolicy.Compress): a storable response the
// origin sent uncompressed is compressed (zstd, brotli or gzip, as the
// client accepts) once, when it is fetched, and stored so; every later hit serves the stored bytes (no per-hit work, sendfile and
// the fast path unchanged). As Varnish's beresp.do_gzip and a CDN's
// "compress objects automatically", but kept as Vary: Accept-Encoding
// variants rather than decoded for each client that does not take them:
// the cache already keys those variants on the normalised field
// (policy.NormalizeAcceptEncoding), so a client that accepts neither coding
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

// brotliQuality and brotliWindow are brotli's settings for stored objects.
// At quality 5 a minified script or stylesheet comes out 3-5% smaller than
// gzip's level 6 and 8-14% smaller than zstd's default level, for about
// 1.4 times gzip's CPU and 4.2 MB of encoder state. Quality 6 saves about
// another 1% for 10% more CPU and 5.3 MB; 11, the static-asset setting, is
// some 50 times slower, too slow for a fill a client is waiting on. The
// window (2^20, 1 MiB) matches zstd's (see newEncoders).
const (
	brotliQuality = 5
	brotliWindow  = 20
)

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
// edge compresses for clients that accept br, zstd or gzip: a 200 (or a heuristically
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
	// no-transform in either the targeted field or Cache-Control: it is
	// about the representation, which both speak for.
	d, src := policy.ResponseDirectives(h)
	if d.Has("no-transform") || (src != "Cache-Control" && policy.ParseDirectives(h.Values("Cache-Control")).Has("no-transform")) {
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

// encoder is a streaming compressor (gzip.Writer, zstd.Encoder,
// brotli.Writer): Reset starts a new stream into w, Flush emits what it
// holds so far, Close ends the stream.
type encoder interface {
	io.WriteCloser
	Reset(w io.Writer)
	Flush() error
}

// encoderPool recycles one coding's encoders: a level-6 gzip writer holds
// about a megabyte of compressor state, a zstd encoder several, too much to
// make for every fill.
type encoderPool struct {
	p   sync.Pool
	new func() encoder
}

func (e *encoderPool) get(w io.Writer) encoder {
	enc, ok := e.p.Get().(encoder)
	if !ok {
		enc = e.new()
	}
	enc.Reset(w)
	return enc
}

func (e *encoderPool) put(enc encoder) { e.p.Put(enc) }

// MaxCompressing bounds the responses compressing at once, fills and
// passes together. Each holds an encoder's state (about 0.7 MB for gzip,
// 2.6 MB for zstd, 4.2 MB for brotli) for as long as its origin streams,
// so a slow origin's many text responses must not add up to gigabytes
// (32 brotli fills: 134 MB): past the bound a response is sent, and
// stored, as the origin sent it (counted as skipped, reason busy), which
// every client accepts.
const MaxCompressing = 32

// encoders holds the pools of the codings the edge produces and the slots
// of MaxCompressing.
type encoders struct {
	gzip, zstd, br encoderPool
	slots          chan struct{}
}

func newEncoders() *encoders {
	return &encoders{
		slots: make(chan struct{}, MaxCompressing),
		gzip: encoderPool{new: func() encoder {
			zw, _ := gzip.NewWriterLevel(io.Discard, compressLevel) // the level is valid
			return zw
		}},
		zstd: encoderPool{new: func() encoder {
			// A 1 MiB window (RFC 9659 allows up to 8 MiB) and the lower
			// memory mode: 2.6 MB of state instead of 18-21 MB, for a
			// few percent of ratio on large objects only. One goroutine:
			// a fill compresses in its own.
			zw, _ := zstd.NewWriter(io.Discard, zstd.WithWindowSize(1<<20), zstd.WithEncoderConcurrency(1),
				zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithLowerEncoderMem(true)) // valid options
			return zw
		}},
		br: encoderPool{new: func() encoder {
			return brotli.NewWriterOptions(io.Discard, brotli.WriterOptions{Quality: brotliQuality, LGWin: brotliWindow})
		}},
	}
}

// pick returns the coding for a response whose origin request carried the
// normalised Accept-Encoding ae, and its pool; "" when the client takes
// none of them, or with busy set when MaxCompressing responses compress
// already. A coding returned holds a slot until its compressBody is closed.
//
// An object compressed once and stored (perResponse false) is sent many
// times, so the smallest coding wins: brotli where accepted (every browser
// sends it over HTTPS), else zstd (about 5% larger than gzip at these
// settings, but a quarter of its CPU and faster to decode), else gzip. A
// response compressed for one client only (a pass) pays its compression
// every time, so the cheapest wins there: zstd (Chrome, Firefox), else
// gzip, else brotli.
func (e *encoders) pick(ae string, perResponse bool) (coding string, pool *encoderPool, busy bool) {
	type choice struct {
		coding string
		pool   *encoderPool
	}
	order := [...]choice{{"br", &e.br}, {"zstd", &e.zstd}, {"gzip", &e.gzip}}
	if perResponse {
		order = [...]choice{{"zstd", &e.zstd}, {"gzip", &e.gzip}, {"br", &e.br}}
	}
	for _, c := range order {
		if strings.Contains(ae, c.coding) {
			coding, pool = c.coding, c.pool
			break
		}
	}
	if pool == nil {
		return "", nil, false
	}
	select {
	case e.slots <- struct{}{}:
		return coding, pool, false
	default:
		return "", nil, true
	}
}

// release gives back a slot pick handed out.
func (e *encoders) release() { <-e.slots }

// compress applies the site's Compress to resp, an origin response whose
// request carried the normalised Accept-Encoding ae, when it is a
// candidate: stored once for every client of its Vary variant, or, with
// perResponse, compressed for one client as it streams through (a pass:
// uncacheable HTML and API answers, which nginx's gzip and the CDNs
// compress too). Either way it gains Vary: Accept-Encoding, so that a
// cache downstream keeps the variants apart.
func (h *siteHandler) compress(resp *http.Response, ae string, perResponse bool) {
	if !h.site.Compress || !compressCandidate(resp) {
		return
	}
	addVaryAcceptEncoding(resp.Header)
	switch coding, pool, busy := h.c.encoders.pick(ae, perResponse); {
	case pool != nil:
		h.c.compressResponse(resp, h.site.SiteID, coding, pool, perResponse)
	case busy:
		h.c.metrics.compressSkipped(h.site.SiteID, "busy")
	}
}

// compressResponse makes resp's body its encoding in coding, from pool
// (as pick returned them, with a slot), and its header say so. The caller
// then streams (and stores) the compressed bytes; the origin's read errors
// pass through unchanged, so a cut origin body is still a cut response
// (with the same body_error reason). With flush, each read of the origin's
// body is flushed through the encoder, so a response the origin streams
// (a page sent in parts, a long poll) reaches the client as it is made,
// as writeResponse sends a plain one, for a few bytes per flush.
func (c *Cache) compressResponse(resp *http.Response, site, coding string, pool *encoderPool, flush bool) {
	h := resp.Header
	h.Set("Content-Encoding", coding)
	h.Del("Content-Length")
	if et := h.Get("ETag"); et != "" {
		h.Set("ETag", weakETag(et))
	}
	resp.ContentLength = -1
	b := &compressBody{src: resp.Body, pool: pool, release: c.encoders.release, in: make([]byte, 32<<10), flush: flush, done: func(in, out int64) {
		c.metrics.compressed(site, coding, in, out)
	}}
	b.enc = pool.get(&b.out)
	resp.Body = b
}

// compressBody reads its source and returns the source's encoding.
type compressBody struct {
	src     io.ReadCloser
	pool    *encoderPool
	release func() // the encoders' slot, given back once at Close
	enc     encoder
	out     bytes.Buffer
	in      []byte
	eof     bool
	flush   bool  // flush the encoder after each source read
	read    int64 // source bytes
	written int64 // compressed bytes returned
	done    func(in, out int64)
}

func (g *compressBody) Read(p []byte) (int, error) {
	for g.out.Len() == 0 && !g.eof {
		n, err := g.src.Read(g.in)
		if n > 0 {
			g.read += int64(n)
			g.enc.Write(g.in[:n]) // into a bytes.Buffer: cannot fail
			if g.flush {
				g.enc.Flush()
			}
		}
		switch {
		case err == io.EOF:
			g.enc.Close()
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

func (g *compressBody) Close() error {
	if g.enc != nil {
		g.pool.put(g.enc)
		g.enc = nil
		g.release()
	}
	return g.src.Close()
}
