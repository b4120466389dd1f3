package cache_test

import (
	"bytes"
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/gateway/cache"
	"github.com/meridian-edge/meridian/gateway/cache/l1"
	"github.com/meridian-edge/meridian/gateway/cache/l2"
	"github.com/meridian-edge/meridian/gateway/cache/l3"
	"github.com/meridian-edge/meridian/gateway/cache/tier"
	"github.com/meridian-edge/meridian/gateway/cache/tiered"
	"github.com/meridian-edge/meridian/internal/testutil"
)

// TestHEADFromL3IsPromoted: a HEAD answered from L3 (the S3-style tier of
// a real S3 server) promotes the object as a GET would, so the next HEAD,
// and the next GET, are L1 hits with the origin's body, on the fast path
// and on net/http alike.
func TestHEADFromL3IsPromoted(t *testing.T) {
	srv := testutil.StartS3(t)
	want := bytes.Repeat([]byte("0123456789abcdef"), 50_000/16)
	origin := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=600")
		w.Header().Set("Content-Type", "application/octet-stream")
		_, _ = w.Write(want)
	}
	for i, c := range []struct {
		name  string
		plain bool
	}{{"fast path", false}, {"net/http", true}} {
		t.Run(c.name, func(t *testing.T) {
			t1, err := l1.New(l1.Options{Bytes: 8 << 20})
			if err != nil {
				t.Fatal(err)
			}
			t2, err := l2.Open(l2.Options{Dir: t.TempDir(), Bytes: 64 << 20})
			if err != nil {
				t.Fatal(err)
			}
			t3, err := l3.New(l3.Options{Endpoint: srv.Endpoint, Bucket: "cache", Prefix: "head" + strconv.Itoa(i),
				AccessKey: "meridian-test", SecretKey: "meridian-test-secret", Timeout: 5 * time.Second, SweepInterval: -1, SpoolDir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			// PromoteAfter 1: every lower-tier hit is promoted, so the
			// test does not depend on how many lookups the fill made.
			all, err := tiered.New(tiered.Options{Tiers: []tier.Tier{t1, t2, t3}, PromoteAfter: 1})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { all.Close(); t3.Close(); t2.Close(); t1.Close() })
			flush := func() {
				t.Helper()
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				if err := all.Flush(ctx); err != nil {
					t.Fatal(err)
				}
			}
			e := newEnv(t, origin, envOpt{opts: cache.Options{Store: all}, plainFront: c.plain})

			if r := e.get("/obj", "Host", "x"); r.body != string(want) {
				t.Fatalf("fill: %d bytes, want %d", len(r.body), len(want))
			}
			waitStored(t, e, 1)
			flush()
			// Only L3 holds it now, as when another PoP of the region
			// filled it or the local tiers evicted it.
			key := ""
			if err := all.Scan(context.Background(), func(k string, m *tier.Meta) bool {
				if strings.HasSuffix(m.URL, "/obj") {
					key = k
				}
				return true
			}); err != nil || key == "" {
				t.Fatalf("stored key not found (%v)", err)
			}
			for _, tr := range []tier.Tier{t1, t2} {
				if err := tr.Delete(context.Background(), key); err != nil {
					t.Fatal(err)
				}
			}

			head := func(wantTier string) {
				t.Helper()
				r := e.do(http.MethodHead, "/obj", hdr("Host", "x"), nil)
				if r.status != http.StatusOK || !strings.Contains(r.cs(), "hit") || !strings.Contains(r.cs(), "detail="+wantTier) {
					t.Fatalf("HEAD: %d, Cache-Status %q; want a 200 hit from %s", r.status, r.cs(), wantTier)
				}
				if cl := r.header.Get("Content-Length"); cl != strconv.Itoa(len(want)) {
					t.Fatalf("HEAD from %s: Content-Length %q, want %d", wantTier, cl, len(want))
				}
			}
			head("l3")
			flush() // the promotion is copied off the request path
			head("l1")
			r := e.get("/obj", "Host", "x")
			if !strings.Contains(r.cs(), "detail=l1") || r.body != string(want) {
				t.Fatalf("GET after the HEAD: Cache-Status %q, %d bytes; want the whole body from l1", r.cs(), len(r.body))
			}
			if n := e.count.Load(); n != 1 {
				t.Fatalf("origin asked %d times, want 1 (the fill)", n)
			}
			c := all.Counters()
			if c.Promotions["l1"] != 1 || c.Promotions["l2"] != 1 || c.Hits["l3"] != 1 {
				t.Fatalf("counters = %+v; want one promotion into l1 and l2 from one l3 hit", c)
			}
		})
	}
}
