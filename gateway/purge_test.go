package gateway_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/gateway"
	"github.com/meridian-edge/meridian/internal/statesync"
	"github.com/meridian-edge/meridian/internal/testutil"
)

// TestPurgeWarnsWhenTheURLCannotMatch: a purge whose URL names a host the
// site does not serve still answers 200,
// and says why it may have matched nothing.
func TestPurgeWarnsWhenTheURLCannotMatch(t *testing.T) {
	a := namedOrigin(t, "A")
	creds, err := gateway.NewCredentials(hash("ops-token"), nil)
	if err != nil {
		t.Fatal(err)
	}
	p := startPoP(t, gateway.Options{Credentials: creds, Sites: []gateway.Site{
		{Name: "www", Hosts: []string{"www.example.test", "static.example.test"}, Origin: pool(t, "www", a.URL, 0)},
		{Name: "shop", Hosts: []string{"shop.example.test"}, Origin: pool(t, "shop", a.URL, 0)},
	}})
	_, port, _ := strings.Cut(p.HTTPAddr(), ":")
	tests := []struct {
		name, kind, value string
		wantWarning       []string // "" parts: no warning at all
	}{
		{"other host", "url", "http://other.test/x", []string{"http://other.test/ is not a host of site www (its hosts: www.example.test, static.example.test)"}},
		{"another site's host", "prefix", "https://shop.example.test/", []string{"is not a host of site www", "shop.example.test belongs to site shop"}},
		{"right host without the port", "url", "http://www.example.test/none", nil}, // keys have no port
		{"right host and port", "url", "http://www.example.test:" + port + "/none", nil},
		{"surrogate key", "surrogate-key", "k1", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			body := `{"site":"www","kind":"` + tc.kind + `","value":"` + tc.value + `"}`
			req, _ := http.NewRequest(http.MethodPost, "http://"+p.AdminAddr()+"/admin/purge", strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer ops-token")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b := readAll(t, resp)
			if resp.StatusCode != 200 {
				t.Fatalf("%d %q, want 200", resp.StatusCode, b)
			}
			var got struct {
				Purged  *int   `json:"purged_here"`
				Warning string `json:"warning"`
			}
			if err := json.Unmarshal([]byte(b), &got); err != nil || got.Purged == nil || *got.Purged != 0 {
				t.Fatalf("answer %q: want purged_here 0 (%v)", b, err)
			}
			if tc.wantWarning == nil && got.Warning != "" {
				t.Errorf("warning %q, want none", got.Warning)
			}
			for _, w := range tc.wantWarning {
				if !strings.Contains(got.Warning, w) {
					t.Errorf("warning %q lacks %q", got.Warning, w)
				}
			}
		})
	}
}

// TestPurgeOfAStoredURLHasNoWarning: a purge that removed something says
// nothing more.
func TestPurgeOfAStoredURLHasNoWarning(t *testing.T) {
	creds, err := gateway.NewCredentials(hash("ops-token"), nil)
	if err != nil {
		t.Fatal(err)
	}
	o := cacheableOrigin(t).URL
	p := startPoP(t, gateway.Options{Credentials: creds, Sites: []gateway.Site{
		{Name: "www", Hosts: []string{"www.example.test"}, Origin: pool(t, "www", o, 0)},
	}})
	if resp, b := do(t, "GET", p.HTTPAddr(), "www.example.test", "/x"); resp.StatusCode != 200 {
		t.Fatalf("GET: %d %q", resp.StatusCode, b)
	}
	// The fill is stored as its body reaches the client, and may finish
	// just after: a purge before that would find nothing to remove.
	testutil.WaitFor(t, "/x stored", func() bool {
		resp, _ := do(t, "GET", p.HTTPAddr(), "www.example.test", "/x")
		return strings.Contains(resp.Header.Get("Cache-Status"), "hit")
	})
	req, _ := http.NewRequest(http.MethodPost, "http://"+p.AdminAddr()+"/admin/purge",
		strings.NewReader(`{"site":"www","kind":"url","value":"http://www.example.test/x"}`))
	req.Header.Set("Authorization", "Bearer ops-token")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if b := readAll(t, resp); resp.StatusCode != 200 || !strings.Contains(b, `"purged_here":1`) || strings.Contains(b, "warning") {
		t.Fatalf("%d %q, want 200 purged_here 1 without a warning", resp.StatusCode, b)
	}
}

// TestPurgeWhileNATSIsDownSaysQueued: with state sync on a real embedded
// NATS, a purge answers replicated:true while NATS is up; once NATS is
// shut down, a purge is still applied here but says replicated:false,
// queued:true and why, instead of claiming it reached the other PoPs.
func TestPurgeWhileNATSIsDownSaysQueued(t *testing.T) {
	srv := testutil.StartNATS(t)
	nc := testutil.Connect(t, srv)
	node, err := statesync.Open(context.Background(), statesync.Options{NodeID: "test-pop", Conn: nc, DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { node.Close() })
	creds, err := gateway.NewCredentials(hash("ops-token"), nil)
	if err != nil {
		t.Fatal(err)
	}
	p := startPoP(t, gateway.Options{Credentials: creds, Sync: node, Sites: []gateway.Site{
		{Name: "www", Hosts: []string{"www.example.test"}, Origin: pool(t, "www", cacheableOrigin(t).URL, 0)},
	}})
	type answer struct {
		ID         string `json:"id"`
		Replicated bool   `json:"replicated"`
		Queued     bool   `json:"queued"`
		Warning    string `json:"warning"`
	}
	purge := func() answer {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, "http://"+p.AdminAddr()+"/admin/purge",
			strings.NewReader(`{"site":"www","kind":"surrogate-key","value":"k1"}`))
		req.Header.Set("Authorization", "Bearer ops-token")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b := readAll(t, resp)
		var a answer
		if resp.StatusCode != 200 || json.Unmarshal([]byte(b), &a) != nil || a.ID == "" {
			t.Fatalf("purge: %d %q, want 200 with a purge id", resp.StatusCode, b)
		}
		return a
	}
	if a := purge(); !a.Replicated || a.Queued {
		t.Fatalf("purge with NATS up: %+v, want replicated and not queued", a)
	}
	srv.Shutdown()
	testutil.WaitFor(t, "the client to see NATS gone", func() bool { return !nc.IsConnected() })
	a := purge()
	if a.Replicated || !a.Queued || !strings.Contains(a.Warning, "NATS is unreachable") || !strings.Contains(a.Warning, "when NATS is back") {
		t.Fatalf("purge with NATS down: %+v, want replicated false, queued true and a warning saying it waits for NATS", a)
	}
	if st := node.Status(); st.Queued == 0 {
		t.Errorf("sync node status %+v: the purge should wait in its queue", st)
	}
}

// TestPurgeMatchesEveryFormOfAURL: cache keys hold neither the port clients
// used nor their percent-encoding spelling, so a URL purge through the
// admin API removes the copy whichever form either side used.
func TestPurgeMatchesEveryFormOfAURL(t *testing.T) {
	creds, err := gateway.NewCredentials(hash("ops-token"), nil)
	if err != nil {
		t.Fatal(err)
	}
	p := startPoP(t, gateway.Options{Credentials: creds, Sites: []gateway.Site{
		{Name: "www", Hosts: []string{"www.example.test"}, Origin: pool(t, "www", cacheableOrigin(t).URL, 0)},
	}})
	_, port, _ := strings.Cut(p.HTTPAddr(), ":")
	tests := []struct{ host, path, purge string }{
		{"www.example.test:" + port, "/y/%7ea", "http://www.example.test/y/~a"},
		{"www.example.test", "/z/~b", "http://www.example.test:" + port + "/z/%7Eb"},
		{"www.example.test.:" + port, "/w", "http://WWW.EXAMPLE.TEST:8080/w#section"},
	}
	for _, tc := range tests {
		// Until it is a hit: the fill is stored after its client has the body.
		stored := false
		for deadline := time.Now().Add(10 * time.Second); !stored && time.Now().Before(deadline); {
			resp, b := do(t, "GET", p.HTTPAddr(), tc.host, tc.path)
			if resp.StatusCode != 200 {
				t.Fatalf("GET %s (Host %s): %d %q", tc.path, tc.host, resp.StatusCode, b)
			}
			stored = strings.Contains(resp.Header.Get("Cache-Status"), "hit")
			time.Sleep(10 * time.Millisecond)
		}
		if !stored {
			t.Fatalf("GET %s (Host %s) never became a hit", tc.path, tc.host)
		}
		req, _ := http.NewRequest(http.MethodPost, "http://"+p.AdminAddr()+"/admin/purge",
			strings.NewReader(`{"site":"www","kind":"url","value":"`+tc.purge+`"}`))
		req.Header.Set("Authorization", "Bearer ops-token")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if b := readAll(t, resp); resp.StatusCode != 200 || !strings.Contains(b, `"purged_here":1`) {
			t.Errorf("purge %s of %s (Host %s): %d %q, want purged_here 1", tc.purge, tc.path, tc.host, resp.StatusCode, b)
		}
		if resp, _ := do(t, "GET", p.HTTPAddr(), tc.host, tc.path); !strings.Contains(resp.Header.Get("Cache-Status"), "fwd=uri-miss") {
			t.Errorf("GET %s (Host %s) after the purge: %s, want a miss", tc.path, tc.host, resp.Header.Get("Cache-Status"))
		}
	}
}
