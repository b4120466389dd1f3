package rollout_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	ntestutil "github.com/meridian-edge/meridian/internal/testutil"
	"github.com/meridian-edge/meridian/plugins/plugintest"
	"github.com/meridian-edge/meridian/plugins/rollout"
	"github.com/meridian-edge/meridian/plugins/rollout/rollouttest"
)

// loggerWAT returns a plugin that logs a msgLen-byte warning ("line " and
// padding) on every request and sets response header "x-v: L". It copies
// 8 bytes per host call, to stay well within the call deadline under -race.
func loggerWAT(t testing.TB, msgLen int) []byte {
	t.Helper()
	rec := append([]byte{3}, "x-vL"...)
	out := append([]byte{1, 0x0c, byte(len(rec)), 0}, rec...)
	var data strings.Builder
	for _, b := range out {
		fmt.Fprintf(&data, "\\%02x", b)
	}
	msg := "line " + strings.Repeat("x", msgLen-len("line "))
	src := fmt.Sprintf(`(module
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u64" (func $store (param i64 i64)))
  (import "extism:host/env" "output_set" (func $output (param i64 i64)))
  (import "extism:host/env" "log_warn" (func $warn (param i64)))
  (memory 1)
  (data (i32.const 0) "%s")
  (data (i32.const 1024) "%s")
  (func $copy (param $src i32) (param $n i32) (result i64)
    (local $p i64) (local $i i32)
    (local.set $p (call $alloc (i64.extend_i32_u (i32.and (i32.add (local.get $n) (i32.const 7)) (i32.const -8)))))
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
      (call $store (i64.add (local.get $p) (i64.extend_i32_u (local.get $i)))
        (i64.load (i32.add (local.get $src) (local.get $i))))
      (local.set $i (i32.add (local.get $i) (i32.const 8)))
      (br $next)))
    (local.get $p))
  (func (export "on_request") (result i32)
    (call $warn (call $copy (i32.const 1024) (i32.const %d)))
    (call $output (call $copy (i32.const 0) (i32.const %d)) (i64.const %d))
    (i32.const 0)))
`, data.String(), msg, len(msg), len(out), len(out))
	b, err := plugintest.WATSource(context.Background(), t.TempDir(), "logger", src)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// getLogs asks a PoP's admin API for shop's logs with query q.
func getLogs(t testing.TB, p *rollouttest.PoP, token, q string) (int, rollout.LogsAnswer, string) {
	t.Helper()
	r := call(t, http.MethodGet, p.Admin.URL+"/admin/plugins/shop/logs?"+q, token, nil)
	var a rollout.LogsAnswer
	if r.status == http.StatusOK {
		if err := json.Unmarshal(r.body, &a); err != nil {
			t.Fatalf("logs answer: %v: %s", err, r.body)
		}
	}
	return r.status, a, r.errorText()
}

// pops lists the PoP of each line, in order.
func pops(a rollout.LogsAnswer) []string {
	out := make([]string, len(a.Lines))
	for i, l := range a.Lines {
		out[i] = l.PoP
	}
	return out
}

// TestLogsFromEveryPoP: a site's plugin log lines are gathered from every
// PoP whichever PoP is asked, labelled with their PoP, newest first and
// cut to the limit; a PoP that is gone is named as not answering while the
// others still answer; the token rules are those of every admin request.
func TestLogsFromEveryPoP(t *testing.T) {
	srv := ntestutil.StartNATS(t)
	wait := func(o *rollout.Options) { o.LogsWait = 2 * time.Second }
	ams := rollouttest.StartPoP(t, srv, engine, "ams", wait)
	lon := rollouttest.StartPoP(t, srv, engine, "lon", wait)
	tyo := rollouttest.StartPoP(t, srv, engine, "tyo", wait)

	// A failure at tyo is seen when asking lon.
	mustPush(t, ams.Admin.URL, shop, site, "tag", wasm["trap"], nil)
	eventually(t, 60*time.Second, "a trap line of tyo in the logs asked of lon", func() bool {
		tyo.Get(t)
		code, a, _ := getLogs(t, lon, shop, "plugin=tag")
		if code != http.StatusOK {
			t.Fatalf("logs from lon: %d", code)
		}
		for _, l := range a.Lines {
			if l.PoP == "tyo" && l.Version == 1 && strings.Contains(l.Msg, "trap") {
				return true
			}
		}
		return false
	})
	if _, a, _ := getLogs(t, lon, shop, ""); !slices.Equal(a.Answered, []string{"ams", "lon", "tyo"}) || len(a.NotAnswered) != 0 || slices.Contains(pops(a), "lon") {
		t.Fatalf("logs from lon: answered %v, not answered %v, lines of %v", a.Answered, a.NotAnswered, pops(a))
	}

	// Merge order and limit: requests at tyo, then ams, then lon.
	mustPush(t, ams.Admin.URL, shop, site, "logger", loggerWAT(t, 40), nil)
	for _, p := range []*rollouttest.PoP{ams, lon, tyo} {
		eventually(t, 60*time.Second, "the logger plugin on "+p.ID, func() bool { return answersWith(t, p, "L") })
	}
	for _, p := range []*rollouttest.PoP{tyo, tyo, ams, ams, lon, lon} {
		if !answersWith(t, p, "L") {
			t.Fatalf("%s did not run the logger", p.ID)
		}
	}
	code, a, _ := getLogs(t, ams, shop, "plugin=logger&limit=3")
	if code != http.StatusOK || !slices.Equal(pops(a), []string{"lon", "lon", "ams"}) {
		t.Fatalf("limit=3 from ams: %d, lines of %v, want lon, lon, ams", code, pops(a))
	}
	_, a, _ = getLogs(t, tyo, ops, "plugin=logger&limit=1000")
	for i := 1; i < len(a.Lines); i++ {
		if a.Lines[i].Time.After(a.Lines[i-1].Time) {
			t.Fatalf("line %d (%s at %v) is newer than line %d (%s at %v)", i, a.Lines[i].PoP, a.Lines[i].Time, i-1, a.Lines[i-1].PoP, a.Lines[i-1].Time)
		}
	}
	for _, p := range []string{"ams", "lon", "tyo"} {
		if !slices.Contains(pops(a), p) {
			t.Fatalf("no line of %s in %v", p, pops(a))
		}
	}

	// One PoP only: pop=local, and pop=ID asked of another PoP.
	if _, a, _ := getLogs(t, lon, shop, "plugin=logger&pop=local"); len(a.Lines) == 0 || slices.ContainsFunc(pops(a), func(p string) bool { return p != "lon" }) || !slices.Equal(a.Answered, []string{"lon"}) {
		t.Fatalf("pop=local at lon: lines of %v, answered %v", pops(a), a.Answered)
	}
	if _, a, _ := getLogs(t, lon, shop, "plugin=logger&pop=tyo"); len(a.Lines) == 0 || slices.ContainsFunc(pops(a), func(p string) bool { return p != "tyo" }) || !slices.Equal(a.Answered, []string{"tyo"}) {
		t.Fatalf("pop=tyo at lon: lines of %v, answered %v", pops(a), a.Answered)
	}

	// Tokens and parameters: as for every admin request.
	for _, c := range []struct {
		token, q string
		status   int
		errText  string
	}{
		{other, "", http.StatusForbidden, `this token belongs to site "other"`},
		{"", "", http.StatusUnauthorized, "Authorization: Bearer"},
		{shop, "pop=a.b", http.StatusBadRequest, `pop="a.b": want a PoP id`},
		{shop, "limit=0", http.StatusBadRequest, "limit"},
		{shop, "plugin=a*", http.StatusBadRequest, "plugin name"},
	} {
		if code, _, msg := getLogs(t, lon, c.token, c.q); code != c.status || !strings.Contains(msg, c.errText) {
			t.Errorf("logs with token %q, %q: %d %q, want %d %q", c.token, c.q, code, msg, c.status, c.errText)
		}
	}

	// A PoP that is gone: named as not answering, the others still answer.
	tyo.Stop()
	code, a, _ = getLogs(t, lon, shop, "plugin=logger")
	if code != http.StatusOK || !slices.Equal(a.Answered, []string{"ams", "lon"}) || !slices.Equal(a.NotAnswered, []string{"tyo"}) ||
		!slices.Contains(a.Notes, "PoPs that did not answer within 2s (down, or cut off from NATS; their lines are missing): tyo") || slices.Contains(pops(a), "tyo") || !slices.Contains(pops(a), "ams") {
		t.Fatalf("logs with tyo gone: %d, answered %v, not answered %v, notes %q, lines of %v", code, a.Answered, a.NotAnswered, a.Notes, pops(a))
	}
	if code, a, _ := getLogs(t, lon, shop, "pop=tyo"); code != http.StatusOK || !slices.Equal(a.NotAnswered, []string{"tyo"}) || len(a.Lines) != 0 {
		t.Fatalf("pop=tyo with tyo gone: %d, not answered %v, %d lines", code, a.NotAnswered, len(a.Lines))
	}
}

// TestLogsOverMaxPayload: a PoP whose lines do not fit in one NATS message
// (a server with a small max_payload) sends its newest lines that fit and
// counts the ones left out; the answer is not an error.
func TestLogsOverMaxPayload(t *testing.T) {
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(),
		MaxPayload: 32 << 10, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	t.Cleanup(srv.Shutdown)
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS server did not start")
	}
	a := rollouttest.Start(t, engine, rollouttest.Config{ID: "ams", NATSURL: srv.ClientURL()})
	b := rollouttest.Start(t, engine, rollouttest.Config{ID: "lon", NATSURL: srv.ClientURL()})
	mustPush(t, a.Admin.URL, shop, site, "logger", loggerWAT(t, 1000), nil)
	eventually(t, 60*time.Second, "the logger plugin on lon", func() bool { return answersWith(t, b, "L") })
	var local rollout.LogsAnswer
	eventually(t, 60*time.Second, "60 lines of 1000 bytes at lon (over 32 KiB)", func() bool {
		b.Get(t)
		_, local, _ = getLogs(t, b, shop, "pop=local&limit=1000")
		return len(local.Lines) >= 60
	})
	code, ans, msg := getLogs(t, a, shop, "limit=1000")
	if code != http.StatusOK {
		t.Fatalf("logs from ams: %d %s", code, msg)
	}
	var fromLon []rollout.LogLine
	for _, l := range ans.Lines {
		if l.PoP == "lon" {
			fromLon = append(fromLon, l)
		}
	}
	cut := ans.Truncated["lon"]
	if cut == 0 || len(fromLon) == 0 || len(fromLon)+cut != len(local.Lines) || !slices.Contains(ans.Answered, "lon") || !slices.Contains(ans.Notes, fmt.Sprintf("PoP lon left out its %d oldest lines to fit one NATS message: lower the limit, or ask that PoP alone (pop=local on its admin API, --pop local in the CLI)", cut)) {
		t.Fatalf("lon has %d lines; ams got %d of them, %d counted as left out; answered %v; notes %q", len(local.Lines), len(fromLon), cut, ans.Answered, ans.Notes)
	}
	// The lines kept are lon's newest.
	for i, l := range fromLon {
		if !l.Time.Equal(local.Lines[i].Time) {
			t.Fatalf("line %d from lon is of %v, lon's own line %d of %v", i, l.Time, i, local.Lines[i].Time)
		}
	}
}

// TestLogQueryBadInput: a malformed log query on NATS gets an error answer
// naming what is wrong, and a malformed answer to a logs request is left
// out rather than failing it.
func TestLogQueryBadInput(t *testing.T) {
	srv := ntestutil.StartNATS(t)
	p := rollouttest.StartPoP(t, srv, engine, "ams", func(o *rollout.Options) { o.LogsWait = 500 * time.Millisecond })
	nc := ntestutil.Connect(t, srv)
	for _, c := range []struct {
		name, subject, query, errText string
	}{
		{"not JSON", rollout.LogsSubject("shop"), "{", "malformed query"},
		{"newer version", rollout.LogsSubject("shop"), `{"v":2,"site":"shop","limit":1,"from":"lon"}`, "query version 2, this PoP speaks 1"},
		{"site not the subject's", rollout.LogsSubject("shop"), `{"v":1,"site":"other","limit":1,"from":"lon"}`, `query for site "other" on subject "meridian.plugins.logs.shop" is not valid`},
		{"no limit", rollout.LogsSubject("shop"), `{"v":1,"site":"shop","from":"lon"}`, "is not valid"},
		{"health of another site", rollout.LogsSubject("shop"), `{"v":1,"site":"other","from":"lon","health":true}`, `query for site "other" on subject "meridian.plugins.logs.shop" is not valid`},
		{"too large", rollout.LogsSubject("shop"), `{"v":1,"site":"shop","limit":1,"from":"lon","plugin":"` + strings.Repeat("a", 5000) + `"}`, "query too large"},
	} {
		m, err := nc.Request(c.subject, []byte(c.query), 10*time.Second)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		var rep struct {
			PoP   string `json:"pop"`
			Error string `json:"error"`
		}
		if err := json.Unmarshal(m.Data, &rep); err != nil || rep.PoP != "ams" || !strings.Contains(rep.Error, c.errText) {
			t.Errorf("%s: answer %s (%v), want an error from ams with %q", c.name, m.Data, err, c.errText)
		}
	}
	// A responder that answers garbage is ignored: the request still answers.
	sub, err := nc.Subscribe(rollout.LogsSubjectPrefix+"*", func(m *nats.Msg) { _ = m.Respond([]byte("not json")) })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	code, a, msg := getLogs(t, p, shop, "")
	if code != http.StatusOK || !slices.Equal(a.Answered, []string{"ams"}) || len(a.NotAnswered) != 0 {
		t.Fatalf("logs with a garbage answer on NATS: %d %q, answered %v, not answered %v", code, msg, a.Answered, a.NotAnswered)
	}
	// The same for a list of every PoP's health, and a bad pops= is refused.
	if st := status(t, p.Admin.URL, shop, site+"?pops=all"); !slices.Equal(st.Answered, []string{"ams"}) || len(st.NotAnswered) != 0 {
		t.Fatalf("list of every PoP with a garbage answer on NATS: answered %v, not answered %v", st.Answered, st.NotAnswered)
	}
	if r := call(t, http.MethodGet, p.Admin.URL+"/admin/plugins/"+site+"?pops=some", shop, nil); r.status != http.StatusBadRequest || !strings.Contains(r.errorText(), `pops="some": want "all"`) {
		t.Fatalf("pops=some: %d %q", r.status, r.errorText())
	}
}

// TestLogsOfAnUnknownPoP: asking for the logs of a PoP that neither the
// configuration nor the log subjects know answers at once with the PoPs
// there are, rather than waiting and calling it silent.
func TestLogsOfAnUnknownPoP(t *testing.T) {
	srv := ntestutil.StartNATS(t)
	ams := rollouttest.StartPoP(t, srv, engine, "ams", func(o *rollout.Options) {
		o.PoPs = func() []string { return []string{"ams", "lon"} }
		o.LogsWait = time.Minute // a wait would show as the test's time, not its result
	})
	code, _, msg := getLogs(t, ams, shop, "pop=nosuch")
	if code != http.StatusNotFound || !strings.Contains(msg, `pop="nosuch": no such PoP; the PoPs are ams, lon`) {
		t.Fatalf("pop=nosuch: %d %q", code, msg)
	}
}
