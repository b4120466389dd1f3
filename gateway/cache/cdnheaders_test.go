package cache_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/meridian-edge/meridian/gateway/cache"
)

// TestCDNFieldsNeverReachClients: Surrogate-Key, Cache-Tag and
// Surrogate-Control are addressed to the CDN: no answer carries them (miss,
// hit on either path, 304, HEAD, a response passed on uncached), yet a
// purge by surrogate key still finds the stored response, and
// Surrogate-Control still sets its freshness.
func TestCDNFieldsNeverReachClients(t *testing.T) {
	for _, plain := range []bool{false, true} {
		name := "fast path"
		if plain {
			name = "net/http only"
		}
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
				h := w.Header()
				h.Set("Surrogate-Key", "product-7 all")
				h.Set("Cache-Tag", "catalog")
				if r.URL.Path == "/private" {
					h.Set("Cache-Control", "private")
				} else {
					h.Set("Cache-Control", "max-age=0")       // for browsers
					h.Set("Surrogate-Control", "max-age=600") // for us: stored fresh
				}
				h.Set("ETag", `"v1"`)
				io.WriteString(w, "product 7")
			}, envOpt{plainFront: plain})
			check := func(what string, r reply) {
				t.Helper()
				for _, f := range []string{"Surrogate-Key", "Cache-Tag", "Surrogate-Control"} {
					if v := r.header.Values(f); len(v) > 0 {
						t.Errorf("%s: the client got %s: %q", what, f, v)
					}
				}
			}
			check("miss", e.get("/p"))
			settle(t, e)
			hit := e.get("/p")
			if !strings.Contains(hit.cs(), "hit") {
				t.Fatalf("second GET: %s, want a hit (Surrogate-Control max-age=600)", hit.cs())
			}
			check("hit", hit)
			check("HEAD hit", e.do(http.MethodHead, "/p", nil, nil))
			nm := e.get("/p", "If-None-Match", `"v1"`)
			if nm.status != http.StatusNotModified {
				t.Fatalf("conditional GET: %d, want 304", nm.status)
			}
			check("304", nm)
			check("range", e.get("/p", "Range", "bytes=0-2"))
			check("uncached", e.get("/private"))
			check("POST (passed on)", e.do(http.MethodPost, "/p", nil, []byte("x")))

			// The POST invalidated /p: store it again, then purge by key.
			e.get("/p")
			settle(t, e)
			n, err := e.c.Purge(context.Background(), cache.Selector{Site: e.site.SiteID, Kind: cache.BySurrogateKey, Value: "product-7"})
			if err != nil || n != 1 {
				t.Fatalf("purge by surrogate key: %d, %v; want 1", n, err)
			}
			if r := e.get("/p"); !strings.Contains(r.cs(), "fwd=uri-miss") {
				t.Fatalf("after the purge: %s, want a miss", r.cs())
			}
		})
	}
}

// TestStoredResponsesAdvertiseRanges: a 200 from a stored response says
// Accept-Ranges: bytes (the cache serves ranges of it), on either path and
// for HEAD, whatever the origin said; ranges are indeed served.
func TestStoredResponsesAdvertiseRanges(t *testing.T) {
	for _, plain := range []bool{false, true} {
		name := "fast path"
		if plain {
			name = "net/http only"
		}
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Cache-Control", "max-age=600")
				if r.URL.Path == "/none" {
					w.Header().Set("Accept-Ranges", "none")
				}
				io.WriteString(w, "0123456789")
			}, envOpt{plainFront: plain})
			for _, p := range []string{"/plain", "/none"} {
				e.get(p)
				settle(t, e)
				for _, m := range []string{http.MethodGet, http.MethodHead} {
					r := e.do(m, p, nil, nil)
					if !strings.Contains(r.cs(), "hit") {
						t.Fatalf("%s %s: %s, want a hit", m, p, r.cs())
					}
					if got := r.header.Values("Accept-Ranges"); len(got) != 1 || got[0] != "bytes" {
						t.Errorf("%s %s: Accept-Ranges %q, want [bytes]", m, p, got)
					}
				}
				if r := e.get(p, "Range", "bytes=2-4"); r.status != http.StatusPartialContent || r.body != "234" {
					t.Errorf("Range on %s: %d %q, want 206 \"234\"", p, r.status, r.body)
				}
			}
		})
	}
}
