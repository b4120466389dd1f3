package cache_test

import (
	"bytes"
	"compress/gzip"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/meridian-edge/meridian/gateway/cache"
)

// TestVaryAcceptEncodingNormalised: an origin that compresses and says
// Vary: Accept-Encoding (nginx's gzip_vary, Apache's mod_deflate) gets one
// fill per set of codings clients accept, not one per spelling browsers and
// tools use; it is sent the normalised field, so a stored variant was made
// for what its clients accept, and a client that does not take gzip never
// gets a gzip body.
func TestVaryAcceptEncodingNormalised(t *testing.T) {
	var mu sync.Mutex
	var seen []string // Accept-Encoding as the origin received it
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(strings.Repeat("compressible ", 100)))
	zw.Close()
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		ae := r.Header.Get("Accept-Encoding")
		mu.Lock()
		seen = append(seen, ae)
		mu.Unlock()
		w.Header().Set("Cache-Control", "max-age=600")
		w.Header().Set("Vary", "Accept-Encoding")
		if strings.Contains(ae, "gzip") {
			w.Header().Set("Content-Encoding", "gzip")
			w.Write(gz.Bytes())
			return
		}
		w.Write([]byte(strings.Repeat("compressible ", 100)))
	}, envOpt{site: cache.SitePolicy{SiteID: "site1"}})

	for i, c := range []struct {
		ae        string // "" sends none
		fetches   int64  // origin requests so far
		originSaw string // what the origin received on a fill
		gzipped   bool
	}{
		{"gzip, deflate, br", 1, "br, gzip", true},           // Chrome-like
		{"br, gzip", 1, "", true},                            // same codings: a hit
		{"gzip, deflate, br", 1, "", true},                   // again, from the fast path
		{"br;q=1.0, gzip;q=0.8, deflate;q=0.5", 1, "", true}, // q-values, same set
		{"deflate, gzip", 2, "gzip", true},                   // gzip alone: another variant
		{"GZIP", 2, "", true},                                // case
		{"gzip;q=0, identity", 3, "identity", false},         // refuses gzip
		{"identity", 3, "", false},
		{"", 4, "", false}, // no field: its own variant, sent none
	} {
		r := e.getAE("/asset.css", c.ae)
		if r.status != 200 {
			t.Fatalf("%d %q: status %d", i, c.ae, r.status)
		}
		if n := e.count.Load(); n != c.fetches {
			t.Fatalf("%d %q: %d origin requests, want %d (Cache-Status %q)", i, c.ae, n, c.fetches, r.cs())
		}
		if got := r.header.Get("Content-Encoding") == "gzip"; got != c.gzipped {
			t.Fatalf("%d %q: gzip body %v, want %v", i, c.ae, got, c.gzipped)
		}
		if c.gzipped && r.body != gz.String() {
			t.Fatalf("%d %q: the gzip body changed on the way", i, c.ae)
		}
		mu.Lock()
		last := seen[len(seen)-1]
		mu.Unlock()
		if c.originSaw != "" && last != c.originSaw {
			t.Fatalf("%d %q: the origin received Accept-Encoding %q, want %q", i, c.ae, last, c.originSaw)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if seen[3] != "" {
		t.Fatalf("a request without Accept-Encoding reached the origin with %q", seen[3])
	}
}
