package gateway_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/meridian-edge/meridian/gateway"
	mtestutil "github.com/meridian-edge/meridian/internal/testutil"
)

// TestAccessLogSaysWhatTheCacheDid: every access log line, on the fast
// path and through net/http, has the site, what the cache did (miss, then
// hit-l1; pass for a POST; error for a dead origin; none for an unknown
// host), and the client's user agent and referer, quoted safely (a user
// agent with quotes and a backslash stays one value of its line).
func TestAccessLogSaysWhatTheCacheDid(t *testing.T) {
	for _, noFast := range []bool{false, true} {
		t.Run(fmt.Sprintf("noFastPath=%v", noFast), func(t *testing.T) {
			o := cacheableOrigin(t)
			dead := "http://" + mtestutil.FreeAddr(t, "127.0.0.1") // nothing listens: refused
			logs := &mtestutil.SyncBuffer{}
			p := startPoP(t, gateway.Options{
				NoFastPath: noFast,
				Logger:     slog.New(slog.NewTextHandler(logs, nil)),
				Sites: []gateway.Site{
					{Name: "a", Hosts: []string{"a.test"}, Origin: pool(t, "a", o.URL, 0)},
					{Name: "dead", Hosts: []string{"dead.test"}, Origin: pool(t, "dead", dead, 0)},
				},
			})
			const ua = `curl/8 "quoted" \ back`
			get := func(host, path string) string {
				return "GET " + path + " HTTP/1.1\r\nHost: " + host + "\r\nUser-Agent: " + ua + "\r\nReferer: https://ref.test/from?q=1\r\n\r\n"
			}
			exchange(t, p.HTTPAddr(),
				get("a.test", "/x"), get("a.test", "/x"),
				"POST /form HTTP/1.1\r\nHost: a.test\r\nContent-Length: 0\r\n\r\n",
				get("dead.test", "/y"), get("nosuch.test", "/z"))
			mtestutil.WaitFor(t, "five access log lines", func() bool { return strings.Count(logs.String(), "msg=request") == 5 })
			var lines []string
			sc := bufio.NewScanner(strings.NewReader(logs.String()))
			for sc.Scan() {
				if strings.Contains(sc.Text(), "msg=request") {
					lines = append(lines, sc.Text())
				}
			}
			quotedUA, _ := json.Marshal(ua) // the text handler quotes as Go does, which for this is JSON's quoting too
			want := []string{
				`uri=/x proto=HTTP/1.1 status=200`, `site=a cache=miss ua=` + string(quotedUA) + ` referer="https://ref.test/from?q=1"`,
				`uri=/x proto=HTTP/1.1 status=200`, `site=a cache=hit-l1 ua=` + string(quotedUA),
				`uri=/form`, `site=a cache=pass ua="" referer=""`,
				`uri=/y`, `status=502`, `site=dead cache=error`,
				`uri=/z`, `status=421`, `site=_unknown cache=none`,
			}
			if len(lines) != 5 {
				t.Fatalf("%d access log lines, want 5:\n%s", len(lines), logs.String())
			}
			t.Log(lines[1])
			checks := [][]string{want[0:2], want[2:4], want[4:6], want[6:9], want[9:12]}
			for i, l := range lines {
				for _, w := range checks[i] {
					if !strings.Contains(l, w) {
						t.Errorf("access log line %d lacks %q:\n%s", i, w, l)
					}
				}
			}
		})
	}
}
