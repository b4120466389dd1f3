package stack_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/internal/stack"
)

// storedCount sums meridian_cache_stores_total{outcome="stored"} on pop's
// /metrics.
func storedCount(t *testing.T, st *stack.Stack, pop string) float64 {
	t.Helper()
	_, body := adminDo(t, st, pop, "GET", "/metrics", "")
	re := regexp.MustCompile(`(?m)^meridian_cache_stores_total\{[^}]*outcome="stored"[^}]*\} (\S+)$`)
	var sum float64
	for _, m := range re.FindAllStringSubmatch(body, -1) {
		v, err := strconv.ParseFloat(m[1], 64)
		if err != nil {
			t.Fatalf("metrics: %q: %v", m[0], err)
		}
		sum += v
	}
	return sum
}

// TestLargeResponsesBypassOnlyTheMemoryTier: with the default
// max_l1_object (4 MiB), a 5 MB response is stored all the same (in L2,
// as the reference config says: "larger responses bypass the memory
// tier") and answered from there, and a 3 MB one, under the limit, from
// memory (L1 takes objects up to the sites' max_l1_object, not only its own
// 1 MiB default). Each is fetched from the origin once.
func TestLargeResponsesBypassOnlyTheMemoryTier(t *testing.T) {
	var mu sync.Mutex
	fetched := map[string]int{}
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/bytes/"))
		if err != nil || n < 0 {
			http.Error(w, "want /bytes/N", http.StatusNotFound)
			return
		}
		mu.Lock()
		fetched[r.URL.Path]++
		mu.Unlock()
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Cache-Control", "public, max-age=600")
		w.Header().Set("Content-Length", strconv.Itoa(n))
		w.Write(make([]byte, n))
	}))
	defer origin.Close()
	cfg := devConfig(t, origin.URL)
	if got := cfg.Sites[0].Cache.MaxL1Object; got != 4<<20 {
		t.Fatalf("the dev site's max_l1_object is %v; this test expects the 4 MiB default", got)
	}
	st := runStack(t, cfg, stack.Roles{AllPoPs: true}, nil)
	const pop = "ap-northeast-1"
	for _, tc := range []struct {
		size int
		tier string
	}{
		{5_000_000, "l2"},
		{3_000_000, "l1"},
	} {
		path := fmt.Sprintf("/bytes/%d", tc.size)
		stored := storedCount(t, st, pop)
		for i := range 3 {
			resp, body := siteGet(t, st, pop, path)
			cs := resp.Header.Get("Cache-Status")
			if resp.StatusCode != 200 || len(body) != tc.size {
				t.Fatalf("%s, request %d: %d with %d bytes (%s)", path, i+1, resp.StatusCode, len(body), cs)
			}
			if i == 0 {
				if !strings.Contains(cs, "fwd=uri-miss") || !strings.Contains(cs, "stored") {
					t.Fatalf("%s, first request: %s, want a miss that is stored", path, cs)
				}
				// The fill commits after the client has the last byte.
				deadline := time.Now().Add(10 * time.Second)
				for storedCount(t, st, pop) <= stored {
					if time.Now().After(deadline) {
						t.Fatalf("%s: not stored within 10s", path)
					}
					time.Sleep(20 * time.Millisecond)
				}
				continue
			}
			if !strings.Contains(cs, "hit") || !strings.HasSuffix(cs, "detail="+tc.tier) {
				t.Errorf("%s, request %d: %s, want a hit from %s", path, i+1, cs, tc.tier)
			}
		}
		mu.Lock()
		n := fetched[path]
		mu.Unlock()
		if n != 1 {
			t.Errorf("%s: the origin was asked %d times, want once", path, n)
		}
	}
}
