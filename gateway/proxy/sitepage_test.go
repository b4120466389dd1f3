package proxy_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/gateway/cache/cachetest"
	"github.com/meridian-edge/meridian/gateway/proxy"
	"github.com/meridian-edge/meridian/internal/testutil"
)

// TestSiteErrorPage: with a site's own error page, a browser (Accept:
// text/html) whose request the origin fails gets that page, its
// placeholders filled in and escaped, with the page's status and fields;
// a client that does not take HTML keeps the plain-text page.
func TestSiteErrorPage(t *testing.T) {
	page := `<h1>{{status}} {{status_text}}</h1><p>ref {{request_id}} at {{pop}}</p>`
	p, err := proxy.New(proxy.Options{SiteID: "s1", PoPID: "pop<a>", ErrorPage: []byte(page),
		Transport: cachetest.Transport(t, "http://"+testutil.FreeAddr(t, "127.0.0.1"), time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(p)
	defer srv.Close()
	get := func(accept string) (*http.Response, string) {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/x", nil)
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	resp, body := get("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8")
	id := resp.Header.Get("X-Request-Id")
	if want := "<h1>502 Bad Gateway</h1><p>ref " + id + " at pop&lt;a&gt;</p>"; resp.StatusCode != 502 || body != want || id == "" {
		t.Fatalf("browser: %d %q, want 502 %q", resp.StatusCode, body, want)
	}
	for f, want := range map[string]string{"Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store", "Via": "1.1 pop<a>"} {
		if got := resp.Header.Get(f); got != want {
			t.Errorf("browser: %s %q, want %q", f, got, want)
		}
	}
	for _, accept := range []string{"", "*/*", "application/json", "text/html;q=0"} {
		resp, body := get(accept)
		if resp.StatusCode != 502 || resp.Header.Get("Content-Type") != "text/plain; charset=utf-8" || !strings.HasPrefix(body, "502 Bad Gateway from PoP pop<a>") {
			t.Errorf("Accept %q: %d %q %q, want the plain-text page", accept, resp.StatusCode, resp.Header.Get("Content-Type"), body)
		}
	}
}

func TestAcceptsHTML(t *testing.T) {
	for accept, want := range map[string]bool{
		"text/html":                     true,
		"TEXT/HTML; charset=utf-8":      true,
		"application/json, text/html":   true,
		"text/html;q=0.5":               true,
		"text/html;q=0":                 false,
		"*/*":                           false,
		"text/plain":                    false,
		"application/xhtml+xml,*/*;q=1": false,
	} {
		if got := proxy.AcceptsHTML([]string{accept}); got != want {
			t.Errorf("AcceptsHTML(%q) = %v, want %v", accept, got, want)
		}
	}
}
