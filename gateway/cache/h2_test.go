package cache_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/meridian-edge/meridian/gateway/cache"
	"github.com/meridian-edge/meridian/gateway/cache/cachetest"
	"github.com/meridian-edge/meridian/internal/testutil"
)

func TestHTTP2Clients(t *testing.T) {
	origin := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		io.WriteString(w, "over h2")
	}))
	c, err := cache.New(cache.Options{L1Bytes: 4 << 20, PoPID: "p"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	front := httptest.NewUnstartedServer(c.Handler(cache.SitePolicy{SiteID: "s"}, cachetest.Transport(t, origin.URL, 0)))
	front.EnableHTTP2 = true
	front.StartTLS()
	defer front.Close()
	client := front.Client()
	for i, want := range []string{"fwd=uri-miss", "hit"} {
		resp, err := client.Get(front.URL + "/h2")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.ProtoMajor != 2 || string(b) != "over h2" || !strings.Contains(resp.Header.Get("Cache-Status"), want) || resp.Header.Get("Via") != "2 meridian-p" {
			t.Fatalf("request %d: proto %d body %q Cache-Status %q Via %q", i, resp.ProtoMajor, b, resp.Header.Get("Cache-Status"), resp.Header.Get("Via"))
		}
	}
}

func TestPurgeDuringFillIsNotResurrected(t *testing.T) {
	release := make(chan struct{})
	var e *env
	e = newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=600")
		io.WriteString(w, "old ")
		w.(http.Flusher).Flush()
		if e.count.Load() == 1 {
			<-release
		}
		io.WriteString(w, "content")
	}, envOpt{})
	got := make(chan reply, 1)
	go func() { got <- e.get("/p") }()
	testutil.WaitFor(t, "the fill to start", func() bool { return e.count.Load() == 1 })
	if _, err := e.c.Purge(context.Background(), cache.Selector{Site: "site1", Kind: cache.BySite}); err != nil {
		t.Fatal(err)
	}
	close(release)
	if r := <-got; r.body != "old content" {
		t.Fatalf("first client: %q", r.body)
	}
	if r := e.get("/p"); strings.Contains(r.cs(), "hit") {
		t.Fatalf("a response fetched before the purge was stored and served: %q", r.cs())
	}
}
