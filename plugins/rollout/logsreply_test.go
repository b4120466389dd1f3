package rollout

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// TestEncodeLogsReply: an answer over the budget keeps its newest lines
// that fit, counts the others, and never exceeds the budget.
func TestEncodeLogsReply(t *testing.T) {
	lines := func(n, msgLen int) []LogLine {
		out := make([]LogLine, n)
		for i := range out {
			out[i] = LogLine{Time: time.Unix(int64(1000-i), 0).UTC(), PoP: "lon", Plugin: "tag", Version: 1, Level: "warn", Msg: strings.Repeat("x", msgLen)}
		}
		return out
	}
	cases := []struct {
		name       string
		n, msgLen  int
		budget     int
		keep, left int
	}{
		{"fits", 10, 100, 64 << 10, 10, 0},
		{"over: newest kept", 100, 1000, 32 << 10, -1, -1},
		{"not even one line", 5, 1000, 300, 0, 5},
		{"no lines", 0, 0, 300, 0, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			all := lines(c.n, c.msgLen)
			rep := logsReply{V: logsWire, PoP: "lon", Lines: all}
			data, err := encodeLogsReply(&rep, c.budget)
			if err != nil {
				t.Fatal(err)
			}
			if len(data) > c.budget {
				t.Fatalf("%d bytes, over the %d byte budget", len(data), c.budget)
			}
			var back logsReply
			if err := json.Unmarshal(data, &back); err != nil {
				t.Fatal(err)
			}
			if len(back.Lines)+back.Truncated != c.n {
				t.Fatalf("%d lines kept + %d left out, want %d in all", len(back.Lines), back.Truncated, c.n)
			}
			if c.keep >= 0 && (len(back.Lines) != c.keep || back.Truncated != c.left) {
				t.Fatalf("kept %d, left out %d; want %d, %d", len(back.Lines), back.Truncated, c.keep, c.left)
			}
			if c.keep < 0 && (len(back.Lines) == 0 || back.Truncated == 0) {
				t.Fatalf("kept %d, left out %d; want some of each", len(back.Lines), back.Truncated)
			}
			for i, l := range back.Lines {
				if !l.Time.Equal(all[i].Time) {
					t.Fatalf("line %d is of %v, want the newest lines first (%v)", i, l.Time, all[i].Time)
				}
			}
		})
	}
}
