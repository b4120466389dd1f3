package cache_test

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/meridian-edge/meridian/gateway/cache"
)

// gunzip decodes a gzip body or fails the test.
func gunzip(t *testing.T, body string) string {
	t.Helper()
	return decode(t, "gzip", body)
}

// decode decodes a body in coding (gzip or zstd) or fails the test.
func decode(t *testing.T, coding, body string) string {
	t.Helper()
	var r io.Reader
	switch coding {
	case "gzip":
		zr, err := gzip.NewReader(strings.NewReader(body))
		if err != nil {
			t.Fatalf("not a gzip body: %v", err)
		}
		r = zr
	case "zstd":
		zr, err := zstd.NewReader(strings.NewReader(body), zstd.WithDecoderMaxWindow(8<<20))
		if err != nil {
			t.Fatal(err)
		}
		defer zr.Close()
		r = zr
	default:
		t.Fatalf("unknown coding %q", coding)
	}
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("%s body: %v", coding, err)
	}
	return string(b)
}

// TestCompressAtTheEdge: with a site's Compress on, a text response the
// origin sent plain reaches a client that accepts zstd or gzip compressed
// so, zstd first (and decodes to the origin's bytes, within RFC 9659's 8
// MiB window), from the fill and from every later hit; a client that
// accepts neither gets the plain bytes from its own variant; all carry
// Vary: Accept-Encoding, the compressed ones a weak ETag. The origin is
// asked once per variant.
func TestCompressAtTheEdge(t *testing.T) {
	page := strings.Repeat("<p>compress me at the edge</p>\n", 200)
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "max-age=600")
		w.Header().Set("ETag", `"page-v1"`)
		io.WriteString(w, page)
	}, envOpt{site: cache.SitePolicy{SiteID: "site1", Compress: true}})

	for i, c := range []struct {
		ae      string
		fetches int64
		coding  string
	}{
		{"gzip, deflate, br", 1, "gzip"}, // the fill
		{"br, gzip", 1, "gzip"},          // a hit
		{"gzip", 2, "gzip"},              // another set of codings: its own fill
		{"", 3, ""},                      // neither: the plain variant
		{"identity", 4, ""},
		{"", 4, ""}, // hits of the plain variants
		{"identity", 4, ""},
		{"gzip, deflate, br", 4, "gzip"},
		{"gzip, deflate, br, zstd", 5, "zstd"}, // Chrome's and Firefox's
		{"zstd, gzip, br", 5, "zstd"},
		{"zstd", 6, "zstd"},
	} {
		r := e.getAE("/page.html", c.ae)
		if r.status != 200 {
			t.Fatalf("%d %q: status %d", i, c.ae, r.status)
		}
		if n := e.count.Load(); n != c.fetches {
			t.Fatalf("%d %q: %d origin requests, want %d (Cache-Status %q)", i, c.ae, n, c.fetches, r.cs())
		}
		if !strings.Contains(r.header.Get("Vary"), "Accept-Encoding") {
			t.Fatalf("%d %q: Vary %q lacks Accept-Encoding", i, c.ae, r.header.Get("Vary"))
		}
		if c.coding == "" {
			if r.header.Get("Content-Encoding") != "" || r.body != page || r.header.Get("ETag") != `"page-v1"` {
				t.Fatalf("%d %q: Content-Encoding %q, ETag %q, body of %d bytes; want the origin's plain page and ETag", i, c.ae,
					r.header.Get("Content-Encoding"), r.header.Get("ETag"), len(r.body))
			}
			continue
		}
		if r.header.Get("Content-Encoding") != c.coding {
			t.Fatalf("%d %q: Content-Encoding %q, want %s (Cache-Status %q)", i, c.ae, r.header.Get("Content-Encoding"), c.coding, r.cs())
		}
		if got := decode(t, c.coding, r.body); got != page {
			t.Fatalf("%d %q: the %s body decodes to %d bytes, not the origin's page", i, c.ae, c.coding, len(got))
		}
		if len(r.body) >= len(page)/4 {
			t.Fatalf("%d %q: %d compressed bytes for a %d-byte repetitive page", i, c.ae, len(r.body), len(page))
		}
		if et := r.header.Get("ETag"); et != `W/"page-v1"` {
			t.Fatalf("%d %q: ETag %q, want the weak W/\"page-v1\"", i, c.ae, et)
		}
		if cl := r.header.Get("Content-Length"); cl != "" && cl != fmt.Sprint(len(r.body)) {
			t.Fatalf("%d %q: Content-Length %s for a %d-byte body", i, c.ae, cl, len(r.body))
		}
	}
	txt := metricText(t, e)
	for _, want := range []string{`coding="gzip",pop="test-pop",side="in",site="site1"} ` + fmt.Sprint(2*len(page)),
		`coding="zstd",pop="test-pop",side="in",site="site1"} ` + fmt.Sprint(2*len(page))} {
		if !strings.Contains(txt, want) {
			t.Fatalf("metrics: want two pages of %d bytes compressed in each coding (%s):\n%s", len(page), want, grepLines(txt, "compress"))
		}
	}
}

// grepLines returns the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestCompressLeavesAlone: what the edge must not compress passes as the
// origin sent it, without Vary: Accept-Encoding added: an image, a
// response the origin encoded itself, no-transform, a body under the
// minimum size, and a site without Compress.
func TestCompressLeavesAlone(t *testing.T) {
	big := strings.Repeat("x", 4096)
	for _, c := range []struct {
		name     string
		compress bool
		header   []string
		body     string
	}{
		{"an image", true, []string{"Content-Type", "image/png"}, big},
		{"already encoded", true, []string{"Content-Type", "text/css", "Content-Encoding", "br"}, big},
		{"no-transform", true, []string{"Content-Type", "text/css", "Cache-Control", "max-age=60, no-transform"}, big},
		{"under the minimum size", true, []string{"Content-Type", "text/css"}, strings.Repeat("x", cache.MinCompressSize-1)},
		{"site without Compress", false, []string{"Content-Type", "text/css"}, big},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Cache-Control", "max-age=60")
				for i := 0; i+1 < len(c.header); i += 2 {
					w.Header().Set(c.header[i], c.header[i+1])
				}
				io.WriteString(w, c.body)
			}, envOpt{site: cache.SitePolicy{SiteID: "site1", Compress: c.compress}})
			for range 2 {
				r := e.get("/x", "Accept-Encoding", "gzip")
				if r.body != c.body || r.header.Get("Vary") != "" {
					t.Fatalf("body of %d bytes (Content-Encoding %q), Vary %q; want the origin's %d bytes, no Vary",
						len(r.body), r.header.Get("Content-Encoding"), r.header.Get("Vary"), len(c.body))
				}
			}
			if n := e.count.Load(); n != 1 {
				t.Fatalf("%d origin requests, want 1 (then a hit)", n)
			}
		})
	}
}

// TestCompressRevalidation: a compressed copy revalidates with the
// origin's validator (weakly compared) and a 304 keeps it compressed, its
// ETag weak and its Vary; a changed page is compressed again.
func TestCompressRevalidation(t *testing.T) {
	version := "v1"
	page := func() string { return strings.Repeat("<p>"+version+"</p>\n", 300) }
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		etag := `"` + version + `"`
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("ETag", etag)
		if inm := r.Header.Get("If-None-Match"); inm == etag || inm == "W/"+etag {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Header().Set("Content-Type", "text/html")
		io.WriteString(w, page())
	}, envOpt{site: cache.SitePolicy{SiteID: "site1", Compress: true}})
	check := func(step string, wantFetches int64) {
		t.Helper()
		r := e.get("/p", "Accept-Encoding", "gzip")
		if n := e.count.Load(); n != wantFetches {
			t.Fatalf("%s: %d origin requests, want %d", step, n, wantFetches)
		}
		if r.header.Get("Content-Encoding") != "gzip" || gunzip(t, r.body) != page() {
			t.Fatalf("%s: Content-Encoding %q, want the current page gzipped", step, r.header.Get("Content-Encoding"))
		}
		if et := r.header.Get("ETag"); et != `W/"`+version+`"` || !strings.Contains(r.header.Get("Vary"), "Accept-Encoding") {
			t.Fatalf("%s: ETag %q, Vary %q", step, et, r.header.Get("Vary"))
		}
	}
	check("fill", 1)
	e.clock.Advance(2 * time.Minute)
	check("revalidated by a 304", 2)
	check("a hit after the 304", 2)
	version = "v2"
	e.clock.Advance(2 * time.Minute)
	check("changed at the origin", 3)
}

// TestCompressCutOriginBody: an origin body cut short is not stored
// compressed as if whole: the next request fetches again.
func TestCompressCutOriginBody(t *testing.T) {
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Content-Length", "100000")
		io.WriteString(w, strings.Repeat("a", 5000))
		panic(http.ErrAbortHandler)
	}, envOpt{site: cache.SitePolicy{SiteID: "site1", Compress: true}, timeout: 2 * time.Second})
	for i := range 2 {
		req, err := http.NewRequest(http.MethodGet, e.front.URL+"/cut", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Accept-Encoding", "gzip")
		resp, err := e.client.Do(req)
		if err != nil {
			continue // cut before the header: fine
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil {
			t.Fatalf("request %d: the client read a whole body (%d bytes, Content-Encoding %q) of a cut origin response", i, len(body), resp.Header.Get("Content-Encoding"))
		}
		if resp.Header.Get("Content-Encoding") == "gzip" {
			if zr, zerr := gzip.NewReader(bytes.NewReader(body)); zerr == nil {
				if _, zerr := io.ReadAll(zr); zerr == nil {
					t.Fatalf("request %d: a whole gzip stream for a cut origin body", i)
				}
			}
		}
	}
	if n := e.count.Load(); n < 2 {
		t.Fatalf("%d origin requests: the cut body was stored", n)
	}
}

// TestCompressBoundedWhileOriginsStream: fills that compress hold an
// encoder for as long as their origin streams; past the bound a fill is
// stored as the origin sent it (and counted), so many slow text fills
// cannot pile up encoder memory; once the slow ones end, fills compress
// again.
func TestCompressBoundedWhileOriginsStream(t *testing.T) {
	release := make(chan struct{})
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, strings.Repeat("slow text ", 300))
		w.(http.Flusher).Flush()
		if strings.HasPrefix(r.URL.Path, "/slow/") {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
	}, envOpt{site: cache.SitePolicy{SiteID: "site1", Compress: true}, timeout: 30 * time.Second})
	get := func(path string) *http.Response {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, e.front.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Accept-Encoding", "gzip")
		resp, err := e.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	var open []*http.Response
	defer func() {
		for _, r := range open {
			r.Body.Close()
		}
	}()
	for i := range cache.MaxCompressing {
		r := get(fmt.Sprintf("/slow/%d", i))
		open = append(open, r)
		if ce := r.Header.Get("Content-Encoding"); ce != "gzip" {
			t.Fatalf("slow fill %d: Content-Encoding %q, want gzip (under the bound)", i, ce)
		}
	}
	r := get("/slow/over")
	open = append(open, r)
	if ce := r.Header.Get("Content-Encoding"); ce != "" {
		t.Fatalf("fill %d while %d compress: Content-Encoding %q, want the origin's plain bytes", cache.MaxCompressing+1, cache.MaxCompressing, ce)
	}
	if txt := metricText(t, e); !strings.Contains(txt, `meridian_cache_compress_skipped_total{pop="test-pop",reason="busy",site="site1"} 1`) {
		t.Fatalf("skipped fill not counted:\n%s", grepLines(txt, "compress_skipped"))
	}
	close(release)
	for _, r := range open {
		io.Copy(io.Discard, r.Body)
		r.Body.Close()
	}
	open = nil
	// The slots come back as the fills end (their bodies closed).
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := get(fmt.Sprintf("/after/%d", time.Now().UnixNano()))
		io.Copy(io.Discard, r.Body)
		r.Body.Close()
		if r.Header.Get("Content-Encoding") == "gzip" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no fill compresses after the slow ones ended: slots were not given back")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
