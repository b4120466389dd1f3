package stack_test

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meridian-edge/meridian/internal/stack"
	"github.com/meridian-edge/meridian/internal/testutil"
)

// TestSiteErrorPageServed: a site's error_page reaches its PoPs: a browser
// whose request the origin fails gets the site's page with its request
// id, and so does one whose only-if-cached request finds nothing stored
// (504); a reload that changes the file's content serves the new page.
func TestSiteErrorPageServed(t *testing.T) {
	page := filepath.Join(t.TempDir(), "502.html")
	if err := os.WriteFile(page, []byte("<p>We are back soon ({{status}}, ref {{request_id}})</p>"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := devConfig(t, "http://"+testutil.FreeAddr(t, "127.0.0.1"))
	cfg.Sites[0].ErrorPage = page
	const pop = "us-east-1"
	st := runStack(t, cfg, stack.Roles{PoPs: []string{pop}}, nil)
	browse := func(cacheControl ...string) (*http.Response, string) {
		req, _ := http.NewRequest("GET", "http://"+st.PoP(pop).HTTPAddr()+"/", nil)
		req.Host = "www.example.test"
		req.Header.Set("Accept", "text/html,*/*;q=0.8")
		for _, cc := range cacheControl {
			req.Header.Add("Cache-Control", cc)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	resp, body := browse()
	if want := "<p>We are back soon (502, ref " + resp.Header.Get("X-Request-Id") + ")</p>"; resp.StatusCode != 502 || body != want ||
		!strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("origin down: %d %q %q, want 502 with %q", resp.StatusCode, resp.Header.Get("Content-Type"), body, want)
	}
	resp, body = browse("only-if-cached")
	if want := "<p>We are back soon (504, ref " + resp.Header.Get("X-Request-Id") + ")</p>"; resp.StatusCode != 504 || body != want ||
		resp.Header.Get("Cache-Status") != "meridian; fwd=miss; detail=only-if-cached" {
		t.Fatalf("only-if-cached, nothing stored: %d %q %q, want 504 with %q", resp.StatusCode, resp.Header.Get("Cache-Status"), body, want)
	}
	if err := os.WriteFile(page, []byte("<p>new page</p>"), 0o644); err != nil {
		t.Fatal(err)
	}
	next := reloadConfig(t, cfg, cfg.Sites[0].Origins[0].URL)
	next.Sites[0].ErrorPage = page
	if err := st.Reload(next); err != nil {
		t.Fatal(err)
	}
	if _, body := browse(); body != "<p>new page</p>" {
		t.Fatalf("after the reload: %q", body)
	}
}
