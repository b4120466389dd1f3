package cache_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/zstd"

	"github.com/meridian-edge/meridian/gateway/cache"
)

// gunzip decodes a gzip body or fails the test.
func gunzip(t *testing.T, body string) string {
	t.Helper()
	return decode(t, "gzip", body)
}

// decode decodes a body in coding (gzip, zstd or br) or fails the test.
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
	case "br":
		r = brotli.NewReader(strings.NewReader(body))
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
// origin sent plain reaches a client that accepts br, zstd or gzip
// compressed so, in the first of them it accepts (and decodes to the
// origin's bytes, zstd within RFC 9659's 8 MiB window), from the fill and
// from every later hit; a client that
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
		{"gzip, deflate, br", 1, "br"}, // the fill (Safari's)
		{"br, gzip", 1, "br"},          // a hit: the same set of codings
		{"gzip", 2, "gzip"},            // another set of codings: its own fill
		{"", 3, ""},                    // neither: the plain variant
		{"identity", 4, ""},
		{"", 4, ""}, // hits of the plain variants
		{"identity", 4, ""},
		{"gzip, deflate, br", 4, "br"},
		{"gzip, deflate, br, zstd", 5, "br"}, // Chrome's and Firefox's
		{"zstd, gzip, br", 5, "br"},
		{"zstd", 6, "zstd"},
		{"gzip, zstd", 7, "zstd"},
		{"gzip;q=1, zstd;q=0.5", 7, "zstd"}, // the edge's order, not the client's q-values
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
	for coding, pages := range map[string]int{"br": 2, "zstd": 2, "gzip": 1} {
		want := `coding="` + coding + `",pop="test-pop",side="in",site="site1"} ` + fmt.Sprint(pages*len(page))
		if !strings.Contains(txt, want) {
			t.Fatalf("metrics: want %d pages of %d bytes compressed in %s (%s):\n%s", pages, len(page), coding, want, grepLines(txt, "compress"))
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

// TestCompressPasses: a text response the cache may not store (private
// here, as a logged-in page is) is compressed for each client as it
// streams through, in the cheapest coding the client accepts (zstd, else
// gzip, else br), decodes to the origin's bytes, and still goes to the
// origin every time; a client that accepts none gets it plain. So is the
// answer to a POST. All carry Vary: Accept-Encoding, for any cache
// downstream.
func TestCompressPasses(t *testing.T) {
	page := strings.Repeat("<li>your order #4711 is on its way</li>\n", 300)
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.Header().Set("Cache-Control", "private, max-age=60")
		w.Header().Set("ETag", `"orders-1"`)
		io.WriteString(w, page)
	}, envOpt{site: cache.SitePolicy{SiteID: "site1", Compress: true}})
	for i, c := range []struct{ ae, coding string }{
		{"gzip, deflate, br, zstd", "zstd"}, // Chrome's
		{"gzip, deflate, br", "gzip"},       // Safari's
		{"br", "br"},
		{"", ""},
		{"gzip, deflate, br, zstd", "zstd"},
	} {
		r := e.getAE("/orders", c.ae)
		if r.status != 200 || e.count.Load() != int64(i+1) || !strings.Contains(r.cs(), "not-stored-private") {
			t.Fatalf("%d %q: status %d, %d origin requests, Cache-Status %q; want a pass each time", i, c.ae, r.status, e.count.Load(), r.cs())
		}
		if !strings.Contains(r.header.Get("Vary"), "Accept-Encoding") {
			t.Fatalf("%d %q: Vary %q lacks Accept-Encoding", i, c.ae, r.header.Get("Vary"))
		}
		if got := r.header.Get("Content-Encoding"); got != c.coding {
			t.Fatalf("%d %q: Content-Encoding %q, want %q", i, c.ae, got, c.coding)
		}
		if c.coding == "" {
			if r.body != page || r.header.Get("ETag") != `"orders-1"` {
				t.Fatalf("%d %q: %d bytes, ETag %q; want the origin's page and ETag", i, c.ae, len(r.body), r.header.Get("ETag"))
			}
			continue
		}
		if got := decode(t, c.coding, r.body); got != page {
			t.Fatalf("%d %q: the %s body decodes to %d bytes, not the origin's page", i, c.ae, c.coding, len(got))
		}
		if len(r.body) >= len(page)/4 || r.header.Get("ETag") != `W/"orders-1"` {
			t.Fatalf("%d %q: %d bytes for a %d-byte repetitive page, ETag %q", i, c.ae, len(r.body), len(page), r.header.Get("ETag"))
		}
	}
	// The answer to an unsafe method goes through the proxy, not the
	// cache's fetch: compressed as well.
	r := e.do(http.MethodPost, "/orders", hdr("Accept-Encoding", "gzip, deflate, br, zstd"), []byte("q=status"))
	if r.status != 200 || r.header.Get("Content-Encoding") != "zstd" || !strings.Contains(r.cs(), "fwd=method") {
		t.Fatalf("POST: status %d, Content-Encoding %q, Cache-Status %q; want a zstd pass", r.status, r.header.Get("Content-Encoding"), r.cs())
	}
	if got := decode(t, "zstd", r.body); got != page || !strings.Contains(r.header.Get("Vary"), "Accept-Encoding") {
		t.Fatalf("POST: the body decodes to %d bytes, Vary %q; want the origin's page, varying on Accept-Encoding", len(got), r.header.Get("Vary"))
	}
	if txt := metricText(t, e); !strings.Contains(txt, `coding="zstd",pop="test-pop",side="in",site="site1"} `+fmt.Sprint(3*len(page))) {
		t.Fatalf("metrics: want three pages compressed in zstd:\n%s", grepLines(txt, "compress"))
	}
}

// TestCompressPassStreams: a pass the origin streams in parts reaches the
// client compressed part by part: the client decodes the first part while
// the origin still holds back the second until the client has it, as a
// page that flushes its head early, or a long poll, needs.
func TestCompressPassStreams(t *testing.T) {
	first := strings.Repeat("<head>sent early</head>\n", 100)
	second := strings.Repeat("<body>sent late</body>\n", 100)
	gotFirst := make(chan struct{})
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.Header().Set("Cache-Control", "no-store")
		io.WriteString(w, first)
		w.(http.Flusher).Flush()
		select {
		case <-gotFirst:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, second)
	}, envOpt{site: cache.SitePolicy{SiteID: "site1", Compress: true}})
	for _, coding := range []string{"zstd", "gzip", "br"} {
		req, err := http.NewRequest(http.MethodGet, e.front.URL+"/stream", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Accept-Encoding", coding)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second) // a hang guard, not a timing
		resp, err := e.client.Do(req.WithContext(ctx))
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		if resp.Header.Get("Content-Encoding") != coding {
			t.Fatalf("%s: Content-Encoding %q", coding, resp.Header.Get("Content-Encoding"))
		}
		var dec io.Reader
		switch coding {
		case "zstd":
			zr, err := zstd.NewReader(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			defer zr.Close()
			dec = zr
		case "gzip":
			zr, err := gzip.NewReader(resp.Body)
			if err != nil {
				t.Fatalf("gzip: %v (the first part never arrived?)", err)
			}
			dec = zr
		case "br":
			dec = brotli.NewReader(resp.Body)
		}
		part := make([]byte, len(first))
		if _, err := io.ReadFull(dec, part); err != nil || string(part) != first {
			t.Fatalf("%s: the first part did not arrive before the origin sent the rest: %v", coding, err)
		}
		gotFirst <- struct{}{}
		rest, err := io.ReadAll(dec)
		if err != nil || string(rest) != second {
			t.Fatalf("%s: the rest decodes to %d bytes (%v), want the second part", coding, len(rest), err)
		}
		resp.Body.Close()
		cancel()
	}
}
