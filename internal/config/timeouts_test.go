package config_test

import (
	"strings"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/deploy"
	"github.com/meridian-edge/meridian/internal/config"
)

// withTimeouts adds a timeouts block to base's site.
func withTimeouts(block string) string {
	const at = "      - url: http://127.0.0.1:8081\n"
	return strings.Replace(base, at, at+"    timeouts:\n"+block, 1)
}

func TestSiteTimeouts(t *testing.T) {
	cases := []struct {
		name    string
		block   string
		want    config.Timeouts
		wantErr string
	}{
		{name: "defaults", block: "      {}\n",
			want: config.Timeouts{Connect: config.DefaultConnectTimeout, Header: config.DefaultHeaderTimeout, Idle: config.DefaultIdleTimeout, Total: config.DefaultTotalTimeout}},
		{name: "idle set", block: "      idle: 15s\n",
			want: config.Timeouts{Connect: config.DefaultConnectTimeout, Header: config.DefaultHeaderTimeout, Idle: 15 * time.Second, Total: config.DefaultTotalTimeout}},
		{name: "idle negative", block: "      idle: -1s\n",
			wantErr: "bad.yaml:15: sites[0].timeouts.idle: -1s is negative; expected a positive duration"},
		{name: "idle not a duration", block: "      idle: 30\n",
			wantErr: `bad.yaml:15: sites[0].timeouts.idle: "30" is not a duration; expected a number with a unit, like 30s, 5m or 1h`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := config.Parse("bad.yaml", []byte(withTimeouts(c.block)))
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("error = %v\nwant it to contain:\n  %s", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := cfg.Sites[0].Timeouts; got != c.want {
				t.Fatalf("timeouts = %+v, want %+v", got, c.want)
			}
		})
	}
}

// TestReferenceShowsTimeoutDefaults keeps deploy/reference.yaml's timeouts
// block in step with the defaults it documents.
func TestReferenceShowsTimeoutDefaults(t *testing.T) {
	data, err := deploy.File("reference.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse("deploy/reference.yaml", data)
	if err != nil {
		t.Fatal(err)
	}
	want := config.Timeouts{Connect: config.DefaultConnectTimeout, Header: config.DefaultHeaderTimeout, Idle: config.DefaultIdleTimeout, Total: config.DefaultTotalTimeout}
	if got := cfg.Sites[0].Timeouts; got != want {
		t.Fatalf("reference.yaml shows timeouts %+v; the defaults are %+v", got, want)
	}
}
