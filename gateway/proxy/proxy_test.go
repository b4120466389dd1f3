package proxy_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/gateway/cache/cachetest"
	"github.com/meridian-edge/meridian/gateway/proxy"
	"github.com/meridian-edge/meridian/internal/testutil"
)

func front(t *testing.T, origin string, timeout time.Duration) *httptest.Server {
	t.Helper()
	p, err := proxy.New(proxy.Options{SiteID: "s1", PoPID: "pop-a", Transport: cachetest.Transport(t, origin, timeout)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	return srv
}

func TestNewNeedsTransport(t *testing.T) {
	_, err := proxy.New(proxy.Options{SiteID: "s"})
	if err == nil || !strings.Contains(err.Error(), "Transport is nil") {
		t.Fatalf("err = %v, want a message naming the missing Transport", err)
	}
}

func TestRequestHeaders(t *testing.T) {
	seen := make(chan http.Header, 1)
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := r.Header.Clone()
		h.Set("X-Seen-Host", r.Host)
		seen <- h
	}))
	defer origin.Close()
	srv := front(t, origin.URL, 0)
	req, _ := http.NewRequest("GET", srv.URL+"/p?q=1", nil)
	req.Host = "www.example.test"
	req.Header.Set("Connection", "X-Secret, keep-alive")
	req.Header.Set("X-Secret", "drop me")
	req.Header.Set("Keep-Alive", "timeout=5")
	req.Header.Set("Proxy-Authorization", "Basic eA==")
	req.Header.Set("Te", "gzip") // "Te: trailers" alone is forwarded, as gRPC needs
	req.Header.Set("X-Forwarded-For", "203.0.113.9")
	req.Header.Set("X-Forwarded-Host", "evil.test")
	req.Header.Set("Forwarded", "for=203.0.113.9")
	req.Header.Add("X-Keep", "a")
	req.Header.Add("X-Keep", "b")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	h := <-seen
	tests := []struct{ field, want string }{
		{"X-Secret", ""},
		{"Keep-Alive", ""},
		{"Proxy-Authorization", ""},
		{"Te", ""},
		{"X-Forwarded-For", "203.0.113.9, 127.0.0.1"},
		{"X-Forwarded-Host", "www.example.test"},
		{"X-Forwarded-Proto", "http"},
		{"Forwarded", `for=203.0.113.9, for=127.0.0.1;host="www.example.test";proto=http`},
		{"Via", "1.1 pop-a"},
		{"X-Keep", "a, b"},
		{"X-Seen-Host", "www.example.test"},
	}
	for _, tc := range tests {
		if got := strings.Join(h.Values(tc.field), ", "); got != tc.want {
			t.Errorf("origin saw %s = %q, want %q", tc.field, got, tc.want)
		}
	}
	if resp.Header.Get("Via") != "1.1 pop-a" {
		t.Errorf("response Via = %q", resp.Header.Get("Via"))
	}
}

func TestResponseHeadersByteForByte(t *testing.T) {
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h["X-Multi"] = []string{"a", "b, c"}
		h["Set-Cookie"] = []string{"a=1; Path=/", "b=2; HttpOnly"}
		h.Set("Connection", "X-Hop")
		h.Set("X-Hop", "secret")
		h.Set("Keep-Alive", "timeout=4")
		h.Set("X-Odd-Case", "MiXeD  value")
		io.WriteString(w, "ok")
	}))
	defer origin.Close()
	srv := front(t, origin.URL, 0)
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header["X-Multi"]; len(got) != 2 || got[0] != "a" || got[1] != "b, c" {
		t.Errorf("X-Multi = %q", got)
	}
	if got := resp.Header["Set-Cookie"]; len(got) != 2 || got[1] != "b=2; HttpOnly" {
		t.Errorf("Set-Cookie = %q", got)
	}
	if resp.Header.Get("X-Hop") != "" || resp.Header.Get("Keep-Alive") != "" {
		t.Errorf("hop-by-hop fields reached the client: %v", resp.Header)
	}
	if resp.Header.Get("X-Odd-Case") != "MiXeD  value" {
		t.Errorf("X-Odd-Case = %q", resp.Header.Get("X-Odd-Case"))
	}
}

func TestRequestBodiesIntact(t *testing.T) {
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sum := sha256.New()
		n, _ := io.Copy(sum, r.Body)
		fmt.Fprintf(w, "%s %d %s", r.Method, n, hex.EncodeToString(sum.Sum(nil)))
	}))
	defer origin.Close()
	srv := front(t, origin.URL, 0)
	body := strings.Repeat("meridian\x00\xff", 100000)
	want := sha256.Sum256([]byte(body))
	for _, m := range []string{"POST", "PUT", "PATCH", "DELETE", "BREW", "GET"} {
		t.Run(m, func(t *testing.T) {
			req, _ := http.NewRequest(m, srv.URL+"/upload", strings.NewReader(body))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			exp := fmt.Sprintf("%s %d %s", m, len(body), hex.EncodeToString(want[:]))
			if string(b) != exp {
				t.Fatalf("origin got %q, want %q", b, exp)
			}
		})
	}
}

func TestInterimResponses(t *testing.T) {
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		io.WriteString(w, "final")
	}))
	defer origin.Close()
	srv := front(t, origin.URL, 0)
	var got []int
	var link string
	ctx := httptrace.WithClientTrace(t.Context(), &httptrace.ClientTrace{
		Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
			got = append(got, code)
			link = h.Get("Link")
			return nil
		},
	})
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if len(got) != 1 || got[0] != 103 || link != "</style.css>; rel=preload" {
		t.Fatalf("interim responses %v link %q, want one 103 with the Link", got, link)
	}
	if string(b) != "final" || resp.Header.Get("Link") != "" {
		t.Fatalf("final: %q Link=%q", b, resp.Header.Get("Link"))
	}
}

func TestWebSocketUpgrade(t *testing.T) {
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "websocket" || !strings.Contains(strings.ToLower(r.Header.Get("Connection")), "upgrade") {
			http.Error(w, "no upgrade headers reached the origin", 400)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n")
		brw.Flush()
		line, _ := brw.ReadString('\n')
		brw.WriteString("echo:" + line)
		brw.Flush()
	}))
	defer origin.Close()
	srv := front(t, origin.URL, 0)
	conn, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\nSec-WebSocket-Version: 13\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 101 || resp.Header.Get("Upgrade") != "websocket" {
		t.Fatalf("status %d Upgrade %q", resp.StatusCode, resp.Header.Get("Upgrade"))
	}
	fmt.Fprintf(conn, "hello\n")
	line, err := br.ReadString('\n')
	if err != nil || line != "echo:hello\n" {
		t.Fatalf("tunnel answered %q, %v", line, err)
	}
}

func TestOriginFailures(t *testing.T) {
	hang := make(chan struct{})
	defer close(hang)
	tests := []struct {
		name     string
		handler  func(net.Conn)
		wantCode int
		wantBody string
	}{
		{"hangs", func(c net.Conn) { <-hang }, 504, "did not answer in time"},
		{"resets", func(c net.Conn) {
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
		}, 502, "refused or reset the connection, or sent a malformed response"},
		{"malformed", func(c net.Conn) {
			bufio.NewReader(c).ReadString('\n')
			io.WriteString(c, "HTTP/1.1 2x0 What\r\nbroken header\r\n\r\n")
			c.Close()
		}, 502, "502 Bad Gateway"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					go func() { defer c.Close(); tc.handler(c) }()
				}
			}()
			srv := front(t, "http://"+ln.Addr().String(), 300*time.Millisecond)
			resp, err := http.Get(srv.URL + "/x")
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.wantCode || !strings.Contains(string(b), tc.wantBody) || !strings.Contains(string(b), `"s1"`) {
				t.Fatalf("got %d %q, want %d with %q naming the site", resp.StatusCode, b, tc.wantCode, tc.wantBody)
			}
			// Without the request id middleware the page still has an id,
			// the same in the header and the body.
			id := resp.Header.Get("X-Request-Id")
			if id == "" || !strings.Contains(string(b), "Request id: "+id+" ") || !strings.Contains(string(b), "from PoP pop-a") {
				t.Errorf("body %q does not name the PoP and the X-Request-Id %q", b, id)
			}
			for f, want := range map[string]string{"Via": "1.1 pop-a", "Cache-Control": "no-store", "Content-Type": "text/plain; charset=utf-8", "Cache-Status": ""} {
				if got := resp.Header.Get(f); got != want {
					t.Errorf("%s %q, want %q", f, got, want)
				}
			}
		})
	}
}

func TestStreamsWithoutBuffering(t *testing.T) {
	next := make(chan struct{})
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "first\n")
		w.(http.Flusher).Flush()
		<-next
		io.WriteString(w, "second\n")
	}))
	defer origin.Close()
	srv := front(t, origin.URL, 0)
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	if l, _ := br.ReadString('\n'); l != "first\n" {
		t.Fatalf("got %q before the origin finished", l)
	}
	close(next)
	if l, _ := br.ReadString('\n'); l != "second\n" {
		t.Fatalf("got %q", l)
	}
}

type passKey struct{}

// TestErrorPageCarriesTheCallersCacheStatus: the caller (the cache) gives
// every answer its Cache-Status entry through ModifyResponse; the error page
// carries that entry with the failure as its detail (replacing the one it
// had), and the request id of the request and of the WARN log line.
func TestErrorPageCarriesTheCallersCacheStatus(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close()
	tests := []struct {
		name  string
		hook  func(*http.Response) error
		entry string // what the caller passes in the context
		want  string
	}{
		{"entry", nil, "meridian; fwd=method", "meridian; fwd=method; detail=origin-unreachable"},
		{"entry with a detail", nil, "meridian; fwd=bypass; detail=request-body", "meridian; fwd=bypass; detail=origin-unreachable"},
		{"hook refuses", func(*http.Response) error { return errors.New("no") }, "meridian; fwd=method", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			logs := &testutil.SyncBuffer{}
			hook := tc.hook
			if hook == nil {
				hook = func(res *http.Response) error {
					if e, ok := res.Request.Context().Value(passKey{}).(string); ok {
						res.Header.Add("Cache-Status", e)
					}
					return nil
				}
			}
			p, err := proxy.New(proxy.Options{SiteID: "s1", PoPID: "pop-a", Transport: cachetest.Transport(t, dead, 0),
				ModifyResponse: hook, Logger: slog.New(slog.NewTextHandler(logs, nil))})
			if err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("X-Plugin", "set before the origin failed")
				p.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), passKey{}, tc.entry)))
			}))
			defer srv.Close()
			req, _ := http.NewRequest("POST", srv.URL+"/order", strings.NewReader("one order"))
			req.Header.Set("X-Request-Id", "sre-check-7")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 502 || !strings.Contains(string(b), "Request id: sre-check-7 ") {
				t.Fatalf("got %d %q, want 502 naming the request id", resp.StatusCode, b)
			}
			if got := resp.Header.Get("Cache-Status"); got != tc.want {
				t.Errorf("Cache-Status %q, want %q", got, tc.want)
			}
			if resp.Header.Get("X-Request-Id") != "sre-check-7" || resp.Header.Get("X-Plugin") != "" {
				t.Errorf("X-Request-Id %q X-Plugin %q, want the request's id and no field set before the failure",
					resp.Header.Get("X-Request-Id"), resp.Header.Get("X-Plugin"))
			}
			log := logs.String()
			if want := `level=WARN msg="origin failed" request_id=sre-check-7 site=s1 url=/order status=502`; !strings.Contains(log, want) ||
				!strings.Contains(log, "server="+strings.TrimPrefix(dead, "http://")) {
				t.Errorf("log %q lacks %q and the server", log, want)
			}
		})
	}
}

// TestWritePage: a page the PoP makes for another reason (a 503, an
// only-if-cached 504) has the same fields and body form as the origin
// error pages.
func TestWritePage(t *testing.T) {
	p, err := proxy.New(proxy.Options{SiteID: "s1", PoPID: "pop-a", Transport: http.DefaultTransport})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.WritePage(w, r, proxy.Page{Status: 503, Reason: "plugin-failure", CacheStatus: "meridian; fwd=bypass",
			Message: `a plugin of site "s1" failed.`})
	}))
	defer srv.Close()
	req, _ := http.NewRequest("GET", srv.URL, nil)
	req.Header.Set("X-Request-Id", "sre-check-8")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	want := "503 Service Unavailable from PoP pop-a: a plugin of site \"s1\" failed.\n" +
		"Request id: sre-check-8 (quote it when you report this; the PoP's log has the details).\n"
	if resp.StatusCode != 503 || string(b) != want {
		t.Fatalf("got %d %q, want 503 %q", resp.StatusCode, b, want)
	}
	for f, want := range map[string]string{"Via": "1.1 pop-a", "X-Request-Id": "sre-check-8", "Cache-Status": "meridian; fwd=bypass; detail=plugin-failure",
		"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"} {
		if got := resp.Header.Get(f); got != want {
			t.Errorf("%s %q, want %q", f, got, want)
		}
	}
}
