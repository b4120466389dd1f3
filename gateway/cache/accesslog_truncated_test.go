package cache_test

import (
	"bufio"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/gateway/cache"
	"github.com/meridian-edge/meridian/gateway/origin"
	"github.com/meridian-edge/meridian/internal/testutil"
	"github.com/meridian-edge/meridian/middleware"
)

// breakingOrigin is an origin on a raw loopback socket. Every response
// announces 2000 bytes. /whole* sends them; /reset* sends 1000 and closes
// the connection (a crashed origin, a reset); /stall* sends 1000 and then
// nothing, until the PoP hangs up. Paths ending in "-private" are
// no-store (streamed to one client), the others storable (a shared fill).
func breakingOrigin(t *testing.T) *url.URL {
	t.Helper()
	u, _ := url.Parse(rawOrigin(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		cc := "max-age=600"
		if strings.HasSuffix(req.URL.Path, "-private") {
			cc = "no-store"
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nCache-Control: "+cc+"\r\nContent-Length: 2000\r\n\r\n")
		half := strings.Repeat("x", 1000)
		switch {
		case strings.HasPrefix(req.URL.Path, "/whole"):
			io.WriteString(c, half+half)
		case strings.HasPrefix(req.URL.Path, "/reset"):
			io.WriteString(c, half)
		case strings.HasPrefix(req.URL.Path, "/stall"):
			io.WriteString(c, half)
			_, _ = io.Copy(io.Discard, br) // until the PoP closes
		}
	}))
	return u
}

// TestAccessLogFlagsBodyCutByOrigin: through the PoP's middleware chain
// (RequestID, Recover, Observe with the access log) and the cache with a
// real origin pool, a response whose origin body breaks after the header
// (connection closed, or timeouts.idle ending a stalled body) reaches the
// client as a 200 with the bytes that came, cut; its access log line keeps
// status 200, has those bytes, and carries body_error=origin-error (reset)
// or origin-timeout (stalled past timeouts.idle). A whole
// response carries no body_error.
func TestAccessLogFlagsBodyCutByOrigin(t *testing.T) {
	pool, err := origin.New(origin.Options{
		Site: "www", Servers: []origin.Server{{URL: breakingOrigin(t)}},
		IdleTimeout: 300 * time.Millisecond, TotalTimeout: time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	c, err := cache.New(cache.Options{L1Bytes: 16 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	logs := &testutil.SyncBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, nil))
	observed := make(chan string, 16)
	h := middleware.RequestID(middleware.Recover(log)(middleware.Observe(middleware.AccessLog(log),
		func(r *http.Request, _ int, _ int64, _ time.Duration) {
			observed <- middleware.GetRequestID(r.Context())
		},
	)(c.Handler(cache.SitePolicy{SiteID: "www"}, pool))))
	front := httptest.NewServer(h)
	t.Cleanup(front.Close)

	for _, tc := range []struct {
		path      string
		wantBytes int
		bodyError string
	}{
		{"/whole", 2000, ""},
		{"/whole-private", 2000, ""},
		{"/reset", 1000, "origin-error"},
		{"/reset-private", 1000, "origin-error"},
		{"/stall", 1000, "origin-timeout"},
		{"/stall-private", 1000, "origin-timeout"},
	} {
		t.Run(tc.path, func(t *testing.T) {
			id := "req" + strings.ReplaceAll(tc.path, "/", "-")
			req, _ := http.NewRequest(http.MethodGet, front.URL+tc.path, nil)
			req.Header.Set(middleware.RequestIDHeader, id)
			tr := &http.Transport{}
			defer tr.CloseIdleConnections()
			resp, err := (&http.Client{Transport: tr}).Do(req)
			if err != nil {
				t.Fatalf("client: %v", err)
			}
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			cut := tc.bodyError != ""
			if resp.StatusCode != http.StatusOK || len(got) != tc.wantBytes || (err != nil) != cut {
				t.Fatalf("client got %d, %d bytes, err %v; want 200, %d bytes, cut %v", resp.StatusCode, len(got), err, tc.wantBytes, cut)
			}
			select {
			case <-observed:
			case <-time.After(10 * time.Second):
				t.Fatal("the request was never observed")
			}
			var line map[string]any
			for _, l := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
				var m map[string]any
				if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == "request" && m["request_id"] == id {
					line = m
				}
			}
			if line == nil {
				t.Fatalf("no access log line; log:\n%s", logs.String())
			}
			be, _ := line["body_error"].(string)
			if line["status"] != float64(200) || line["bytes"] != float64(tc.wantBytes) || be != tc.bodyError {
				t.Fatalf("access log status %v, bytes %v, body_error %q; want 200, %d, %q", line["status"], line["bytes"], be, tc.wantBytes, tc.bodyError)
			}
		})
	}
}
