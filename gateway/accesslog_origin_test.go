package gateway_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/gateway"
	"github.com/meridian-edge/meridian/gateway/origin"
	mtestutil "github.com/meridian-edge/meridian/internal/testutil"
)

// accessLines returns the access log lines ("msg":"request") of a JSON
// log, decoded, in order.
func accessLines(t *testing.T, logs *mtestutil.SyncBuffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(logs.String()))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("log line is not JSON: %v\n%s", err, sc.Text())
		}
		if m["msg"] == "request" {
			out = append(out, m)
		}
	}
	return out
}

// waitAccessLines waits for n access log lines and returns them.
func waitAccessLines(t *testing.T, logs *mtestutil.SyncBuffer, n int) []map[string]any {
	t.Helper()
	mtestutil.WaitFor(t, fmt.Sprintf("%d access log lines", n), func() bool { return strings.Count(logs.String(), `"msg":"request"`) >= n })
	lines := accessLines(t, logs)
	if len(lines) != n {
		t.Fatalf("%d access log lines, want %d:\n%s", len(lines), n, logs.String())
	}
	return lines
}

var originFields = []string{"origin", "origin_status", "origin_error", "origin_time", "origin_attempts"}

// wantNoOrigin fails when line has any origin field.
func wantNoOrigin(t *testing.T, what string, line map[string]any) {
	t.Helper()
	for _, f := range originFields {
		if v, ok := line[f]; ok {
			t.Errorf("%s: line has %s=%v, want no origin fields: %v", what, f, v, line)
		}
	}
}

// wantOrigin checks a line's origin fields: server, the status it
// answered (0: none, errWord set instead), a positive origin_time, and no
// origin_attempts (one attempt).
func wantOrigin(t *testing.T, what string, line map[string]any, server string, status int, errWord string) {
	t.Helper()
	if got := line["origin"]; got != server {
		t.Errorf("%s: origin=%v, want %s: %v", what, got, server, line)
	}
	if status != 0 {
		if got, _ := line["origin_status"].(float64); int(got) != status {
			t.Errorf("%s: origin_status=%v, want %d: %v", what, line["origin_status"], status, line)
		}
	} else if v, ok := line["origin_status"]; ok {
		t.Errorf("%s: origin_status=%v, want none (the origin sent no answer): %v", what, v, line)
	}
	if errWord != "" {
		if got := line["origin_error"]; got != errWord {
			t.Errorf("%s: origin_error=%v, want %s: %v", what, got, errWord, line)
		}
	} else if v, ok := line["origin_error"]; ok {
		t.Errorf("%s: origin_error=%v, want none: %v", what, v, line)
	}
	// The JSON handler writes a duration as nanoseconds.
	if d, ok := line["origin_time"].(float64); !ok || d <= 0 {
		t.Errorf("%s: origin_time=%v, want a duration > 0: %v", what, line["origin_time"], line)
	}
	if v, ok := line["origin_attempts"]; ok {
		t.Errorf("%s: origin_attempts=%v, want none for one attempt: %v", what, v, line)
	}
}

func wantField(t *testing.T, what string, line map[string]any, field string, want any) {
	t.Helper()
	if got := line[field]; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("%s: %s=%v, want %v: %v", what, field, got, want, line)
	}
}

// TestAccessLogNamesTheOrigin: through a real PoP, on the fast path and
// through net/http, a line whose request went to the origin names the
// server, what it answered and how long its header took (a miss: 200; a
// revalidation: origin_status=304 while the client got 200), a refused
// origin gives a 502 line with the server and origin_error, no
// origin_status; a pass names the origin too; a hit, a stale-while-revalidate answer (whose refresh
// runs in the background) and the PoP's own answer have no origin fields.
func TestAccessLogNamesTheOrigin(t *testing.T) {
	for _, noFast := range []bool{false, true} {
		t.Run(fmt.Sprintf("noFastPath=%v", noFast), func(t *testing.T) {
			o := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				switch r.URL.Path {
				case "/reval":
					w.Header().Set("ETag", `"v1"`)
					w.Header().Set("Cache-Control", "max-age=0")
					if r.Header.Get("If-None-Match") == `"v1"` {
						w.WriteHeader(http.StatusNotModified)
						return
					}
				case "/swr":
					w.Header().Set("ETag", `"s1"`)
					w.Header().Set("Cache-Control", "max-age=0, stale-while-revalidate=600")
				default:
					w.Header().Set("Cache-Control", "max-age=600")
				}
				io.WriteString(w, "object "+r.URL.Path)
			}))
			t.Cleanup(o.Close)
			deadHost := mtestutil.FreeAddr(t, "127.0.0.1") // nothing listens: refused
			logs := &mtestutil.SyncBuffer{}
			p := startPoP(t, gateway.Options{
				NoFastPath: noFast,
				Logger:     slog.New(slog.NewJSONHandler(logs, nil)),
				Sites: []gateway.Site{
					{Name: "a", Hosts: []string{"a.test"}, Origin: pool(t, "a", o.URL, 0)},
					{Name: "dead", Hosts: []string{"dead.test"}, Origin: pool(t, "dead", "http://"+deadHost, 0)},
				},
			})
			get := func(host, path string) string {
				return "GET " + path + " HTTP/1.1\r\nHost: " + host + "\r\n\r\n"
			}
			resps := exchange(t, p.HTTPAddr(),
				get("a.test", "/x"), get("a.test", "/x"), // miss, hit
				get("a.test", "/reval"), get("a.test", "/reval"), // miss, revalidated
				get("dead.test", "/y"),                       // refused
				get("a.test", "/swr"), get("a.test", "/swr"), // miss, stale (refreshed in the background)
				get("nosuch.test", "/z"), // the PoP's own 421
				"POST /form HTTP/1.1\r\nHost: a.test\r\nContent-Length: 0\r\n\r\n", // a pass
			)
			if s := resps[3].StatusCode; s != http.StatusOK {
				t.Fatalf("revalidated response: status %d, want 200", s)
			}
			lines := waitAccessLines(t, logs, len(resps))
			originHost := strings.TrimPrefix(o.URL, "http://")

			wantField(t, "miss", lines[0], "cache", "miss")
			wantField(t, "miss", lines[0], "status", 200)
			wantOrigin(t, "miss", lines[0], originHost, 200, "")

			wantField(t, "hit", lines[1], "cache", "hit-l1")
			wantNoOrigin(t, "hit", lines[1])

			wantField(t, "revalidation", lines[3], "cache", "revalidated")
			wantField(t, "revalidation", lines[3], "status", 200)
			wantOrigin(t, "revalidation", lines[3], originHost, http.StatusNotModified, "")

			wantField(t, "refused", lines[4], "status", 502)
			wantField(t, "refused", lines[4], "cache", "error")
			wantOrigin(t, "refused", lines[4], deadHost, 0, "origin-unreachable")

			wantField(t, "stale-while-revalidate", lines[6], "cache", "stale")
			wantNoOrigin(t, "stale-while-revalidate", lines[6])

			wantField(t, "unknown host", lines[7], "status", 421)
			wantNoOrigin(t, "unknown host", lines[7])

			wantField(t, "pass", lines[8], "cache", "pass")
			wantOrigin(t, "pass", lines[8], originHost, 200, "")
		})
	}
}

// TestAccessLogOriginAttempts: a request the pool sent on to another
// server after the first refused it logs the server that answered and
// origin_attempts=2; one that went to a single server has no
// origin_attempts.
func TestAccessLogOriginAttempts(t *testing.T) {
	live := cacheableOrigin(t)
	dead := mtestutil.FreeAddr(t, "127.0.0.1") // nothing listens: refused
	liveURL, _ := url.Parse(live.URL)
	pl, err := origin.New(origin.Options{Site: "a", Servers: []origin.Server{
		{URL: &url.URL{Scheme: "http", Host: dead}}, {URL: liveURL},
	}})
	if err != nil {
		t.Fatal(err)
	}
	logs := &mtestutil.SyncBuffer{}
	p := startPoP(t, gateway.Options{
		Logger: slog.New(slog.NewJSONHandler(logs, nil)),
		Sites:  []gateway.Site{{Name: "a", Hosts: []string{"a.test"}, Origin: pl}},
	})
	// Round-robin starts somewhere in the pool: of two misses, one goes
	// to the refusing server first (and it is then marked down).
	exchange(t, p.HTTPAddr(), "GET /1 HTTP/1.1\r\nHost: a.test\r\n\r\n", "GET /2 HTTP/1.1\r\nHost: a.test\r\n\r\n")
	lines := waitAccessLines(t, logs, 2)
	retried := 0
	for _, l := range lines {
		wantField(t, "miss", l, "status", 200)
		wantField(t, "miss", l, "origin", liveURL.Host)
		wantField(t, "miss", l, "origin_status", 200)
		if _, ok := l["origin_error"]; ok {
			t.Errorf("a line whose last attempt succeeded has origin_error: %v", l)
		}
		if n, ok := l["origin_attempts"]; ok {
			retried++
			if n != 2.0 {
				t.Errorf("origin_attempts=%v, want 2: %v", n, l)
			}
		}
	}
	if retried != 1 {
		t.Errorf("%d lines with origin_attempts, want 1 (the request the refusing server got first):\n%s", retried, logs.String())
	}
}

// TestAccessLogCollapsedFollowerHasNoOrigin: of two requests that share
// one origin fetch, the one that led it has the origin fields, the one
// that waited for it (cache=collapsed) has none: one line with
// origin_time per origin request.
func TestAccessLogCollapsedFollowerHasNoOrigin(t *testing.T) {
	arrived := make(chan struct{}, 4)
	release := make(chan struct{})
	o := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-release
		w.Header().Set("Cache-Control", "max-age=600")
		io.WriteString(w, "object")
	}))
	t.Cleanup(o.Close)
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	logs := &mtestutil.SyncBuffer{}
	p := startPoP(t, gateway.Options{
		Logger: slog.New(slog.NewJSONHandler(logs, nil)),
		Sites:  []gateway.Site{{Name: "a", Hosts: []string{"a.test"}, Origin: pool(t, "a", o.URL, 0)}},
	})
	var wg sync.WaitGroup
	get := func() {
		defer wg.Done()
		req, _ := http.NewRequest(http.MethodGet, "http://"+p.HTTPAddr()+"/c", nil)
		req.Host = "a.test"
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Error(err)
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	wg.Add(2)
	go get()
	select {
	case <-arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("the first request did not reach the origin")
	}
	go get()
	mtestutil.WaitFor(t, "the second request to join the fetch", func() bool {
		return mtestutil.CounterSum(t, p.Registry(), "meridian_cache_collapsed_total", "site", "a") == 1
	})
	once.Do(func() { close(release) })
	wg.Wait()
	lines := waitAccessLines(t, logs, 2)
	leader, follower := lines[0], lines[1]
	if leader["cache"] == "collapsed" {
		leader, follower = follower, leader
	}
	wantField(t, "leader", leader, "cache", "miss")
	wantOrigin(t, "leader", leader, strings.TrimPrefix(o.URL, "http://"), 200, "")
	wantField(t, "follower", follower, "cache", "collapsed")
	wantNoOrigin(t, "follower", follower)
}

// TestAccessLogClientClosed: a client that hangs up while the origin is
// still working on its pass is logged with status 499, as nginx does (it
// got no answer, least of all a 200), and origin_error=client-closed (the
// origin did not fail), with the origin named.
func TestAccessLogClientClosed(t *testing.T) {
	arrived := make(chan struct{}, 1)
	o := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-r.Context().Done() // answers only once the PoP gave up
	}))
	t.Cleanup(o.Close)
	logs := &mtestutil.SyncBuffer{}
	p := startPoP(t, gateway.Options{
		Logger: slog.New(slog.NewJSONHandler(logs, nil)),
		Sites:  []gateway.Site{{Name: "a", Hosts: []string{"a.test"}, Origin: pool(t, "a", o.URL, 0)}},
	})
	c, err := net.Dial("tcp", p.HTTPAddr())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(c, "POST /slow HTTP/1.1\r\nHost: a.test\r\nContent-Length: 0\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	<-arrived
	c.Close()
	line := waitAccessLines(t, logs, 1)[0]
	wantField(t, "client gone", line, "status", 499)
	if got := line["origin_error"]; got != "client-closed" || line["origin"] != strings.TrimPrefix(o.URL, "http://") {
		t.Fatalf("origin=%v origin_error=%v, want the origin and client-closed: %v", line["origin"], got, line)
	}
}
