package origin_test

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/gateway/origin"
	"github.com/meridian-edge/meridian/middleware"
)

// roundTripLogged sends req through p inside the request ID middleware, as
// the PoP does, and returns what the pool recorded for the access log.
func roundTripLogged(t *testing.T, p *origin.Pool, req *http.Request) middleware.OriginFetch {
	t.Helper()
	var got middleware.OriginFetch
	middleware.RequestID(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if resp, err := p.RoundTrip(r); err == nil {
			resp.Body.Close()
		}
		got = middleware.Origin(r.Context())
	})).ServeHTTP(httptest.NewRecorder(), req)
	return got
}

// TestPoolRecordsTheLastAttempt: the access log record names the server
// of the last attempt, its status or why it failed (a header timeout, a
// refused connection: the error pages' words), how long it took, and how
// many attempts there were.
func TestPoolRecordsTheLastAttempt(t *testing.T) {
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTeapot) }))
	defer ok.Close()
	p, _ := origin.New(origin.Options{Site: "www", Servers: []origin.Server{{URL: mustURL(t, ok.URL)}}})
	got := roundTripLogged(t, p, httptest.NewRequest("GET", "http://www.example.test/", nil))
	if got.Server != hostOf(ok.URL) || got.Status != http.StatusTeapot || got.Error != "" || got.Time <= 0 || got.Attempts != 1 {
		t.Fatalf("answered: recorded %+v, want server %s, status 418, a time, 1 attempt", got, hostOf(ok.URL))
	}

	hang, dead := hangingServer(t), deadAddr(t)
	const header = 100 * time.Millisecond
	p, _ = origin.New(origin.Options{Site: "www", HeaderTimeout: header, Servers: []origin.Server{{URL: mustURL(t, hang)}, {URL: mustURL(t, dead)}}})
	got = roundTripLogged(t, p, httptest.NewRequest("GET", "http://www.example.test/", nil))
	if got.Attempts != 2 || got.Status != 0 {
		t.Fatalf("both failed: recorded %+v, want 2 attempts and no status", got)
	}
	switch got.Server {
	case hostOf(hang):
		if got.Error != "origin-timeout" || got.Time < header {
			t.Fatalf("last attempt on the hanging server: recorded %+v, want origin-timeout after %s", got, header)
		}
	case hostOf(dead):
		if got.Error != "origin-unreachable" {
			t.Fatalf("last attempt on the refusing server: recorded %+v, want origin-unreachable", got)
		}
	default:
		t.Fatalf("recorded server %q, want one of the pool's", got.Server)
	}
}
