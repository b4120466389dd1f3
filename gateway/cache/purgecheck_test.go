package cache_test

import (
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/gateway/cache"
)

// replicatedPurges stands in for the purge log replicated from other PoPs
// (internal/statesync provides the real one; its own tests cover it): a
// purge recorded there must make older stored responses unservable at once,
// before any tier is swept.
type replicatedPurges struct {
	mu    sync.Mutex
	url   string
	tag   string
	soft  bool
	at    time.Time
	calls int
}

func (p *replicatedPurges) check(site, url string, keys []string, storedAt time.Time) (bool, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls++
	if p.at.IsZero() || !storedAt.Before(p.at) {
		return false, false
	}
	match := url == p.url
	for _, k := range keys {
		match = match || k == p.tag
	}
	if !match {
		return false, false
	}
	return !p.soft, p.soft
}

func TestPurgeCheckOnRead(t *testing.T) {
	for _, c := range []struct {
		name     string
		url, tag string
		soft     bool
		wantCS   string
		wantCond bool // the origin sees a conditional request (revalidation)
	}{
		{"hard purge by url", "http://www.example.test/a", "", false, "fwd=uri-miss", false},
		{"hard purge by surrogate key", "", "product-7", false, "fwd=uri-miss", false},
		{"soft purge by url", "http://www.example.test/a", "", true, "fwd=stale", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			purges := &replicatedPurges{}
			var lastINM string
			var mu sync.Mutex
			e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				lastINM = r.Header.Get("If-None-Match")
				mu.Unlock()
				w.Header().Set("Cache-Control", "max-age=600")
				w.Header().Set("ETag", `"v1"`)
				w.Header().Set("Surrogate-Key", "catalog product-7")
				w.Write([]byte("body"))
			}, envOpt{opts: cache.Options{PurgeCheck: purges.check}})
			host := http.Header{"Host": {"www.example.test"}}
			e.do("GET", "/a", host, nil)
			if r := e.do("GET", "/a", host, nil); !strings.Contains(r.cs(), "hit") {
				t.Fatalf("second GET not a hit: %s", r.cs())
			}
			before := e.count.Load()

			purges.mu.Lock()
			purges.url, purges.tag, purges.soft, purges.at = c.url, c.tag, c.soft, e.clock.Now().Add(time.Second)
			purges.mu.Unlock()

			r := e.do("GET", "/a", host, nil)
			if r.status != 200 || r.body != "body" {
				t.Fatalf("after purge: %d %q", r.status, r.body)
			}
			if e.count.Load() != before+1 {
				t.Fatalf("origin requests %d -> %d; a purged object must go to the origin", before, e.count.Load())
			}
			mu.Lock()
			cond := lastINM != ""
			mu.Unlock()
			if cond != c.wantCond {
				t.Fatalf("conditional request to origin = %v, want %v (If-None-Match %q)", cond, c.wantCond, lastINM)
			}
			if !strings.Contains(r.cs(), c.wantCS) && !strings.Contains(r.cs(), "revalidated") {
				t.Fatalf("Cache-Status %q, want %s", r.cs(), c.wantCS)
			}
		})
	}
}
