package cache

import (
	"strings"
	"testing"
)

func TestSitePolicyValidateRules(t *testing.T) {
	for _, c := range []struct {
		rule PathRule
		want string // "" = valid
	}{
		{PathRule{Path: "/api/*", Bypass: true}, ""},
		{PathRule{Path: "*.css", TTL: 1}, ""},
		{PathRule{Path: "", Bypass: true}, "Rules[0].Path: missing"},
		{PathRule{Path: "api/*", Bypass: true}, `Rules[0].Path: "api/*" must start with / or *`},
		{PathRule{Path: "/a?b", Bypass: true}, "without the query"},
		{PathRule{Path: "/a", Bypass: true, TTL: 1}, "Bypass stores nothing"},
		{PathRule{Path: "/a"}, "does nothing"},
		{PathRule{Path: "/a", TTL: -1}, "must not be negative"},
		{PathRule{Path: "/old/*", Redirect: "/new/$1", RedirectStatus: 308}, ""},
		{PathRule{Path: "/old/*", Redirect: "/new/$2"}, `uses $2, but path "/old/*" has 1 stars`},
		{PathRule{Path: "/old/*", Redirect: "new"}, "must be a path (/new/$1) or an http(s) URL"},
		{PathRule{Path: "/old/*", Redirect: "/new", RedirectStatus: 200}, "RedirectStatus 200 is not a redirect"},
		{PathRule{Path: "/old/*", Redirect: "/new", StaleIfError: 1}, "a redirect is answered at the PoP and stores nothing"},
		{PathRule{Path: "/old/*", RedirectStatus: 301}, "RedirectStatus without Redirect"},
	} {
		err := SitePolicy{SiteID: "s", Rules: []PathRule{c.rule}}.Validate()
		if (c.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%+v: %v, want %q", c.rule, err, c.want)
		}
	}
}
