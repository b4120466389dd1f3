package middleware_test

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/internal/testutil"
	"github.com/meridian-edge/meridian/middleware"
	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
)

func TestRequestID(t *testing.T) {
	var seen string
	h := middleware.RequestID(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = middleware.GetRequestID(r.Context())
		if r.Header.Get(middleware.RequestIDHeader) != seen {
			t.Errorf("origin-bound header %q != context id %q", r.Header.Get(middleware.RequestIDHeader), seen)
		}
	}))
	srv := httptest.NewServer(h)
	defer srv.Close()

	cases := []struct{ sent, want string }{
		{"", ""},                       // new random id
		{"abc-123", "abc-123"},         // kept
		{"bad id", ""},                 // replaced
		{strings.Repeat("x", 200), ""}, // too long: replaced
	}
	for _, c := range cases {
		req, _ := http.NewRequest("GET", srv.URL, nil)
		if c.sent != "" {
			req.Header.Set(middleware.RequestIDHeader, c.sent)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		got := resp.Header.Get(middleware.RequestIDHeader)
		if got != seen {
			t.Errorf("sent %q: response id %q, handler saw %q", c.sent, got, seen)
		}
		if c.want != "" && got != c.want {
			t.Errorf("sent %q: id %q, want it kept", c.sent, got)
		}
		if c.want == "" && (len(got) != 24 || got == c.sent) {
			t.Errorf("sent %q: id %q, want a fresh 24-hex id", c.sent, got)
		}
	}
}

// TestNewRequestIDsAreDistinct draws IDs from several goroutines at once (the
// generator is per thread): every one is 24 lower-case hex digits and none
// repeats.
func TestNewRequestIDsAreDistinct(t *testing.T) {
	const workers, each = 8, 5000
	ids := make(chan string, workers*each)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range each {
				ids <- middleware.NewRequestID("")
			}
		})
	}
	wg.Wait()
	close(ids)
	seen := make(map[string]bool, workers*each)
	for id := range ids {
		if len(id) != 24 || strings.Trim(id, "0123456789abcdef") != "" {
			t.Fatalf("id %q is not 24 hex digits", id)
		}
		if seen[id] {
			t.Fatalf("id %q drawn twice", id)
		}
		seen[id] = true
	}
}

// BenchmarkNewRequestID is the cost of a fresh ID, paid by every request
// (on the fast hit path too).
//
//	go test -run '^$' -bench NewRequestID -benchmem ./middleware/
func BenchmarkNewRequestID(b *testing.B) {
	for b.Loop() {
		_ = middleware.NewRequestID("")
	}
}

func TestRecoverAnswers500AndLogs(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	h := middleware.Recover(log)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { panic("boom") }))
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/x")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 500 || !strings.Contains(string(body), "internal error") {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
	if !strings.Contains(logs.String(), "panic=boom") || !strings.Contains(logs.String(), "stack=") {
		t.Fatalf("log lacks the panic and stack: %s", logs.String())
	}
	// The server survives.
	resp, err = http.Get(srv.URL + "/y")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}

func TestObserveMetricsAndAccessLog(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := middleware.NewRequestMetrics(reg, func(r *http.Request) string { return "www" })
	logs := &testutil.SyncBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, nil))
	// Observers run after the response is sent: the test waits for each.
	observed := make(chan int, 3)
	h := middleware.Observe(m.Observer(), middleware.AccessLog(log), func(r *http.Request, status int, n int64, _ time.Duration) {
		observed <- status
	})(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/missing" {
			http.NotFound(w, r)
			return
		}
		io.WriteString(w, "hello")
	}))
	srv := httptest.NewServer(h)
	defer srv.Close()
	for _, p := range []string{"/", "/", "/missing"} {
		resp, err := http.Get(srv.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		select {
		case st := <-observed:
			if want := map[string]int{"/": 200, "/missing": 404}[p]; st != want {
				t.Errorf("%s observed with status %d, want %d", p, st, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s was never observed", p)
		}
	}
	if got := promtest.ToFloat64(m.Counter("www", "GET", 200)); got != 2 {
		t.Errorf("2xx count = %v, want 2", got)
	}
	if got := promtest.ToFloat64(m.Counter("www", "GET", 404)); got != 1 {
		t.Errorf("4xx count = %v, want 1", got)
	}
	if !strings.Contains(logs.String(), `"status":404`) || !strings.Contains(logs.String(), `"bytes":5`) {
		t.Errorf("access log lacks fields: %s", logs.String())
	}
}
