package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
)

const purgeSynopsis = "purge --site SITE (--url URL | --prefix URL | --key KEY | --all) [--soft] [--admin URL] [--token TOKEN]"

// purgeHelp ends 'meridian purge -h'.
const purgeHelp = `
The purge is recorded in the replicated purge log through one PoP's admin
API (--admin, default the dev stack's first PoP): every PoP stops serving
what it selects at once and removes it from its tiers. --url takes one URL
as clients ask for it (http://www.example.test/a.css; the port does not
matter), --prefix every URL under one, --key the objects whose origin sent
that Surrogate-Key, --all the whole site. --soft marks them stale instead:
revalidated with the origin on the next request, still usable if it fails.
The token is the site owner's or the ops token (--token or MERIDIAN_TOKEN).
`

// purgeAnswer is the admin API's answer to a purge.
type purgeAnswer struct {
	ID         string `json:"id"`
	Local      int    `json:"purged_here"`
	Replicated bool   `json:"replicated"`
	Queued     bool   `json:"queued"`
	Warning    string `json:"warning"`
}

// cmdPurge runs 'meridian purge'.
func cmdPurge(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("purge", purgeSynopsis, stderr)
	flagsHelp := fs.Usage
	fs.Usage = func() {
		flagsHelp()
		fmt.Fprint(fs.Output(), purgeHelp)
	}
	admin := fs.String("admin", "http://127.0.0.11:9090", "admin API of a PoP (any PoP: the purge reaches all)")
	token := fs.String("token", "", "site owner's or ops token (default $MERIDIAN_TOKEN)")
	site := fs.String("site", "", "site name, as in the config (required)")
	byURL := fs.String("url", "", "purge this URL")
	prefix := fs.String("prefix", "", "purge every URL that starts with this one")
	key := fs.String("key", "", "purge the objects tagged with this Surrogate-Key")
	all := fs.Bool("all", false, "purge the whole site")
	soft := fs.Bool("soft", false, "mark stale (revalidate on next use) instead of removing")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return fmt.Errorf("purge: unexpected argument %q (give what to purge with --url, --prefix, --key or --all)\nusage: meridian %s: %w", pos[0], purgeSynopsis, errUsage)
	}
	if *site == "" {
		return fmt.Errorf("purge: --site is required\nusage: meridian %s: %w", purgeSynopsis, errUsage)
	}
	var kinds []string
	kind, value := "", ""
	for _, s := range []struct {
		flag, kind, value string
		set               bool
	}{
		{"--url", "url", *byURL, *byURL != ""},
		{"--prefix", "prefix", *prefix, *prefix != ""},
		{"--key", "surrogate-key", *key, *key != ""},
		{"--all", "site", "", *all},
	} {
		if s.set {
			kinds = append(kinds, s.flag)
			kind, value = s.kind, s.value
		}
	}
	switch len(kinds) {
	case 0:
		return fmt.Errorf("purge: say what to purge with one of --url, --prefix, --key or --all\nusage: meridian %s: %w", purgeSynopsis, errUsage)
	case 1:
	default:
		return fmt.Errorf("purge: give only one of --url, --prefix, --key or --all (got %s)\nusage: meridian %s: %w",
			strings.Join(kinds, " and "), purgeSynopsis, errUsage)
	}
	base, err := adminBase(*admin)
	if err != nil {
		return fmt.Errorf("purge: --admin: %w: %w", err, errUsage)
	}
	if *token == "" {
		*token = os.Getenv("MERIDIAN_TOKEN")
	}
	body, _ := json.Marshal(map[string]any{"site": *site, "kind": kind, "value": value, "soft": *soft})
	c := &adminClient{admin: base, token: *token, http: &http.Client{Timeout: time.Minute}}
	var ans purgeAnswer
	if err := c.do(ctx, http.MethodPost, "/admin/purge", body, &ans); err != nil {
		return fmt.Errorf("purge: %w", err)
	}
	what := map[string]string{"url": value, "prefix": value + "*", "surrogate-key": "Surrogate-Key " + value, "site": "everything"}[kind]
	verb := "purged"
	if *soft {
		verb = "marked stale"
	}
	fmt.Fprintf(stdout, "%s %s of site %s: %d objects at this PoP", verb, what, *site, ans.Local)
	switch {
	case ans.Replicated:
		fmt.Fprintf(stdout, "; recorded for every PoP (id %s)\n", ans.ID)
	case ans.ID != "":
		fmt.Fprintf(stdout, "; recorded (id %s), not yet sent to the other PoPs\n", ans.ID)
	default:
		fmt.Fprintln(stdout, "; this PoP runs without state sync: the other PoPs are not told")
	}
	if ans.Warning != "" {
		fmt.Fprintf(stderr, "warning: %s\n", ans.Warning)
	}
	return nil
}
