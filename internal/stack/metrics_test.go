package stack_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/meridian-edge/meridian/internal/demoorigin"
	"github.com/meridian-edge/meridian/internal/stack"
	"github.com/meridian-edge/meridian/internal/testutil"
)

// TestMetricsEndpointsNameTheBuildAndThePoP: every admin /metrics and the
// DNS's /metrics say which build runs (meridian_build_info) and the DNS's
// has the Go runtime's and the process's series too; the reload results
// exist at 0 before any reload; a PoP's TLS, origin, sync and plugin series
// carry its pop label;
// each site's cut-body reasons exist at 0.
func TestMetricsEndpointsNameTheBuildAndThePoP(t *testing.T) {
	origin := httptest.NewServer(demoorigin.New())
	t.Cleanup(origin.Close)
	cfg := devConfig(t, origin.URL)
	cfg.DNS.Metrics = testutil.FreeAddr(t, "127.0.0.1")
	st := runStack(t, cfg, stack.Roles{AllPoPs: true, DNS: true}, nil)
	resp, err := http.Get("http://" + cfg.DNS.Metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	dns := string(b)
	for _, want := range []string{"meridian_build_info{go_version=\"go", "go_goroutines ", "process_start_time_seconds ", `meridian_config_reloads_total{result="refused"} 0`} {
		if !strings.Contains(dns, want) {
			t.Errorf("DNS /metrics lacks %q", want)
		}
	}
	for _, id := range st.PoPIDs() {
		_, body := adminDo(t, st, id, "GET", "/metrics", "")
		for _, want := range []string{"meridian_build_info{go_version=\"go", "go_goroutines ", `meridian_config_reloads_total{result="applied"} 0`,
			`meridian_http_responses_cut_total{pop="` + id + `",reason="truncated",site="www"} 0`} {
			if !strings.Contains(body, want) {
				t.Errorf("PoP %s /metrics lacks %q", id, want)
			}
		}
		// Per-PoP families carry the pop label, whichever component
		// registers them.
		for _, prefix := range []string{"meridian_tls_", "meridian_origin_", "meridian_sync_", "meridian_plugin_"} {
			n := 0
			for line := range strings.SplitSeq(body, "\n") {
				if !strings.HasPrefix(line, prefix) {
					continue
				}
				n++
				if !strings.Contains(line, `pop="`+id+`"`) {
					t.Errorf("PoP %s: series without its pop label: %s", id, line)
				}
			}
			if n == 0 {
				t.Errorf("PoP %s: no %s series", id, prefix)
			}
		}
	}
}
