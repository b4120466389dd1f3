package cache_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/gateway/cache"
	"github.com/meridian-edge/meridian/gateway/cache/l1"
	"github.com/meridian-edge/meridian/gateway/cache/l2"
	"github.com/meridian-edge/meridian/gateway/cache/tier"
	"github.com/meridian-edge/meridian/gateway/cache/tiered"
	"github.com/meridian-edge/meridian/internal/testutil"
)

// TestMaxL1ObjectLimitsOnlyTheMemoryTier: a site's MaxL1Object keeps larger
// responses out of L1 (which would take them: its own limit is larger), not
// out of the cache: they are stored in L2 and answered from there, whether
// their length was announced or not, and are not promoted into L1 later.
// Responses larger than every tier takes stream through, counted too_large.
func TestMaxL1ObjectLimitsOnlyTheMemoryTier(t *testing.T) {
	const (
		siteL1 = 256 << 10 // the site's memory limit
		l1Max  = 2 << 20   // L1's own limit, above it
		l2Max  = 4 << 20   // the largest object any tier takes
	)
	t1, err := l1.New(l1.Options{Bytes: 64 << 20, LargeBytes: 32 << 20, MaxObject: l1Max})
	if err != nil {
		t.Fatal(err)
	}
	t2, err := l2.Open(l2.Options{Dir: t.TempDir(), Bytes: 64 << 20, MaxObject: l2Max})
	if err != nil {
		t.Fatal(err)
	}
	store, err := tiered.New(tiered.Options{Tiers: []tier.Tier{t1, t2}, PromoteAfter: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close(); t2.Close(); t1.Close() })

	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		size, _ := strconv.Atoi(r.URL.Query().Get("size"))
		w.Header().Set("Cache-Control", "public, max-age=3600")
		body := bodyFor(r.URL.Path, size)
		if strings.HasPrefix(r.URL.Path, "/stream") {
			// No Content-Length: flushed in pieces, sent chunked.
			for len(body) > 0 {
				n := min(len(body), 64<<10)
				w.Write(body[:n])
				w.(http.Flusher).Flush()
				body = body[n:]
			}
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(size))
		w.Write(body)
	}, envOpt{opts: cache.Options{Store: store}, site: cache.SitePolicy{SiteID: "video", MaxL1Object: siteL1}})

	tests := []struct {
		path     string
		size     int
		wantTier string // "" for not stored
	}{
		{"/small", 100 << 10, "l1"},
		{"/known", 1500 << 10, "l2"},
		{"/stream", 1500 << 10, "l2"},
		{"/stream-small", 100 << 10, "l1"},
		{"/huge", 5 << 20, ""},
		{"/stream-huge", 5 << 20, ""},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, tc := range tests {
		url := fmt.Sprintf("%s?size=%d", tc.path, tc.size)
		want := bodyFor(tc.path, tc.size)
		before := e.count.Load()
		// Three times: the second and third would have been promoted to
		// L1 if that were allowed (PromoteAfter 1).
		for i := range 3 {
			r := e.get(url)
			if r.status != 200 || !bytes.Equal([]byte(r.body), want) {
				t.Fatalf("%s, request %d: %d, %d bytes, want 200 with the %d bytes", tc.path, i+1, r.status, len(r.body), len(want))
			}
			if err := store.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			// Every origin fetch ends in one store outcome (stored or
			// too_large) once its fill is over.
			testutil.WaitFor(t, "the fill of "+tc.path+" to end", func() bool {
				return int64(testutil.MetricSum(t, e.reg, "meridian_cache_stores_total", nil)) == e.count.Load()
			})
			if i == 0 {
				continue
			}
			cs := r.cs()
			if tc.wantTier == "" {
				if !strings.Contains(cs, "fwd=uri-miss") {
					t.Errorf("%s, request %d: %s, want a miss (too large to store)", tc.path, i+1, cs)
				}
			} else if !strings.Contains(cs, "hit; ttl=") || !strings.HasSuffix(cs, "detail="+tc.wantTier) {
				t.Errorf("%s, request %d: %s, want a hit from %s", tc.path, i+1, cs, tc.wantTier)
			}
		}
		wantFetches := int64(1)
		if tc.wantTier == "" {
			wantFetches = 3
		}
		if n := e.count.Load() - before; n != wantFetches {
			t.Errorf("%s: the origin was asked %d times, want %d", tc.path, n, wantFetches)
		}
	}
	if n := testutil.CounterSum(t, e.reg, "meridian_cache_stores_total", "outcome", "too_large"); n != 6 {
		t.Errorf("too_large stores: %v, want 6 (each request of the two huge objects)", n)
	}
}
