package plugins_test

import (
	"strings"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/plugins"
)

func TestLimitsAndOptionsAreChecked(t *testing.T) {
	cases := []struct {
		name string
		opts plugins.Options
		want string
	}{
		{"no engine", plugins.Options{}, "Options.Engine is required"},
		{"timeout below 1ms", plugins.Options{Engine: engine, Limits: plugins.Limits{Timeout: time.Microsecond}}, "below 1ms"},
		{"one page", plugins.Options{Engine: engine, Limits: plugins.Limits{MaxPages: 1}}, "max_pages 1 must be within 2..65536"},
		{"input near memory", plugins.Options{Engine: engine, Limits: plugins.Limits{MaxPages: 2, MaxInput: 64 << 10}}, "max_input 65536 must stay below a quarter"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := plugins.NewHost(c.opts)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("want error containing %q, got %v", c.want, err)
			}
		})
	}
}
