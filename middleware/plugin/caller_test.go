package plugin_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/go-chi/chi/v5"

	"github.com/meridian-edge/meridian/middleware/plugin"
	"github.com/meridian-edge/meridian/plugins"
	"github.com/meridian-edge/meridian/plugins/native"
	"github.com/meridian-edge/meridian/plugins/plugintest"
)

// TestCallersRequestIsNotChanged: the middleware hands on a copy of the
// request that it changes (headers, path, query, context), copying the
// header map and URL only when a plugin changes them. The request of the
// handler in front of it must come back exactly as it was; a chain that
// changes nothing passes the request on without Directives, and so does a
// chain that changes only headers (no decision for the cache or origins).
func TestCallersRequestIsNotChanged(t *testing.T) {
	ctx := context.Background()
	nat, err := native.New(native.Options{CacheDir: plugintest.CacheDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nat.Close(ctx) })
	h, err := plugins.NewHost(plugins.Options{Engine: nat})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close(ctx) })
	cont, err := plugintest.WAT(ctx, t.TempDir(), "continue")
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{"rewrite": wasm["as-headers"], "continue": cont} {
		v, err := h.Add(ctx, "shop", name, b)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.Activate(ctx, "shop", name, v.Version); err != nil {
			t.Fatal(err)
		}
	}
	chains := map[string]*plugins.Chain{
		"/legacy/items": {Site: "shop", Entries: []plugins.Entry{{Plugin: "rewrite", Config: map[string]string{
			"request": "X-Site: shop", "rewrite_prefix": "/legacy", "rewrite_to": "/v2", "no_store": "true"}}}},
		"/plain": {Site: "shop", Entries: []plugins.Entry{{Plugin: "continue"}}},
		"/headers": {Site: "shop", Entries: []plugins.Entry{{Plugin: "rewrite", Config: map[string]string{
			"request": "X-Site: shop"}}}},
	}
	type seen struct {
		path, query, site, cc string
		dir                   *plugin.Directives
	}
	var got seen
	r := chi.NewRouter()
	r.Use(plugin.New(plugin.Options{Host: h, PoP: "fra1",
		Chain: func(r *http.Request) *plugins.Chain { return chains[r.URL.Path] }}))
	r.Handle("/*", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = seen{r.URL.Path, r.URL.RawQuery, r.Header.Get("X-Site"), r.Header.Get("Cache-Control"), plugin.DirectivesFrom(r.Context())}
	}))
	front := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		hdr, u, c := req.Header, req.URL, req.Context()
		before := req.Header.Clone()
		path, query, uri := req.URL.Path, req.URL.RawQuery, req.RequestURI
		r.ServeHTTP(w, req)
		if req.Header.Get("X-Site") != "" || req.Header.Get("Cache-Control") != before.Get("Cache-Control") || len(req.Header) != len(before) {
			t.Errorf("caller's header changed: %v, was %v", req.Header, before)
		}
		if req.URL != u || req.URL.Path != path || req.URL.RawQuery != query || req.RequestURI != uri || req.Context() != c {
			t.Errorf("caller's URL or context changed: %v %q", req.URL, req.RequestURI)
		}
		if len(hdr) != len(before) {
			t.Errorf("caller's header map changed: %v", hdr)
		}
	})
	srv := httptest.NewServer(front)
	t.Cleanup(srv.Close)

	resp, err := http.Get(srv.URL + "/legacy/items?x=1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got.path != "/v2/items" || got.query != "x=1&rewritten=1" || got.site != "shop" || got.cc != "no-store" {
		t.Fatalf("handler after the plugin saw %+v", got)
	}
	if got.dir == nil || !got.dir.NoStore {
		t.Fatalf("Directives = %+v, want NoStore", got.dir)
	}

	resp, err = http.Get(srv.URL + "/plain?y=2")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got.path != "/plain" || got.query != "y=2" || got.site != "" || got.dir != nil {
		t.Fatalf("a chain that changes nothing: handler saw %+v, want the request as sent and no Directives", got)
	}

	resp, err = http.Get(srv.URL + "/headers?z=3")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got.path != "/headers" || got.query != "z=3" || got.site != "shop" || got.cc != "" || got.dir != nil {
		t.Fatalf("a chain that sets a header: handler saw %+v, want the header and no Directives", got)
	}
}
