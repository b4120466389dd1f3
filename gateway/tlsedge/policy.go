package tlsedge

import (
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// HSTS is a site's Strict-Transport-Security policy; a zero MaxAge sends
// no header.
type HSTS struct {
	MaxAge            time.Duration
	IncludeSubdomains bool
	Preload           bool
}

// Header is the header value, e.g. "max-age=31536000; includeSubDomains".
func (h HSTS) Header() string {
	v := "max-age=" + strconv.FormatInt(int64(h.MaxAge/time.Second), 10)
	if h.IncludeSubdomains {
		v += "; includeSubDomains"
	}
	if h.Preload {
		v += "; preload"
	}
	return v
}

// SitePolicy is what a site asks of plain HTTP and HTTPS.
type SitePolicy struct {
	// Names are the site's host names (wildcards "*.example.com" allowed).
	Names []string
	// HSTS is sent on responses over TLS (HTTPS and HTTP/3) only, as RFC
	// 6797 requires.
	HSTS HSTS
	// RedirectHTTP answers plain-HTTP requests with a redirect to HTTPS
	// (301 for GET and HEAD, 308 otherwise so the method and body are kept).
	// ACME HTTP-01 challenge paths are never redirected.
	RedirectHTTP bool
}

// Policies applies per-site HSTS and HTTP→HTTPS redirects. The set of
// policies can be replaced live (Set); each request reads one whole set.
type Policies struct {
	cur       atomic.Pointer[policyIndex]
	httpsPort int
}

// policyIndex is one consistent set of site policies by host name.
type policyIndex struct {
	byName map[string]*SitePolicy
}

// NewPolicies indexes the sites' policies. httpsPort is the port redirects
// point to (443 is left out of the URL).
func NewPolicies(sites []SitePolicy, httpsPort int) (*Policies, error) {
	idx, err := indexPolicies(sites)
	if err != nil {
		return nil, err
	}
	p := &Policies{httpsPort: httpsPort}
	p.cur.Store(idx)
	return p, nil
}

// CheckPolicies reports what NewPolicies or Set would refuse in sites,
// without changing anything: for a caller that checks a whole new
// configuration before applying any of it.
func CheckPolicies(sites []SitePolicy) error {
	_, err := indexPolicies(sites)
	return err
}

// Set replaces the policies (a config reload): on error nothing changes.
// Requests already past the lookup finish under the old policy.
func (p *Policies) Set(sites []SitePolicy) error {
	idx, err := indexPolicies(sites)
	if err != nil {
		return err
	}
	p.cur.Store(idx)
	return nil
}

func indexPolicies(sites []SitePolicy) (*policyIndex, error) {
	// Copied, so that the caller's slice may change after.
	sites = slices.Clone(sites)
	idx := &policyIndex{byName: map[string]*SitePolicy{}}
	for i := range sites {
		s := &sites[i]
		if s.HSTS.MaxAge < 0 {
			return nil, fmt.Errorf("tlsedge: hsts max_age %s is negative", s.HSTS.MaxAge)
		}
		if s.HSTS.Preload && (s.HSTS.MaxAge < 365*24*time.Hour || !s.HSTS.IncludeSubdomains) {
			return nil, fmt.Errorf("tlsedge: hsts preload for %v needs max_age of at least 1 year and include_subdomains (the preload list refuses less)", s.Names)
		}
		for _, n := range s.Names {
			idx.byName[normalizeName(n)] = s
		}
	}
	return idx, nil
}

// RedirectsHTTP reports whether plain HTTP requests for host are redirected
// to HTTPS (so nothing may answer them from the cache instead).
func (p *Policies) RedirectsHTTP(host string) bool {
	s := lookupName(p.cur.Load().byName, normalizeName(host))
	return s != nil && s.RedirectHTTP
}

// Middleware wraps a handler that serves both the plain-HTTP and the TLS
// listeners (r.TLS tells them apart).
func (p *Policies) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if target, code := p.Apply(w, r); target != "" {
			http.Redirect(w, r, target, code)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// Apply is Middleware's decision for r, for a caller that answers the
// redirect itself (the PoP, inside its logged chain): on TLS it sets the
// site's HSTS on w; for plain HTTP to a site that redirects it returns
// the https URL and the status (301, or 308 for methods other than GET
// and HEAD) to answer with, and sets nothing. target is "" when r goes on.
func (p *Policies) Apply(w http.ResponseWriter, r *http.Request) (target string, code int) {
	s := lookupName(p.cur.Load().byName, normalizeName(r.Host))
	if s == nil {
		return "", 0
	}
	if r.TLS == nil {
		if s.RedirectHTTP && !strings.HasPrefix(r.URL.Path, "/.well-known/acme-challenge/") {
			return p.redirectTarget(r)
		}
	} else if s.HSTS.MaxAge > 0 {
		w.Header().Set("Strict-Transport-Security", s.HSTS.Header())
	}
	return "", 0
}

func (p *Policies) redirectTarget(r *http.Request) (string, int) {
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if p.httpsPort != 443 && p.httpsPort != 0 {
		host += ":" + strconv.Itoa(p.httpsPort)
	}
	target := "https://" + host + r.URL.RequestURI()
	code := http.StatusMovedPermanently
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		code = http.StatusPermanentRedirect
	}
	return target, code
}
