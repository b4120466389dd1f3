package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/internal/stack"
)

// TestPurgeCommand: `meridian purge` through one PoP's admin API removes
// the object at another PoP (the purge is replicated), by URL with any
// port, by Surrogate-Key and for the whole site; its mistakes are usage
// errors said before anything is sent, and the PoP's refusals come back
// with their reason.
func TestPurgeCommand(t *testing.T) {
	var fetches atomic.Int64
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		w.Header().Set("Cache-Control", "max-age=600")
		w.Header().Set("Surrogate-Key", "css")
		io.WriteString(w, "object "+r.URL.Path)
	}))
	defer origin.Close()
	cfg, _ := startStack(t, strings.Replace(twoPoPs, "http://127.0.0.1:8081", origin.URL, 1)+
		"admin:\n  ops_token_sha256: 9d121d994c8c0ac8cc7786f5c0c775588c389b87416c38dd89acdefde3757d21\n", stack.Roles{AllPoPs: true})
	// get fetches path from p1 and reports whether it was a hit.
	get := func(path string) bool {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, "http://"+cfg.PoPs[0].HTTP+path, nil)
		req.Host = "www.example.test"
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return strings.Contains(resp.Header.Get("Cache-Status"), "; hit")
	}
	warm := func(path string) {
		t.Helper()
		get(path)
		if !get(path) {
			t.Fatalf("%s: not a hit on the second request", path)
		}
	}
	purgedAtP1 := func(path string) {
		t.Helper()
		// The record reaches p1 over NATS; every read checks it on arrival.
		deadline := time.Now().Add(10 * time.Second)
		for get(path) {
			if time.Now().After(deadline) {
				t.Fatalf("%s still a hit at p1 10 s after the purge", path)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	p2 := "--admin=" + cfg.PoPs[1].Admin // no scheme, as the banner prints addresses
	purge := func(args ...string) (string, string, int) {
		var out, errb bytes.Buffer
		code := run(context.Background(), append([]string{"purge"}, args...), &out, &errb)
		return out.String(), errb.String(), code
	}
	t.Setenv("MERIDIAN_TOKEN", "dev-ops-token")

	warm("/a.css")
	out, errText, code := purge(p2, "--site=www", "--url=http://www.example.test:8080/a.css")
	if code != 0 || !strings.Contains(out, "purged http://www.example.test:8080/a.css of site www") || !strings.Contains(out, "recorded for every PoP") {
		t.Fatalf("purge --url: exit %d\n%s%s", code, out, errText)
	}
	purgedAtP1("/a.css")

	warm("/b.css")
	warm("/c.css")
	if out, errText, code := purge(p2, "--site=www", "--key=css", "--soft"); code != 0 || !strings.Contains(out, "marked stale Surrogate-Key css") {
		t.Fatalf("purge --key --soft: exit %d\n%s%s", code, out, errText)
	}
	purgedAtP1("/b.css")
	purgedAtP1("/c.css")

	warm("/d.css")
	if out, errText, code := purge("--site=www", "--all", p2); code != 0 || !strings.Contains(out, "purged everything of site www") {
		t.Fatalf("purge --all: exit %d\n%s%s", code, out, errText)
	}
	purgedAtP1("/d.css")

	before := fetches.Load()
	for _, c := range []struct {
		args []string
		code int
		err  string
	}{
		{[]string{p2, "--url=http://www.example.test/x"}, 2, "--site is required"},
		{[]string{p2, "--site=www"}, 2, "say what to purge with one of --url, --prefix, --key or --all"},
		{[]string{p2, "--site=www", "--all", "--key=css"}, 2, "give only one of --url, --prefix, --key or --all (got --key and --all)"},
		{[]string{p2, "--site=www", "/a.css"}, 2, `unexpected argument "/a.css"`},
		{[]string{p2, "--site=www", "--url=http://www.example.test/x", "--token=wrong"}, 1, "purge:"},
		{[]string{p2, "--site=nosuch", "--all"}, 1, `no site "nosuch"`},
		{[]string{p2, "--site=www", "--url=not a url"}, 1, "purge:"},
		{[]string{"--admin=http://127.0.0.1:1", "--site=www", "--all"}, 1, "is the PoP running?"},
	} {
		out, errText, code := purge(c.args...)
		if code != c.code || !strings.Contains(errText, c.err) {
			t.Errorf("meridian purge %v: exit %d, stdout %q, stderr %q; want %d and %q", c.args, code, out, errText, c.code, c.err)
		}
	}
	if n := fetches.Load(); n != before {
		t.Errorf("refused purges made %d origin requests", n-before)
	}
}
