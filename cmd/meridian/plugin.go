package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/meridian-edge/meridian/plugins/rollout"
)

// The usage line of each plugin verb: its -h, and the list in pluginUsage.
const (
	pushSynopsis     = "plugin push --site SITE --name NAME [--canary PCT] [--config KEY=VALUE]... [--request-header H]... [--response-header H]... FILE.wasm"
	listSynopsis     = "plugin list --site SITE [--pop local]"
	rollbackSynopsis = "plugin rollback --site SITE --name NAME [--version N]"
	promoteSynopsis  = "plugin promote --site SITE --name NAME [--version N] [--canary PCT]"
	logsSynopsis     = "plugin logs --site SITE [--name NAME] [--limit N] [--pop ID|local]"
	chainSynopsis    = "plugin chain --site SITE [--set FILE.json]"
	removeSynopsis   = "plugin remove --site SITE --name NAME"
)

// entryHelp says how a pushed plugin gets its config and sees headers: in
// 'meridian plugin -h' and at the end of 'meridian plugin push -h', which a
// plugin author reads on the first push.
const entryHelp = `The plugin's entry in the site's chain says what it reads: --config KEY=VALUE
(repeat; the plugin reads it with config_get), --request-header NAME and
--response-header NAME (repeat; the headers it sees, * for all). Without
them the entry is kept. Without --canary the entry applies to all requests
at once; with --canary only the canary's requests run it (promote makes it
the chain's, rollback drops it).`

const pluginUsage = `usage:
  meridian ` + pushSynopsis + `
  meridian ` + listSynopsis + `
  meridian ` + rollbackSynopsis + `
  meridian ` + promoteSynopsis + `
  meridian ` + logsSynopsis + `
  meridian ` + chainSynopsis + `
  meridian ` + removeSynopsis + `

Every command talks to a PoP's admin API (--admin, default the dev stack's
first PoP) with a site owner's or the ops token (--token or MERIDIAN_TOKEN).
push uploads a plugin; with --canary it takes that share of requests next to
the version running now and is rolled back automatically if it fails (the
bytes of the running version are refused as a canary: it would try nothing).
A pushed plugin joins the end of the site's chain.
` + entryHelp + `
To change only the config, push the running bytes again without --canary.
'meridian plugin push -h' shows an example.
logs shows the plugin log lines of every PoP, newest first, each with the
PoP that logged it, whichever PoP --admin names; PoPs that did not answer
within a second or two are named on stderr (--pop local: only that PoP's).
list shows the chain and each version's state, and its health on every PoP
that answered (ok, degraded or failing, with the PoPs where they differ;
--pop local: on the PoP --admin names only).
rollback without --version ends a canary, or goes back to the version
before the running one. promote sends all traffic (or --canary PCT) to a
version, by default the running canary. remove takes a plugin out of the
site's chain and ends its deployment on every PoP; its versions and KV data
are kept, and pushing a version again puts it back at the chain's end.`

// pushHelp ends 'meridian plugin push -h'.
const pushHelp = "\n" + entryHelp + ` For example:

  meridian plugin push --site www --name auth --canary 10 --config realm=shop --config prefix=/secret --request-header authorization --response-header x-cache auth.wasm
`

// multiFlag collects a repeated flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// adminClient calls one PoP's admin API (plugins, purges).
type adminClient struct {
	admin, token string
	http         *http.Client
}

// pluginSynopsis is the usage line of a plugin verb; "" for an unknown verb.
func pluginSynopsis(verb string) string {
	switch verb {
	case "push":
		return pushSynopsis
	case "list":
		return listSynopsis
	case "rollback":
		return rollbackSynopsis
	case "promote":
		return promoteSynopsis
	case "logs":
		return logsSynopsis
	case "chain":
		return chainSynopsis
	case "remove":
		return removeSynopsis
	}
	return ""
}

// cmdPlugin runs 'meridian plugin VERB'.
func cmdPlugin(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		if len(args) == 0 {
			return fmt.Errorf("plugin: %s: %w", pluginUsage, errUsage)
		}
		fmt.Fprintln(stdout, pluginUsage)
		return nil
	}
	verb := args[0]
	synopsis := pluginSynopsis(verb)
	if synopsis == "" {
		return fmt.Errorf("plugin: unknown verb %q\n%s: %w", verb, pluginUsage, errUsage)
	}
	// Each verb registers only the flags it reads, so its -h lists only those.
	fs := newFlags("plugin "+verb, synopsis, stderr)
	if verb == "push" {
		flagsHelp := fs.Usage
		fs.Usage = func() {
			flagsHelp()
			fmt.Fprint(fs.Output(), pushHelp)
		}
	}
	admin := fs.String("admin", "http://127.0.0.11:9090", "admin API of a PoP (any PoP: changes reach all)")
	token := fs.String("token", "", "site owner's or ops token (default $MERIDIAN_TOKEN)")
	site := fs.String("site", "", "site name, as in the config (required)")
	var (
		name, set, pop                  string
		canary                          = 100
		version, limit                  int
		config, reqHeaders, respHeaders multiFlag
	)
	switch verb {
	case "push", "rollback", "promote", "remove":
		fs.StringVar(&name, "name", "", "plugin name: 1-64 letters, digits, '_' or '-' (required)")
	case "logs":
		fs.StringVar(&name, "name", "", "only this plugin's lines")
	}
	switch verb {
	case "push":
		fs.IntVar(&canary, "canary", 100, "percentage of requests the new version takes; the rest keep the running version")
		fs.Var(&config, "config", "KEY=VALUE the plugin reads with config_get (repeat for more keys)")
		fs.Var(&reqHeaders, "request-header", "request header the plugin sees (repeat; * for all)")
		fs.Var(&respHeaders, "response-header", "response header the plugin sees (repeat)")
	case "promote":
		fs.IntVar(&canary, "canary", 100, "percentage of requests the version takes")
		fs.IntVar(&version, "version", 0, "version to promote (default: the running canary)")
	case "rollback":
		fs.IntVar(&version, "version", 0, "version to go back to (default: end the canary, or the version before the running one)")
	case "logs":
		fs.IntVar(&limit, "limit", 100, "how many log lines, newest first, over all PoPs")
		fs.StringVar(&pop, "pop", "", "only this PoP's lines (its id; \"local\": the PoP --admin names, without asking the others)")
	case "list":
		fs.StringVar(&pop, "pop", "", "\"local\": health as the PoP --admin names sees it, without asking the others")
	case "chain":
		fs.StringVar(&set, "set", "", "JSON file with the site's chain to set")
	}
	pos, err := parseInterspersed(fs, args[1:])
	if err != nil {
		return err
	}
	if *token == "" {
		*token = os.Getenv("MERIDIAN_TOKEN")
	}
	if *site == "" {
		return fmt.Errorf("plugin %s: --site is required\nusage: meridian %s: %w", verb, synopsis, errUsage)
	}
	if err := rollout.CheckSiteName(*site); err != nil {
		return fmt.Errorf("plugin %s: --site: %w: %w", verb, err, errUsage)
	}
	needName := func() error {
		if name == "" {
			return fmt.Errorf("plugin %s: --name is required: %w", verb, errUsage)
		}
		if err := rollout.CheckPluginName(name); err != nil {
			return fmt.Errorf("plugin %s: --name: %w: %w", verb, err, errUsage)
		}
		return nil
	}
	for _, kv := range config {
		if err := rollout.CheckConfigPair(kv); err != nil {
			return fmt.Errorf("plugin %s: %w: %w", verb, err, errUsage)
		}
	}
	adminURL, err := adminBase(*admin)
	if err != nil {
		return fmt.Errorf("plugin %s: --admin: %w: %w", verb, err, errUsage)
	}
	if canary < 0 || canary > 100 {
		return fmt.Errorf("plugin %s: --canary %d: want a percentage 0..100: %w", verb, canary, errUsage)
	}
	if verb != "push" && len(pos) > 0 { // push checks its FILE below
		return fmt.Errorf("plugin %s: unexpected argument %q\nusage: meridian %s: %w", verb, pos[0], synopsis, errUsage)
	}
	c := &adminClient{admin: adminURL, token: *token, http: &http.Client{Timeout: 2 * time.Minute}}
	base := "/admin/plugins/" + url.PathEscape(*site)
	switch verb {
	case "push":
		if err := needName(); err != nil {
			return err
		}
		if len(pos) != 1 {
			return fmt.Errorf("plugin push: give one FILE.wasm: %w", errUsage)
		}
		wasm, err := os.ReadFile(pos[0])
		if err != nil {
			return fmt.Errorf("plugin push: %w", err)
		}
		q := url.Values{}
		if canary != 100 {
			q.Set("canary", strconv.Itoa(canary))
		}
		q["config"], q["request_header"], q["response_header"] = config, reqHeaders, respHeaders
		var pr rollout.PushResult
		if err := c.do(ctx, http.MethodPost, base+"/"+url.PathEscape(name)+"?"+q.Encode(), wasm, &pr); err != nil {
			return fmt.Errorf("plugin push: %w", err)
		}
		same := ""
		if !pr.New {
			same = " (these bytes were stored before: no new version)"
		}
		fmt.Fprintf(stdout, "pushed %s/%s version %d%s: sha256 %s, %d bytes\n", pr.Site, pr.Plugin, pr.Version.Version, same, pr.SHA256, pr.Size)
		fmt.Fprintf(stdout, "deployment: %s\n", describe(pr.Deployment))
		return nil
	case "list":
		path := base + "?pops=all"
		switch pop {
		case "local":
			path = base
		case "":
		default:
			return fmt.Errorf("plugin list: --pop %q: only \"local\" is taken (the PoP --admin names): %w", pop, errUsage)
		}
		var st rollout.SiteStatus
		if err := c.do(ctx, http.MethodGet, path, nil, &st); err != nil {
			return fmt.Errorf("plugin list: %w", err)
		}
		printStatus(stdout, stderr, st)
		return nil
	case "rollback", "promote":
		if err := needName(); err != nil {
			return err
		}
		var body any = rollout.RollbackRequest{Version: version}
		path := base + "/" + url.PathEscape(name) + "/rollback"
		if verb == "promote" {
			v := version
			if v == 0 {
				var st rollout.SiteStatus
				if err := c.do(ctx, http.MethodGet, base, nil, &st); err != nil {
					return fmt.Errorf("plugin promote: %w", err)
				}
				known := false
				var names []string
				for _, p := range st.Plugins {
					names = append(names, p.Plugin)
					if p.Plugin == name {
						known = true
						if p.Deployment != nil {
							v = p.Deployment.Canary
						}
					}
				}
				if !known {
					return fmt.Errorf("plugin promote: site %s has no plugin %q (it has: %s)", *site, name, strings.Join(names, ", "))
				}
				if v == 0 {
					return fmt.Errorf("plugin promote: %s/%s runs no canary; name a version with --version", *site, name)
				}
			}
			pct := canary
			body, path = rollout.DeployRequest{Version: v, CanaryPercent: &pct}, base+"/"+url.PathEscape(name)+"/deploy"
		}
		b, _ := json.Marshal(body)
		var t rollout.Target
		if err := c.do(ctx, http.MethodPost, path, b, &t); err != nil {
			return fmt.Errorf("plugin %s: %w", verb, err)
		}
		fmt.Fprintf(stdout, "%s/%s: %s\n", *site, name, describe(t))
		return nil
	case "logs":
		q := url.Values{"limit": {strconv.Itoa(limit)}}
		if name != "" {
			q.Set("plugin", name)
		}
		if pop != "" {
			q.Set("pop", pop)
		}
		var out rollout.LogsAnswer
		if err := c.do(ctx, http.MethodGet, base+"/logs?"+q.Encode(), nil, &out); err != nil {
			return fmt.Errorf("plugin logs: %w", err)
		}
		printLogs(stdout, stderr, *site, out)
		return nil
	case "remove":
		if err := needName(); err != nil {
			return err
		}
		var rr rollout.RemoveResult
		if err := c.do(ctx, http.MethodDelete, base+"/"+url.PathEscape(name), nil, &rr); err != nil {
			return fmt.Errorf("plugin remove: %w", err)
		}
		fmt.Fprintf(stdout, "removed %s/%s: no request runs it now; chain: %s\n", rr.Site, rr.Plugin, chainNames(rr.Chain))
		if len(rr.Versions) > 0 {
			vs := make([]string, len(rr.Versions))
			for i, v := range rr.Versions {
				vs[i] = strconv.Itoa(v)
			}
			fmt.Fprintf(stdout, "versions kept: %s (push one again to put it back)\n", strings.Join(vs, ", "))
		}
		return nil
	case "chain":
		var doc rollout.ChainDoc
		if set != "" {
			b, err := os.ReadFile(set)
			if err != nil {
				return fmt.Errorf("plugin chain: %w", err)
			}
			if err := c.do(ctx, http.MethodPut, base+"/chain", b, &doc); err != nil {
				return fmt.Errorf("plugin chain: %w", err)
			}
		} else if err := c.do(ctx, http.MethodGet, base+"/chain", nil, &doc); err != nil {
			return fmt.Errorf("plugin chain: %w", err)
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(doc)
	}
	return fmt.Errorf("plugin: unknown verb %q\n%s: %w", verb, pluginUsage, errUsage) // not reached: checked above
}

// parseInterspersed parses args with fs, allowing flags after positional
// arguments (push --site www app.wasm --name x), as users of most CLIs
// expect; everything after "--" is positional. It returns the positional
// arguments in order.
func parseInterspersed(fs flagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos, args = append(pos, rest[0]), rest[1:]
	}
}

// adminBase normalises --admin: an address without a scheme (as the dev
// banner prints them) means http.
func adminBase(admin string) (string, error) {
	if !strings.Contains(admin, "://") {
		admin = "http://" + admin
	}
	u, err := url.Parse(admin)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("%q is not an admin API address; want e.g. http://127.0.0.11:9090 or 127.0.0.11:9090", admin)
	}
	return strings.TrimRight(admin, "/"), nil
}

// do sends one admin request and decodes the JSON answer into out.
func (c *adminClient) do(ctx context.Context, method, path string, body []byte, out any) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.admin+path, rd)
	if err != nil {
		return err
	}
	if c.token == "" {
		return errors.New("no token: pass --token or set MERIDIAN_TOKEN")
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != nil && method == http.MethodPost && strings.Contains(path, "?") {
		req.Header.Set("Content-Type", "application/wasm")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("admin API at %s: %w (is the PoP running? set --admin)", c.admin, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("admin API at %s: reading the answer: %w", c.admin, err)
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return fmt.Errorf("%s (HTTP %d)", e.Error, resp.StatusCode)
		}
		return fmt.Errorf("admin API at %s answered %s: %s", c.admin, resp.Status, strings.TrimSpace(string(b)))
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("admin API at %s: unexpected answer (not a Meridian PoP admin API?): %w", c.admin, err)
	}
	return nil
}

// printLogs writes a logs answer as 'meridian plugin logs' shows it: one
// line per log line, newest first, with the PoP that logged it; then, on
// stderr, the answer's notes: the PoPs that did not answer (their lines
// are missing) and the ones that left lines out.
func printLogs(stdout, stderr io.Writer, site string, a rollout.LogsAnswer) {
	w := len("POP")
	for _, l := range a.Lines {
		w = max(w, len(l.PoP))
	}
	if len(a.Lines) > 0 {
		fmt.Fprintf(stdout, "%-24s  %-*s  %-5s  %s\n", "TIME", w, "POP", "LEVEL", "PLUGIN@VERSION  MESSAGE")
	}
	for _, l := range a.Lines {
		fmt.Fprintf(stdout, "%-24s  %-*s  %-5s  %s@%d  %s\n", l.Time.UTC().Format("2006-01-02T15:04:05.000Z"), w, l.PoP, l.Level, l.Plugin, l.Version, l.Msg)
	}
	if len(a.Lines) == 0 {
		fmt.Fprintf(stderr, "no plugin log lines for site %s on PoPs %s\n", site, strings.Join(a.Answered, ", "))
	}
	for _, n := range a.Notes {
		fmt.Fprintf(stderr, "note: %s\n", n)
	}
}

// describe says in words what a deployment target runs.
func describe(t rollout.Target) string {
	own := ""
	if e, ok := t.CanaryEntry(); ok {
		own = ", with " + describeEntry(e)
	}
	switch {
	case t.Canary != 0 && t.Stable != 0:
		return fmt.Sprintf("version %d takes %d%% of requests (canary%s), version %d the rest", t.Canary, t.Percent, own, t.Stable)
	case t.Canary != 0:
		return fmt.Sprintf("version %d takes %d%% of requests (canary%s); the rest run without this plugin", t.Canary, t.Percent, own)
	case t.Stable != 0:
		return fmt.Sprintf("version %d takes all requests", t.Stable)
	}
	return "runs nowhere"
}

// describeEntry lists a chain entry's config and headers, sorted.
func describeEntry(e rollout.ChainEntry) string {
	var parts []string
	keys := make([]string, 0, len(e.Config))
	for k := range e.Config {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		parts = append(parts, "config "+k+"="+e.Config[k])
	}
	if len(e.RequestHeaders) > 0 {
		parts = append(parts, "request headers "+strings.Join(e.RequestHeaders, ","))
	}
	if len(e.ResponseHeaders) > 0 {
		parts = append(parts, "response headers "+strings.Join(e.ResponseHeaders, ","))
	}
	if len(parts) == 0 {
		return "no config, no headers"
	}
	return strings.Join(parts, "; ")
}

// chainNames is a chain's plugins in order ("none" for an empty chain).
func chainNames(d rollout.ChainDoc) string {
	if len(d.Entries) == 0 {
		return "none"
	}
	order := make([]string, len(d.Entries))
	for i, e := range d.Entries {
		order[i] = e.Plugin
	}
	return strings.Join(order, " -> ")
}

// printStatus writes a site's plugins as 'meridian plugin list' shows
// them: the chain, then one row per version with its deployment state
// (from the record every PoP follows) and its health (ok, degraded or
// failing, from each PoP's circuit breaker): on every PoP that answered
// when st holds their views, else on the PoP that answered.
func printStatus(stdout, stderr io.Writer, st rollout.SiteStatus) {
	seen := "as seen by PoP " + st.PoP
	if len(st.Answered) > 0 {
		seen += "; health from PoPs " + strings.Join(st.Answered, ", ")
	}
	fmt.Fprintf(stdout, "site %s (%s)\n", st.Site, seen)
	policy := "fail open"
	if st.Chain.FailClosed {
		policy = "fail closed"
	}
	fmt.Fprintf(stdout, "chain (%s): %s\n\n", policy, chainNames(st.Chain))
	tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PLUGIN\tVERSION\tSHA256\tSIZE\tUPLOADED\tBY\tSTATE\tHEALTH")
	for _, p := range st.Plugins {
		for _, v := range p.Versions {
			state := ""
			if d := p.Deployment; d != nil {
				switch v.Version {
				case d.Canary:
					state = fmt.Sprintf("canary %d%%", d.Percent)
				case d.Stable:
					state = "live"
					if d.Canary != 0 {
						state = fmt.Sprintf("live %d%%", 100-d.Percent)
					}
				}
			}
			fmt.Fprintf(tw, "%s\t%d\t%.12s\t%d\t%s\t%s\t%s\t%s\n", p.Plugin, v.Version, v.SHA256, v.Size, v.Uploaded.UTC().Format(time.RFC3339), v.By, state, healthOf(p, v.Version))
		}
		if d := p.Deployment; d != nil {
			rb := ""
			if d.RolledBack {
				rb = " (rolled back)"
			}
			fmt.Fprintf(tw, "%s\t\t\t\t%s\t%s\tdeployment: %s%s\n", p.Plugin, d.At.UTC().Format(time.RFC3339), d.By, describe(d.Target), rb)
		}
		pending := []rollout.PoPPlugin{{PoP: "this PoP", Pending: p.Pending}}
		if len(st.Answered) > 0 {
			pending = p.PoPs
		}
		for _, v := range pending {
			if v.Pending != "" {
				fmt.Fprintf(tw, "%s\t\t\t\t\t\tNOT APPLIED on %s: %s\n", p.Plugin, v.PoP, v.Pending)
			}
		}
	}
	_ = tw.Flush()
	for _, n := range st.Notes {
		fmt.Fprintf(stderr, "note: %s\n", n)
	}
}

// healthOf says how version is doing: one summary when every PoP that
// runs it agrees (or only one PoP was asked), else each summary with its
// PoPs, the troubled ones first.
func healthOf(p rollout.PluginStatus, version int) string {
	views := p.PoPs
	if views == nil {
		views = []rollout.PoPPlugin{{Health: p.Health}}
	}
	var order []string
	pops := map[string][]string{}
	for _, v := range views {
		for _, h := range v.Health {
			if h.Version != version {
				continue
			}
			sum := h.Summary()
			if _, ok := pops[sum]; !ok {
				order = append(order, sum)
			}
			pops[sum] = append(pops[sum], v.PoP)
		}
	}
	if len(order) <= 1 {
		return strings.Join(order, "")
	}
	slices.SortStableFunc(order, func(a, b string) int {
		if (a == "ok") != (b == "ok") {
			if a == "ok" {
				return 1
			}
			return -1
		}
		return 0
	})
	parts := make([]string, len(order))
	for i, sum := range order {
		parts[i] = sum + " on " + strings.Join(pops[sum], ", ")
	}
	return strings.Join(parts, "; ")
}
