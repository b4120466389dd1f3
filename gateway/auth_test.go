package gateway_test

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/meridian-edge/meridian/gateway"
	"github.com/meridian-edge/meridian/internal/testutil"
)

// adminCall is one admin API request and what its refusal must say.
type adminCall struct {
	name, path, body, token string
	status                  int
	// want are parts of the body; wantNot must not be in it.
	want, wantNot []string
	// challenge is the WWW-Authenticate a 401 carries ("" for none).
	challenge string
}

func (c adminCall) check(t *testing.T, p *gateway.PoP) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, "http://"+p.AdminAddr()+c.path, strings.NewReader(c.body))
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b := readAll(t, resp)
	if resp.StatusCode != c.status {
		t.Errorf("%s: %d %q, want %d", c.name, resp.StatusCode, b, c.status)
	}
	for _, w := range c.want {
		if !strings.Contains(b, w) {
			t.Errorf("%s: body %q lacks %q", c.name, b, w)
		}
	}
	for _, w := range c.wantNot {
		if strings.Contains(b, w) {
			t.Errorf("%s: body %q says %q", c.name, b, w)
		}
	}
	if got := resp.Header.Get("WWW-Authenticate"); got != c.challenge {
		t.Errorf("%s: WWW-Authenticate %q, want %q", c.name, got, c.challenge)
	}
	return b
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

const (
	noTokenAdvice   = "send the ops token as 'Authorization: Bearer TOKEN'"
	notRecognised   = "the token was not recognised (check MERIDIAN_TOKEN / the admin token settings of this PoP"
	noOpsConfigured = "this PoP has no ops token configured"
	challenge       = `Bearer realm="meridian admin"`
	badChallenge    = `Bearer realm="meridian admin", error="invalid_token"`
)

func purgeBody(site string) string {
	return `{"site":"` + site + `","kind":"url","value":"http://a.example.test/x"}`
}

// TestAdminRefusalsSayWhy: a missing token, a token that is not recognised
// and a PoP without an ops token get different answers, so a user whose
// PoP has no ops token is not sent looking for a typo in theirs.
func TestAdminRefusalsSayWhy(t *testing.T) {
	a := namedOrigin(t, "A")
	sites := func() []gateway.Site {
		return []gateway.Site{
			{Name: "a", Hosts: []string{"a.example.test"}, Origin: pool(t, "a", a.URL, 0)},
			{Name: "b", Hosts: []string{"b.example.test"}, Origin: pool(t, "b", a.URL, 0)},
		}
	}

	t.Run("ops and owner tokens configured", func(t *testing.T) {
		creds, err := gateway.NewCredentials(hash("ops-token"), map[string]string{"a": hash("site-a-token")})
		if err != nil {
			t.Fatal(err)
		}
		p := startPoP(t, gateway.Options{Credentials: creds, Sites: sites()})
		for _, c := range []adminCall{
			{name: "drain, no token", path: "/admin/drain", status: 401, want: []string{noTokenAdvice}, wantNot: []string{"not recognised", noOpsConfigured}, challenge: challenge},
			{name: "drain, wrong token", path: "/admin/drain", token: "wrong", status: 401, want: []string{notRecognised, "admin.ops_token_sha256"}, wantNot: []string{"send the ops token", noOpsConfigured}, challenge: badChallenge},
			{name: "drain, owner token", path: "/admin/drain", token: "site-a-token", status: 403, want: []string{"this needs the ops token; a site owner's token cannot do it"}},
			{name: "purge, no token", path: "/admin/purge", body: purgeBody("a"), status: 401, want: []string{"send the ops token or the site owner's token as 'Authorization: Bearer TOKEN'"}, challenge: challenge},
			{name: "purge, wrong token", path: "/admin/purge", body: purgeBody("a"), token: "wrong", status: 401, want: []string{notRecognised, "admin.ops_token_sha256", "sites[].owner_token_sha256"}, wantNot: []string{noOpsConfigured}, challenge: badChallenge},
			{name: "purge, owner token of another site", path: "/admin/purge", body: purgeBody("b"), token: "site-a-token", status: 403, want: []string{`this token may not purge site "b"`}},
			{name: "purge, owner token", path: "/admin/purge", body: purgeBody("a"), token: "site-a-token", status: 200, want: []string{`"purged_here":0`}},
			// The token is checked before the body: no token, no parse errors.
			{name: "purge, bad body, no token", path: "/admin/purge", body: `{"site":`, status: 401, want: []string{"send the ops token or the site owner's token"}, wantNot: []string{"JSON"}, challenge: challenge},
			{name: "purge, bad body, owner token", path: "/admin/purge", body: `{"site":`, token: "site-a-token", status: 400, want: []string{"purge: bad JSON body", `send {"site":"www"`}},
		} {
			c.check(t, p)
		}
		if resp, _ := do(t, "GET", p.AdminAddr(), "", "/healthz"); resp.StatusCode != 200 {
			t.Fatalf("a refused drain drained the PoP: healthz %d", resp.StatusCode)
		}
	})

	t.Run("no tokens configured", func(t *testing.T) {
		// As deploy/ten-pops.yaml: no admin section, no owner tokens.
		p := startPoP(t, gateway.Options{Sites: sites()})
		for _, tok := range []string{"", "some-token"} {
			for _, c := range []adminCall{
				{name: "drain, token " + strconv.Quote(tok), path: "/admin/drain", token: tok, status: 403, want: []string{noOpsConfigured, "admin.ops_token_sha256", "meridian token"}, wantNot: []string{"not recognised", "send the ops token as"}},
				{name: "purge, token " + strconv.Quote(tok), path: "/admin/purge", body: purgeBody("a"), token: tok, status: 403, want: []string{noOpsConfigured, "admin.ops_token_sha256", "owner_token_sha256", "meridian token"}, wantNot: []string{"not recognised"}},
			} {
				c.check(t, p)
			}
		}
		if resp, _ := do(t, "GET", p.AdminAddr(), "", "/healthz"); resp.StatusCode != 200 {
			t.Fatalf("a refused drain drained the PoP: healthz %d", resp.StatusCode)
		}
	})

	t.Run("owner tokens only", func(t *testing.T) {
		creds, err := gateway.NewCredentials("", map[string]string{"a": hash("site-a-token")})
		if err != nil {
			t.Fatal(err)
		}
		p := startPoP(t, gateway.Options{Credentials: creds, Sites: sites()})
		for _, c := range []adminCall{
			// No token can drain: say so, whoever asks.
			{name: "drain, no token", path: "/admin/drain", status: 403, want: []string{noOpsConfigured, "admin.ops_token_sha256"}},
			{name: "drain, owner token", path: "/admin/drain", token: "site-a-token", status: 403, want: []string{noOpsConfigured}},
			{name: "purge, no token", path: "/admin/purge", body: purgeBody("a"), status: 401, want: []string{"send the ops token or the site owner's token"}, challenge: challenge},
			{name: "purge, wrong token", path: "/admin/purge", body: purgeBody("a"), token: "wrong", status: 401, want: []string{notRecognised, "only a site owner's token can work"}, challenge: badChallenge},
			{name: "purge, owner token", path: "/admin/purge", body: purgeBody("a"), token: "site-a-token", status: 200},
		} {
			c.check(t, p)
		}
		// Whether a site has an owner token is nobody's business without
		// one: site a has one, site b none, and the refusals are the same.
		for _, tok := range []string{"", "wrong"} {
			ra := adminCall{name: "purge a, token " + strconv.Quote(tok), path: "/admin/purge", body: purgeBody("a"), token: tok, status: 401, challenge: challenge}
			rb := ra
			rb.name, rb.body = "purge b, token "+strconv.Quote(tok), purgeBody("b")
			if tok != "" {
				ra.challenge, rb.challenge = badChallenge, badChallenge
			}
			if ba, bb := ra.check(t, p), rb.check(t, p); ba != bb {
				t.Errorf("token %q: site a answers %q, site b %q; they must not differ", tok, ba, bb)
			}
		}
	})
}

// TestCacheMetricsUseThePoPID: the cache's metrics are labelled with the
// PoP's id, as /admin/info, the logs and the DNS server's metrics are, so
// dashboards can join them; Via keeps naming the PoP "meridian-<id>".
func TestCacheMetricsUseThePoPID(t *testing.T) {
	a := namedOrigin(t, "A")
	p := startPoP(t, gateway.Options{ID: "ap-northeast-1", Sites: []gateway.Site{{Name: "a", Hosts: []string{"a.example.test"}, Origin: pool(t, "a", a.URL, 0)}}})
	resp, _ := do(t, "GET", p.HTTPAddr(), "a.example.test", "/")
	if via := resp.Header.Get("Via"); via != "1.1 meridian-ap-northeast-1" {
		t.Errorf("Via %q, want %q", via, "1.1 meridian-ap-northeast-1")
	}
	if _, info := do(t, "GET", p.AdminAddr(), "", "/admin/info"); !strings.Contains(info, `"pop":"ap-northeast-1"`) {
		t.Fatalf("/admin/info: %s", info)
	}
	if n := testutil.MetricSum(t, p.Registry(), "meridian_cache_requests_total", map[string]string{"pop": "ap-northeast-1", "site": "a"}); n != 1 {
		_, body := do(t, "GET", p.AdminAddr(), "", "/metrics")
		var lines []string
		for l := range strings.Lines(body) {
			if strings.HasPrefix(l, "meridian_cache_requests_total") {
				lines = append(lines, l)
			}
		}
		t.Errorf("meridian_cache_requests_total{pop=\"ap-northeast-1\",site=\"a\"} = %v, want 1; /metrics has\n%s", n, strings.Join(lines, ""))
	}
	if n := testutil.MetricSum(t, p.Registry(), "meridian_cache_requests_total", map[string]string{"pop": "meridian-ap-northeast-1"}); n != 0 {
		t.Errorf("cache metrics still labelled with the Via name: %v", n)
	}
}
