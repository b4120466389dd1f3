package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/internal/testutil"
	"github.com/meridian-edge/meridian/plugins"
	"github.com/meridian-edge/meridian/plugins/plugintest"
	"github.com/meridian-edge/meridian/plugins/rollout/rollouttest"
)

// TestPluginCommand drives 'meridian plugin push|list|promote|rollback|logs|chain|remove'
// against a real PoP admin API (statesync on embedded NATS, JetStream object
// store, a plugin host) and checks what the PoP then runs.
func TestPluginCommand(t *testing.T) {
	engine, err := plugins.NewSDKEngine(plugins.SDKOptions{CacheDir: plugintest.CacheDir()})
	if err != nil {
		t.Fatal(err)
	}
	// A cleanup, not a defer: cleanups run after the test returns, last
	// registered first, so the PoP (whose worker may be compiling) stops
	// before its engine closes, also when the test fails early.
	t.Cleanup(func() { engine.Close(context.Background()) })
	srv := testutil.StartNATS(t)
	pop := rollouttest.StartPoP(t, srv, engine, "ams", nil)
	dir := t.TempDir()
	file := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	v1 := file("v1.wasm", rollouttest.VersionWAT(t, "1"))
	v2 := file("v2.wasm", rollouttest.VersionWAT(t, "2"))
	bad := file("bad.wasm", []byte("\x00asm\x01\x00\x00\x00\x01"))

	t.Setenv("MERIDIAN_TOKEN", rollouttest.ShopToken)
	run := func(args ...string) (string, string, int) {
		var out, errb bytes.Buffer
		code := runPlugin(t, append([]string{"plugin"}, args...), &out, &errb)
		return out.String(), errb.String(), code
	}
	admin := "--admin=" + pop.Admin.URL
	waitFor := func(want string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			if _, h := pop.Get(t); h.Get("x-v") == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("PoP never answered with x-v %q", want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	cases := []struct {
		args      []string
		code      int
		out, err  string
		answering string // x-v the PoP answers with afterwards ("" = not checked)
	}{
		{[]string{"push", admin, "--site=shop", "--name=tag", v1}, 0, "pushed shop/tag version 1", "", "1"},
		// A canary of the bytes that already run is refused, not dropped.
		{[]string{"push", admin, "--site=shop", "--name=tag", "--canary=10", v1}, 1, "",
			"these bytes are already version 1 of shop/tag, which takes all requests: a canary needs a different build", "1"},
		{[]string{"list", admin, "--site=nosuch", "--token=" + rollouttest.OpsToken}, 1, "", `unknown site "nosuch": the sites of this PoP are other, shop (HTTP 404)`, ""},
		{[]string{"push", admin, "--site=shop", "--name=tag", "--canary=0", v2}, 0, "version 2 takes 0% of requests (canary), version 1 the rest", "", "1"},
		{[]string{"list", admin, "--site=shop"}, 0, "canary 0%", "", ""},
		{[]string{"promote", admin, "--site=shop", "--name=tag"}, 0, "version 2 takes all requests", "", "2"},
		{[]string{"rollback", admin, "--site=shop", "--name=tag"}, 0, "version 1 takes all requests", "", "1"},
		{[]string{"rollback", admin, "--site=shop", "--name=tag", "--version=2"}, 0, "version 2 takes all requests", "", "2"},
		{[]string{"list", admin, "--site=shop"}, 0, "deployment: version 2 takes all requests (rolled back)", "", ""},
		{[]string{"push", admin, "--site=shop", "--name=tag", v2}, 0, "pushed shop/tag version 2 (these bytes were stored before: no new version)", "", "2"},
		// Flags after the file, "--", and an admin address without a scheme.
		{[]string{"push", "--site=shop", v2, "--name=tag", admin}, 0, "pushed shop/tag version 2 (these bytes were stored before: no new version)", "", "2"},
		{[]string{"push", admin, "--site=shop", "--name=tag", "--", v2}, 0, "pushed shop/tag version 2", "", "2"},
		{[]string{"list", "--admin=" + strings.TrimPrefix(pop.Admin.URL, "http://"), "--site=shop"}, 0, "deployment: version 2 takes all requests", "", ""},
		{[]string{"list", "--admin=ftp://x", "--site=shop"}, 2, "", `"ftp://x" is not an admin API address`, ""},
		// Checked before anything is uploaded.
		{[]string{"push", admin, "--site=shop", "--name=bad name", v1}, 2, "", `plugin name "bad name" is not allowed`, ""},
		{[]string{"push", admin, "--site=Shop", "--name=tag", v1}, 2, "", `site "Shop" is not a site name`, ""},
		{[]string{"promote", admin, "--site=shop", "--name=nosuch"}, 1, "", `site shop has no plugin "nosuch" (it has: tag)`, ""},
		{[]string{"chain", admin, "--site=shop"}, 0, `"plugin": "tag"`, "", ""},
		{[]string{"push", admin, "--site=shop", "--name=tag", bad}, 1, "", "plugin refused", "2"},
		{[]string{"push", admin, "--site=other", "--name=tag", v1}, 1, "", `this token belongs to site "shop"`, ""},
		{[]string{"push", admin, "--site=shop", "--name=tag", "--token=nope", v1}, 1, "", "Authorization: Bearer", ""},
		{[]string{"push", admin, "--site=shop", "--name=tag", filepath.Join(dir, "missing.wasm")}, 1, "", "no such file", ""},
		{[]string{"push", admin, "--site=shop", v1}, 2, "", "--name is required", ""},
		{[]string{"list", admin}, 2, "", "--site is required", ""},
		{[]string{"rollback", admin, "--site=shop", "--name=tag", "--version=7"}, 1, "", "no version 7", ""},
		{[]string{"frobnicate", admin, "--site=shop"}, 2, "", "unknown verb", ""},
		{[]string{"list", "--admin=http://127.0.0.1:1", "--site=shop"}, 1, "", "is the PoP running?", ""},
	}
	for _, c := range cases {
		out, errText, code := run(c.args...)
		if code != c.code || !strings.Contains(out, c.out) || !strings.Contains(errText, c.err) {
			t.Fatalf("meridian plugin %v: code %d, stdout %q, stderr %q; want %d, %q, %q", c.args, code, out, errText, c.code, c.out, c.err)
		}
		if c.answering != "" {
			waitFor(c.answering)
		}
	}

	// list: the running version works, and its HEALTH says so.
	if out, _, _ := run("list", admin, "--site=shop"); !strings.HasSuffix(strings.Join(strings.Fields(listRow(out, "tag", "2")), " "), "site:shop live ok") {
		t.Fatalf("list: version 2 is not shown live and ok:\n%s", out)
	}

	// Logs: a trapping version fails on requests; its lines come back tagged.
	trap, err := plugintest.WAT(context.Background(), dir, "trap")
	if err != nil {
		t.Fatal(err)
	}
	if _, e, code := run("push", admin, "--site=shop", "--name=tag", file("trap.wasm", trap)); code != 0 {
		t.Fatal(e)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		pop.Get(t)
		out, _, _ := run("logs", admin, "--site=shop", "--name=tag")
		if strings.Contains(out, "tag@3") && strings.Contains(out, "trap") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no trap log line for tag@3: %q", out)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// list tells the trapping version from a working one: its breaker
	// opens and the HEALTH column says so, while its STATE is still live.
	deadline = time.Now().Add(30 * time.Second)
	for {
		pop.Get(t)
		out, _, _ := run("list", admin, "--site=shop")
		row := listRow(out, "tag", "3")
		if strings.Contains(row, "live") && strings.Contains(row, "failing (breaker open, 100% of last ") {
			t.Logf("meridian plugin list:\n%s", out)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("list never showed version 3 failing with its breaker open:\n%s", out)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// A canary's config goes with the canary: the chain entry keeps the
	// stable version's, and rollback drops the canary's.
	for _, c := range []struct {
		args     []string
		code     int
		out, err string
	}{
		{[]string{"push", admin, "--site=shop", "--name=tag", "--canary=20", "--config=prefix=/secret", "--request-header=authorization", v2}, 0,
			"version 2 takes 20% of requests (canary, with config prefix=/secret; request headers authorization), version 3 the rest", ""},
		{[]string{"list", admin, "--site=shop"}, 0, "(canary, with config prefix=/secret", ""},
		{[]string{"chain", admin, "--site=shop"}, 0, `"plugin": "tag"`, ""},
		{[]string{"rollback", admin, "--site=shop", "--name=tag"}, 0, "version 3 takes all requests", ""},
		// The running bytes with a new config as a canary: refused, with the way to do it.
		{[]string{"push", admin, "--site=shop", "--name=tag", "--canary=20", "--config=prefix=/secret", file("trap3.wasm", trap)}, 1, "",
			"To change only the config or headers, push without a canary (--canary in the CLI"},
		// Refused before the upload, as a usage error.
		{[]string{"push", admin, "--site=shop", "--name=tag", "--config=nokey", v2}, 2, "", `config "nokey": want KEY=VALUE (--config KEY=VALUE in the CLI`},
		// A plugin with one version has nothing to roll back to: the message names the flag.
		{[]string{"push", admin, "--site=shop", "--name=solo", v1}, 0, "pushed shop/solo version 1", ""},
		{[]string{"rollback", admin, "--site=shop", "--name=solo"}, 1, "",
			`runs version 1 and has no earlier version; name the version to go back to (--version N in the CLI, {"version":N} in the API)`},
	} {
		out, errText, code := run(c.args...)
		if code != c.code || !strings.Contains(out, c.out) || !strings.Contains(errText, c.err) {
			t.Fatalf("meridian plugin %v: code %d, stdout %q, stderr %q; want %d, %q, %q", c.args, code, out, errText, c.code, c.out, c.err)
		}
		if strings.Contains(out, `"config"`) && strings.Contains(out, "/secret") {
			t.Fatalf("meridian plugin %v: the canary's config reached the chain: %s", c.args, out)
		}
	}

	// remove: solo answers (tag's version 3 traps and is skipped), then
	// no plugin does; the versions stay, and a push puts one back.
	waitFor("1")
	for _, c := range []struct {
		args      []string
		code      int
		out, err  string
		answering string
	}{
		{[]string{"remove", admin, "--site=shop", "--name=solo"}, 0, "removed shop/solo: no request runs it now; chain: tag\nversions kept: 1 (push one again to put it back)", "", "-"},
		{[]string{"remove", admin, "--site=shop", "--name=tag"}, 0, "removed shop/tag: no request runs it now; chain: none\nversions kept: 1, 2, 3", "", "-"},
		{[]string{"list", admin, "--site=shop"}, 0, "chain (fail open): none", "", ""},
		{[]string{"list", admin, "--site=shop"}, 0, "deployment: runs nowhere", "", ""},
		{[]string{"remove", admin, "--site=shop", "--name=tag"}, 1, "", `site shop runs no plugin "tag" (its chain: none) (HTTP 404)`, ""},
		{[]string{"remove", admin, "--site=shop"}, 2, "", "--name is required", ""},
		{[]string{"remove", admin, "--site=shop", "--name=tag", v1}, 2, "", "unexpected argument", ""},
		{[]string{"push", admin, "--site=shop", "--name=solo", v1}, 0, "pushed shop/solo version 1 (these bytes were stored before: no new version)", "", "1"},
	} {
		out, errText, code := run(c.args...)
		if code != c.code || !strings.Contains(out, c.out) || !strings.Contains(errText, c.err) {
			t.Fatalf("meridian plugin %v: code %d, stdout %q, stderr %q; want %d, %q, %q", c.args, code, out, errText, c.code, c.out, c.err)
		}
		switch c.answering {
		case "-": // no plugin answers
			waitFor("")
		case "":
		default:
			waitFor(c.answering)
		}
	}
}

// TestPluginLogsEveryPoP: 'meridian plugin logs' asked of one PoP shows the
// failures of another, in a POP column, and 'plugin list' the version
// failing there; both name a PoP that is gone without failing.
func TestPluginLogsEveryPoP(t *testing.T) {
	engine, err := plugins.NewSDKEngine(plugins.SDKOptions{CacheDir: plugintest.CacheDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { engine.Close(context.Background()) })
	srv := testutil.StartNATS(t)
	ams := rollouttest.StartPoP(t, srv, engine, "ams", nil)
	tyo := rollouttest.StartPoP(t, srv, engine, "tokyo-1", nil)
	dir := t.TempDir()
	trap, err := plugintest.WAT(context.Background(), dir, "trap")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "trap.wasm")
	if err := os.WriteFile(p, trap, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("MERIDIAN_TOKEN", rollouttest.ShopToken)
	run := func(args ...string) (string, string, int) {
		var out, errb bytes.Buffer
		code := runPlugin(t, append([]string{"plugin"}, args...), &out, &errb)
		return out.String(), errb.String(), code
	}
	admin := "--admin=" + ams.Admin.URL
	if _, e, code := run("push", admin, "--site=shop", "--name=tag", p); code != 0 {
		t.Fatal(e)
	}
	// The failure happens at tokyo-1; ams is asked.
	var out string
	deadline := time.Now().Add(60 * time.Second)
	for {
		tyo.Get(t)
		var code int
		out, _, code = run("logs", admin, "--site=shop", "--name=tag")
		if row := logRow(out, "tokyo-1"); code == 0 && strings.Contains(row, "error") && strings.Contains(row, "tag@1") && strings.Contains(row, "trap") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no trap line of tokyo-1 in the logs asked of ams:\n%s", out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if f := strings.Fields(strings.SplitN(out, "\n", 2)[0]); !slices.Equal(f, []string{"TIME", "POP", "LEVEL", "PLUGIN@VERSION", "MESSAGE"}) {
		t.Fatalf("header line: %q", f)
	}
	t.Logf("meridian plugin logs:\n%s", out)
	// Only the PoP asked: it logged nothing.
	if out, e, code := run("logs", admin, "--site=shop", "--pop=local"); code != 0 || out != "" || !strings.Contains(e, "no plugin log lines for site shop on PoPs ams") {
		t.Fatalf("logs --pop local: %d %q %q", code, out, e)
	}
	// Another site's token is refused as for every command.
	if _, e, code := run("logs", admin, "--site=other"); code != 1 || !strings.Contains(e, `this token belongs to site "shop"`) {
		t.Fatalf("logs of another site: %d %q", code, e)
	}
	// list, asked of ams, shows the version failing where it fails.
	out, e, code := run("list", admin, "--site=shop")
	if row := strings.Join(strings.Fields(listRow(out, "tag", "1")), " "); code != 0 || e != "" ||
		!strings.Contains(out, "health from PoPs ams, tokyo-1") ||
		!strings.Contains(row, " live failing (") || !strings.HasSuffix(row, " calls) on tokyo-1; ok on ams") {
		t.Fatalf("list asked of ams does not show tag@1 failing on tokyo-1:\n%s\nstderr %q", out, e)
	}
	t.Logf("meridian plugin list:\n%s", out)
	if out, _, code := run("list", admin, "--site=shop", "--pop=local"); code != 0 || !strings.HasSuffix(strings.Join(strings.Fields(listRow(out, "tag", "1")), " "), " live ok") ||
		strings.Contains(out, "health from") {
		t.Fatalf("list --pop local: ams's own view is not ok:\n%s", out)
	}
	if _, e, code := run("list", admin, "--site=shop", "--pop=tokyo-1"); code != 2 || !strings.Contains(e, `only "local" is taken`) {
		t.Fatalf("list --pop tokyo-1: %d %q", code, e)
	}
	// tokyo-1 gone: the commands still work and name it.
	tyo.Stop()
	out, e, code = run("logs", admin, "--site=shop")
	if code != 0 || !strings.Contains(e, "note: PoPs that did not answer within 1.5s (down, or cut off from NATS; their lines are missing): tokyo-1\n") || logRow(out, "tokyo-1") != "" {
		t.Fatalf("logs with tokyo-1 gone: %d\nstdout %q\nstderr %q", code, out, e)
	}
	out, e, code = run("list", admin, "--site=shop")
	if code != 0 || !strings.Contains(e, "note: PoPs that did not answer within 1.5s (down, or cut off from NATS; their health is unknown): tokyo-1\n") ||
		!strings.HasSuffix(strings.Join(strings.Fields(listRow(out, "tag", "1")), " "), " live ok") {
		t.Fatalf("list with tokyo-1 gone: %d\nstdout %q\nstderr %q", code, out, e)
	}
}

// logRow returns the first line of 'meridian plugin logs' output logged by
// pop (its second column); "" when there is none.
func logRow(out, pop string) string {
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[1] == pop {
			return l
		}
	}
	return ""
}

// TestPluginHelp: each plugin verb's -h shows its own usage line and only
// the flags it reads.
func TestPluginHelp(t *testing.T) {
	cases := []struct {
		verb      string
		want, not []string
	}{
		{"push", []string{"usage: meridian plugin push --site SITE --name NAME", "-canary", "-config", "-request-header", "-admin", "-token",
			"--config KEY=VALUE\n(repeat; the plugin reads it with config_get)", "--response-header NAME",
			"meridian plugin push --site www --name auth --canary 10 --config realm=shop --config prefix=/secret --request-header authorization --response-header x-cache auth.wasm"},
			[]string{"-limit", "-set", "-version"}},
		{"list", []string{"usage: meridian plugin list --site SITE", "-site", "-admin", "-pop"}, []string{"-name", "-canary", "-limit", "-set", "-version", "-config"}},
		{"remove", []string{"usage: meridian plugin remove --site SITE --name NAME", "-name"}, []string{"-canary", "-limit", "-set", "-version", "-config", "-pop"}},
		{"rollback", []string{"usage: meridian plugin rollback", "-name", "-version"}, []string{"-canary", "-limit", "-set", "-config"}},
		{"promote", []string{"usage: meridian plugin promote", "-name", "-version", "-canary"}, []string{"-limit", "-set", "-config"}},
		{"logs", []string{"usage: meridian plugin logs", "-name", "-limit", "-pop"}, []string{"-canary", "-set", "-version", "-config"}},
		{"chain", []string{"usage: meridian plugin chain", "-set"}, []string{"-name", "-canary", "-limit", "-version", "-config"}},
	}
	for _, c := range cases {
		var out, errb bytes.Buffer
		code := runPlugin(t, []string{"plugin", c.verb, "--help"}, &out, &errb)
		text := out.String() + errb.String()
		if code != 0 {
			t.Errorf("plugin %s --help: exit %d: %s", c.verb, code, text)
		}
		for _, w := range c.want {
			if !strings.Contains(text, w) {
				t.Errorf("plugin %s --help lacks %q:\n%s", c.verb, w, text)
			}
		}
		for _, n := range c.not {
			if strings.Contains(text, n+" ") {
				t.Errorf("plugin %s --help lists %s, a flag of another verb:\n%s", c.verb, n, text)
			}
		}
	}
	// A flag of another verb is refused, not silently ignored.
	var out, errb bytes.Buffer
	// A flag the verb does not take: a usage error (exit 2), said once.
	if code := runPlugin(t, []string{"plugin", "list", "--site=shop", "--limit=5"}, &out, &errb); code != 2 ||
		strings.Count(errb.String(), "flag provided but not defined: -limit") != 1 || !strings.Contains(errb.String(), "usage: meridian plugin list") {
		t.Errorf("plugin list --limit: exit %d, stderr %q; want 2 and the error once, with the usage", code, errb.String())
	}
}

// runPlugin runs the meridian command line with args (starting with
// "plugin") and returns its exit code.
func runPlugin(t *testing.T, args []string, stdout, stderr *bytes.Buffer) int {
	t.Helper()
	return run(context.Background(), args, stdout, stderr)
}

// listRow returns the row of 'meridian plugin list' output for one plugin
// version, trailing spaces trimmed; "" when there is none.
func listRow(out, plugin, version string) string {
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == plugin && f[1] == version {
			return strings.TrimRight(l, " ")
		}
	}
	return ""
}
