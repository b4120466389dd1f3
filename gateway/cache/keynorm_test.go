package cache_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/meridian-edge/meridian/gateway/cache"
	"github.com/meridian-edge/meridian/internal/testutil"
)

// rawGet sends one request head exactly as written (target and Host as
// given, which net/http's client would rewrite or refuse) and reads the
// reply.
func rawGet(t *testing.T, addr, target, host string) reply {
	t.Helper()
	resp := testutil.Exchange(t, addr, fmt.Sprintf("GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", target, host))[0]
	b, _ := io.ReadAll(resp.Body) // a reader over bytes Exchange read whole
	return reply{status: resp.StatusCode, header: resp.Header, body: string(b)}
}

// TestCacheKeyNormalisation: spellings of one URL that RFC 3986 6.2.2 makes
// equivalent (percent-encoding case, escaped unreserved characters), the
// Host with a port or a trailing dot, and a fragment in the request-target
// share one cache entry, on the fast path and through net/http; the origin
// never sees the fragment. An escaped slash and dot segments stay distinct.
func TestCacheKeyNormalisation(t *testing.T) {
	for _, plain := range []bool{false, true} {
		name := "fast path"
		if plain {
			name = "net/http only"
		}
		t.Run(name, func(t *testing.T) {
			var mu sync.Mutex
			var seen []string // request-targets the origin received
			e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				seen = append(seen, r.RequestURI)
				mu.Unlock()
				w.Header().Set("Cache-Control", "max-age=600")
				io.WriteString(w, "for "+r.RequestURI)
			}, envOpt{plainFront: plain})
			addr := e.front.Listener.Addr().String()
			groups := []struct {
				name    string
				targets [][2]string // target, Host
			}{
				{"host forms", [][2]string{
					{"/h", "www.example.test"}, {"/h", "www.example.test:8080"}, {"/h", "www.example.test:9999"},
					{"/h", "www.example.test."}, {"/h", "WWW.Example.TEST.:8080"},
				}},
				{"escaped unreserved", [][2]string{{"/norm/~x", "a.test"}, {"/norm/%7Ex", "a.test"}, {"/norm/%7ex", "a.test"}}},
				{"hex case", [][2]string{{"/norm/a%2fb", "a.test"}, {"/norm/a%2Fb", "a.test"}}},
				{"query", [][2]string{{"/q?v=%7e&w=%c3%a9", "a.test"}, {"/q?v=~&w=%C3%A9", "a.test"}}},
				{"fragment", [][2]string{{"/frag/x#one", "a.test"}, {"/frag/x#two", "a.test"}, {"/frag/x", "a.test"}}},
				{"fragment after a query", [][2]string{{"/fq?a=1#x", "a.test"}, {"/fq?a=1", "a.test"}}},
				// Each of these is its own resource to an origin that does
				// not clean paths: not merged.
				{"escaped slash", [][2]string{{"/norm/a/b", "a.test"}}},
				{"dot segment", [][2]string{{"/dot/./x", "a.test"}}},
				{"plain dot path", [][2]string{{"/dot/x", "a.test"}}},
				{"empty segment", [][2]string{{"/dot//x", "a.test"}}},
			}
			for _, g := range groups {
				before := e.count.Load()
				var first string
				for i, tg := range g.targets {
					r := rawGet(t, addr, tg[0], tg[1])
					if r.status != 200 {
						t.Fatalf("%s: GET %s Host %s: %d %q", g.name, tg[0], tg[1], r.status, r.body)
					}
					if i == 0 {
						first = r.body
						settle(t, e) // stored before the next request
						continue
					}
					if r.body != first || !strings.Contains(r.cs(), "hit") {
						t.Errorf("%s: GET %s Host %s: %q (%s), want the hit on %q stored for %s", g.name, tg[0], tg[1], r.body, r.cs(), first, g.targets[0][0])
					}
				}
				if n := e.count.Load() - before; n != 1 {
					t.Errorf("%s: the origin was asked %d times, want once", g.name, n)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			for _, s := range seen {
				if strings.Contains(s, "#") {
					t.Errorf("the origin received the fragment: %q", s)
				}
			}
			for _, want := range []string{"/frag/x", "/fq?a=1"} {
				found := false
				for _, s := range seen {
					found = found || s == want
				}
				if !found {
					t.Errorf("the origin never received %q (got %q)", want, seen)
				}
			}
		})
	}
}

// TestPurgeByURLNormalised: a URL purge matches the stored copy whatever
// spelling of the URL either the client or the purge used (port, trailing
// dot, percent-encoding, fragment).
func TestPurgeByURLNormalised(t *testing.T) {
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=600")
		io.WriteString(w, "x")
	}, envOpt{})
	addr := e.front.Listener.Addr().String()
	tests := []struct {
		target, host, purge string
	}{
		{"/p/%7ea", "www.example.test:8080", "http://www.example.test/p/~a"},
		{"/p/~b", "www.example.test", "http://WWW.example.test.:8080/p/%7Eb#top"},
		{"/p/c%2fd?x=%7e", "www.example.test:9999", "http://www.example.test/p/c%2Fd?x=~"},
	}
	for _, tc := range tests {
		rawGet(t, addr, tc.target, tc.host)
		settle(t, e)
		if r := rawGet(t, addr, tc.target, tc.host); !strings.Contains(r.cs(), "hit") {
			t.Fatalf("%s: not stored: %s", tc.target, r.cs())
		}
		n, err := e.c.Purge(context.Background(), cache.Selector{Site: e.site.SiteID, Kind: cache.ByURL, Value: tc.purge})
		if err != nil || n != 1 {
			t.Fatalf("purge %s (stored as %s, Host %s): %d, %v; want 1", tc.purge, tc.target, tc.host, n, err)
		}
		if r := rawGet(t, addr, tc.target, tc.host); !strings.Contains(r.cs(), "fwd=uri-miss") {
			t.Errorf("%s after the purge: %s, want a miss", tc.target, r.cs())
		}
	}
	// A prefix purge is normalised the same way.
	rawGet(t, addr, "/dir/%7eone", "www.example.test:8080")
	settle(t, e)
	n, err := e.c.Purge(context.Background(), cache.Selector{Site: e.site.SiteID, Kind: cache.ByPrefix, Value: "http://www.example.test./dir/~"})
	if err != nil || n != 1 {
		t.Fatalf("prefix purge: %d, %v; want 1", n, err)
	}
}

// TestUnsafeMethodInvalidatesLocationWithAPort: the Location of a
// successful POST names a URL of the same host (RFC 9111 4.4) even with a
// port, since keys hold none; its stored response is invalidated.
func TestUnsafeMethodInvalidatesLocationWithAPort(t *testing.T) {
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			w.Header().Set("Location", "http://a.test:8080/loc")
			w.WriteHeader(http.StatusCreated)
			return
		}
		w.Header().Set("Cache-Control", "max-age=600")
		io.WriteString(w, "loc")
	}, envOpt{})
	e.get("/loc", "Host", "a.test")
	settle(t, e)
	if r := e.get("/loc", "Host", "a.test"); !strings.Contains(r.cs(), "hit") {
		t.Fatalf("not stored: %s", r.cs())
	}
	if r := e.do(http.MethodPost, "/x", hdr("Host", "a.test"), []byte("new")); r.status != http.StatusCreated {
		t.Fatalf("POST: %d", r.status)
	}
	if r := e.get("/loc", "Host", "a.test"); !strings.Contains(r.cs(), "fwd=uri-miss") {
		t.Errorf("after a POST whose Location names it: %s, want a miss", r.cs())
	}
}
