package middleware_test

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/middleware"
)

// TestCacheResult: the access log's cache field, from the Cache-Status
// entries the cache writes.
func TestCacheResult(t *testing.T) {
	for entry, want := range map[string]string{
		"":                                                                     "none",
		"meridian; hit; ttl=60; detail=l1":                                     "hit-l1",
		"meridian; hit; ttl=60; detail=l2":                                     "hit-l2",
		"meridian; hit; ttl=60; detail=l3":                                     "hit-l3",
		"meridian; hit; ttl=-5; detail=l1":                                     "stale",
		"meridian; hit; ttl=0; detail=l2-stale-if-error":                       "stale",
		"meridian; hit; ttl=0; detail=l1-stale-while-revalidate":               "stale",
		"meridian; fwd=uri-miss; fwd-status=200; stored":                       "miss",
		"meridian; fwd=vary-miss; fwd-status=404":                              "miss",
		"meridian; fwd=uri-miss; fwd-status=200; detail=collapsed":             "collapsed",
		"meridian; fwd=stale; fwd-status=304; detail=l1":                       "revalidated",
		"meridian; fwd=uri-miss; fwd-status=304":                               "miss", // the client's conditional, passed on
		"meridian; fwd=method":                                                 "pass",
		"meridian; fwd=uri-miss; fwd-status=200; detail=not-stored-set-cookie": "pass",
		"meridian; fwd=bypass; detail=request-body":                            "pass",
		"meridian; fwd=uri-miss; detail=origin-timeout":                        "error",
		"meridian; fwd=bypass; detail=origin-unreachable":                      "error",
		"meridian; fwd=miss; detail=only-if-cached":                            "error",
		"meridian; detail=unknown-host":                                        "none",
	} {
		if got := middleware.CacheResult(entry); got != want {
			t.Errorf("CacheResult(%q) = %q, want %q", entry, got, want)
		}
	}
}

// TestObserveStampCompletesEveryAnswer: the stamp sees the final header of
// every response before it leaves (written with WriteHeader, by a first
// Write, by nothing at all, and the 500 after a panic), and the observers
// see the Cache-Status entry it left; a handler's own fields stay.
func TestObserveStampCompletesEveryAnswer(t *testing.T) {
	stamp := func(h http.Header, r *http.Request, status int) {
		h.Add("Via", "1.1 test")
		if reason := middleware.Generated(r.Context()); reason != "" && h.Get("Cache-Status") == "" {
			h.Set("Cache-Status", "meridian; detail="+reason)
		}
	}
	var seen string
	h := middleware.RequestID(middleware.Recover(slog.New(slog.DiscardHandler))(middleware.ObserveStamp(stamp, func(r *http.Request, _ int, _ int64, _ time.Duration) {
		seen = middleware.CacheResult(middleware.CacheStatus(r.Context()))
	})(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/header":
			w.Header().Set("Cache-Status", "meridian; hit; ttl=9; detail=l1")
			w.WriteHeader(http.StatusTeapot)
		case "/write":
			io.WriteString(w, "body")
		case "/generated":
			middleware.MarkGenerated(r.Context(), "plugin-failure")
			w.WriteHeader(http.StatusServiceUnavailable)
		case "/panic":
			panic("bug")
		}
	}))))
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	for path, want := range map[string]struct {
		status      int
		cacheStatus string
		cacheLogged string
	}{
		"/header":    {http.StatusTeapot, "meridian; hit; ttl=9; detail=l1", "hit-l1"},
		"/write":     {http.StatusOK, "", "none"},
		"/nothing":   {http.StatusOK, "", "none"},
		"/generated": {http.StatusServiceUnavailable, "meridian; detail=plugin-failure", "none"},
		"/panic":     {http.StatusInternalServerError, "meridian; detail=internal-error", "none"},
	} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want.status || resp.Header.Get("Via") != "1.1 test" || resp.Header.Get("Cache-Status") != want.cacheStatus {
			t.Errorf("%s: %d Via %q Cache-Status %q, want %d, Via 1.1 test and Cache-Status %q", path, resp.StatusCode,
				resp.Header.Values("Via"), resp.Header.Get("Cache-Status"), want.status, want.cacheStatus)
		}
		if seen != want.cacheLogged {
			t.Errorf("%s: observer saw cache %q, want %q", path, seen, want.cacheLogged)
		}
	}
}
