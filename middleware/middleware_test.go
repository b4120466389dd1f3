package middleware_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	stdlog "log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
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

// cuttingOrigin is an origin on a raw loopback socket: for /cut it sends a
// header announcing 2000 bytes, 1000 of them, and closes the connection (as
// an origin that crashed or reset); for /whole all 2000; for /stream it
// announces 100 MB and sends 1000 bytes every 2 ms until the connection
// breaks.
func cuttingOrigin(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				req, err := http.ReadRequest(bufio.NewReader(c))
				if err != nil {
					return
				}
				length := "2000"
				if req.URL.Path == "/stream" {
					length = "100000000"
				}
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "+length+"\r\n\r\n")
				half := strings.Repeat("x", 1000)
				switch req.URL.Path {
				case "/whole":
					io.WriteString(c, half+half)
				case "/cut":
					io.WriteString(c, half)
				case "/stream": // ends only when the proxy hangs up
					for {
						if _, err := io.WriteString(c, half); err != nil {
							return
						}
						time.Sleep(2 * time.Millisecond)
					}
				}
			}()
		}
	}()
	return "http://" + ln.Addr().String()
}

// accessLines parses the JSON access log lines in logs by request ID.
func accessLines(t *testing.T, logs string) map[string]map[string]any {
	t.Helper()
	lines := map[string]map[string]any{}
	for _, l := range strings.Split(strings.TrimSpace(logs), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		if m["msg"] == "request" {
			lines[m["request_id"].(string)] = m
		}
	}
	return lines
}

// TestAccessLogFlagsTruncatedBody: an origin whose body breaks after the
// header reaches the client through a reverse proxy as a 200 with half its
// body, cut; its access log line keeps status 200 (it was sent), has the
// bytes the client got and body_error=truncated. A whole response and a
// client that hangs up mid-body (the client's doing, not a failure) carry
// no body_error. The chain is the PoP's: RequestID, Recover, Observe.
func TestAccessLogFlagsTruncatedBody(t *testing.T) {
	u, err := url.Parse(cuttingOrigin(t))
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(u)
	proxy.ErrorLog = stdlog.New(io.Discard, "", 0) // it reports the cut body; the access log is under test
	logs := &testutil.SyncBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, nil))
	observed := make(chan string, 8)
	h := middleware.RequestID(middleware.Recover(log)(middleware.Observe(middleware.AccessLog(log),
		func(r *http.Request, _ int, _ int64, _ time.Duration) {
			observed <- middleware.GetRequestID(r.Context())
		},
	)(proxy)))
	srv := httptest.NewServer(h)
	defer srv.Close()

	for _, c := range []struct {
		path      string
		hangUp    bool // the client closes after 1000 bytes
		wantBytes int
		wantErr   bool // the client sees the body cut
		bodyError string
	}{
		{path: "/whole", wantBytes: 2000},
		{path: "/cut", wantBytes: 1000, wantErr: true, bodyError: "truncated"},
		{path: "/stream", hangUp: true, wantBytes: -1},
	} {
		id := "test" + strings.ReplaceAll(c.path, "/", "-")
		req, _ := http.NewRequest(http.MethodGet, srv.URL+c.path, nil)
		req.Header.Set(middleware.RequestIDHeader, id)
		tr := &http.Transport{}
		resp, err := (&http.Client{Transport: tr}).Do(req)
		if err != nil {
			t.Fatalf("%s: %v", c.path, err)
		}
		var got []byte
		if c.hangUp {
			got = make([]byte, 1000)
			_, err = io.ReadFull(resp.Body, got)
		} else {
			got, err = io.ReadAll(resp.Body)
		}
		resp.Body.Close()
		tr.CloseIdleConnections()
		if resp.StatusCode != http.StatusOK || (err != nil) != c.wantErr || (c.wantBytes >= 0 && len(got) != c.wantBytes) {
			t.Fatalf("%s: client got %d, %d bytes, err %v; want 200, %d bytes, error %v", c.path, resp.StatusCode, len(got), err, c.wantBytes, c.wantErr)
		}
		select {
		case <-observed:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s was never observed", c.path)
		}
		line := accessLines(t, logs.String())[id]
		if line == nil {
			t.Fatalf("%s: no access log line; log:\n%s", c.path, logs.String())
		}
		be, _ := line["body_error"].(string)
		if line["status"] != float64(200) || be != c.bodyError || (c.wantBytes >= 0 && line["bytes"] != float64(c.wantBytes)) {
			t.Errorf("%s: access log status %v, bytes %v, body_error %q; want 200, %d, %q", c.path, line["status"], line["bytes"], be, c.wantBytes, c.bodyError)
		}
	}
}

// TestAccessLogOfPanicIs500: a handler that panics before answering is
// logged with the 500 that Recover sends, not as a 200.
func TestAccessLogOfPanicIs500(t *testing.T) {
	logs := &testutil.SyncBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, nil))
	observed := make(chan struct{}, 1)
	h := middleware.RequestID(middleware.Recover(log)(middleware.Observe(middleware.AccessLog(log),
		func(*http.Request, int, int64, time.Duration) { observed <- struct{}{} },
	)(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic("boom") }))))
	srv := httptest.NewServer(h)
	defer srv.Close()
	req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
	req.Header.Set(middleware.RequestIDHeader, "panic-1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	<-observed
	line := accessLines(t, logs.String())["panic-1"]
	if resp.StatusCode != 500 || line == nil || line["status"] != float64(500) || line["body_error"] != nil {
		t.Fatalf("client got %d; access log line %v; want 500 in both, no body_error", resp.StatusCode, line)
	}
}

// TestBodyErrorMarks: the first mark stands (the cause known to the code
// that saw it beats Observe's generic one), and outside RequestID and
// Observe there is nothing to mark.
func TestBodyErrorMarks(t *testing.T) {
	var got string
	h := middleware.RequestID(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		if !middleware.MarkBodyError(ctx, "origin-idle-timeout") || middleware.MarkBodyError(ctx, middleware.BodyTruncated) != true {
			t.Error("MarkBodyError under RequestID reported nothing to mark")
		}
		got = middleware.BodyError(ctx)
	}))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/", nil))
	if got != "origin-idle-timeout" {
		t.Fatalf("BodyError = %q, want the first mark", got)
	}
	if middleware.MarkBodyError(context.Background(), "x") || middleware.BodyError(context.Background()) != "" {
		t.Fatal("a context outside RequestID took a mark")
	}
}

// TestOriginMarks: the last origin attempt recorded stands and the
// attempts are counted; a detached context keeps the request's ID but
// records nothing into the request's state.
func TestOriginMarks(t *testing.T) {
	var got, afterDetach middleware.OriginFetch
	var detachedID string
	var detachedMarked bool
	h := middleware.RequestID(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		if middleware.Origin(ctx).Attempts != 0 {
			t.Error("Origin before any attempt is not the zero OriginFetch")
		}
		middleware.MarkOrigin(ctx, middleware.OriginFetch{Server: "a:80", Error: "origin-unreachable", Time: time.Millisecond})
		if !middleware.MarkOrigin(ctx, middleware.OriginFetch{Server: "b:80", Status: 200, Time: 2 * time.Millisecond}) {
			t.Error("MarkOrigin under RequestID reported nothing to record in")
		}
		got = middleware.Origin(ctx)
		d := middleware.Detach(ctx)
		detachedID = middleware.GetRequestID(d)
		detachedMarked = middleware.MarkOrigin(d, middleware.OriginFetch{Server: "c:80", Status: 304})
		afterDetach = middleware.Origin(ctx)
	}))
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	req.Header.Set(middleware.RequestIDHeader, "trace-1")
	h.ServeHTTP(httptest.NewRecorder(), req)
	want := middleware.OriginFetch{Server: "b:80", Status: 200, Time: 2 * time.Millisecond, Attempts: 2}
	if got != want {
		t.Fatalf("Origin = %+v, want the last attempt of two %+v", got, want)
	}
	if detachedID != "trace-1" || detachedMarked || afterDetach != want {
		t.Fatalf("detached: id %q (want trace-1), MarkOrigin recorded %v (want false), the request's record %+v (want unchanged)", detachedID, detachedMarked, afterDetach)
	}
	if middleware.MarkOrigin(context.Background(), middleware.OriginFetch{Server: "x"}) || middleware.Origin(context.Background()).Attempts != 0 {
		t.Fatal("a context outside RequestID took a record")
	}
}

// TestLogAccessOriginFields: origin, origin_status or origin_error,
// origin_time and (only past one attempt) origin_attempts follow the
// request fields; body_error stays last; a line without an origin
// exchange has none of them.
func TestLogAccessOriginFields(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}}))
	base := middleware.Access{RequestID: "r", Method: "GET", Host: "h", URI: "/", Proto: "HTTP/1.1", Status: 200, Site: "a", Cache: middleware.CacheRevalid}
	for _, c := range []struct {
		name string
		o    middleware.OriginFetch
		body string
		want string
	}{
		{"none", middleware.OriginFetch{}, "", `referer=""` + "\n"},
		{"answered", middleware.OriginFetch{Server: "o:80", Status: 304, Time: 3 * time.Millisecond, Attempts: 1},
			"", `referer="" origin=o:80 origin_status=304 origin_time=3ms` + "\n"},
		{"failed after a retry, body cut", middleware.OriginFetch{Server: "o:81", Error: "origin-timeout", Time: time.Second, Attempts: 2},
			"origin-timeout", `referer="" origin=o:81 origin_error=origin-timeout origin_time=1s origin_attempts=2 body_error=origin-timeout` + "\n"},
	} {
		buf.Reset()
		a := base
		a.Origin, a.BodyError = c.o, c.body
		middleware.LogAccess(context.Background(), log, a)
		if !strings.HasSuffix(buf.String(), c.want) {
			t.Errorf("%s: line\n%s\nwant it to end with %s", c.name, buf.String(), c.want)
		}
		if c.o.Attempts == 0 && strings.Contains(buf.String(), "origin") {
			t.Errorf("%s: a line without an origin exchange has origin fields:\n%s", c.name, buf.String())
		}
	}
}

// TestPanicAfterHeaderCutsTheBody: a handler that panics after sending its
// header and part of the body leaves the client a cut response (not the
// part followed by a 500 page that looks whole), an access log line with
// the status sent, the bytes sent and body_error, and the panic's stack in
// the log.
func TestPanicAfterHeaderCutsTheBody(t *testing.T) {
	logs := &testutil.SyncBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, nil))
	observed := make(chan struct{}, 1)
	h := middleware.RequestID(middleware.Recover(log)(middleware.Observe(middleware.AccessLog(log),
		func(*http.Request, int, int64, time.Duration) { observed <- struct{}{} },
	)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "partial answer")
		panic("boom")
	}))))
	srv := httptest.NewServer(h)
	defer srv.Close()
	req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
	req.Header.Set(middleware.RequestIDHeader, "panic-2")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "partial answer" || err == nil {
		t.Fatalf("client got %d %q, err %v; want 200 \"partial answer\", cut", resp.StatusCode, body, err)
	}
	<-observed
	line := accessLines(t, logs.String())["panic-2"]
	if line == nil || line["status"] != float64(200) || line["bytes"] != float64(len("partial answer")) || line["body_error"] != middleware.BodyTruncated {
		t.Fatalf("access log line %v; want status 200, bytes 14, body_error truncated", line)
	}
	if !strings.Contains(logs.String(), `"panic":"boom"`) || !strings.Contains(logs.String(), "TestPanicAfterHeaderCutsTheBody") {
		t.Fatalf("log lacks the panic and its stack: %s", logs.String())
	}
}

// BenchmarkLogAccess is the cost of one access log line (JSON, discarded),
// paid by every request while the log is at INFO.
//
//	go test -run '^$' -bench LogAccess -benchmem ./middleware/
func BenchmarkLogAccess(b *testing.B) {
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	a := middleware.Access{RequestID: "0123456789abcdef01234567", Remote: "127.0.0.1:5555", Method: "GET", Host: "www.example.com",
		URI: "/img/logo.png", Proto: "HTTP/1.1", Status: 200, Bytes: 16384, Elapsed: 1234 * time.Microsecond}
	ctx := context.Background()
	for b.Loop() {
		middleware.LogAccess(ctx, log, a)
	}
}
