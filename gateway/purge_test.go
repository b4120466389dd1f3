package gateway_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/meridian-edge/meridian/gateway"
)

// TestPurgeWarnsWhenTheURLCannotMatch: a purge whose URL names a host the
// site does not serve (or lacks the port clients use) still answers 200,
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
		{"right host, port missing", "url", "http://www.example.test/none", []string{"nothing matched", "this PoP serves http on port " + port, "purge http://www.example.test:" + port + "/none"}},
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
