package tlsedge

import (
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
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

// Policies applies per-site HSTS and HTTP→HTTPS redirects.
type Policies struct {
	byName    map[string]*SitePolicy
	httpsPort int
}

// NewPolicies indexes the sites' policies. httpsPort is the port redirects
// point to (443 is left out of the URL).
func NewPolicies(sites []SitePolicy, httpsPort int) (*Policies, error) {
	p := &Policies{byName: map[string]*SitePolicy{}, httpsPort: httpsPort}
	for i := range sites {
		s := &sites[i]
		if s.HSTS.MaxAge < 0 {
			return nil, fmt.Errorf("tlsedge: hsts max_age %s is negative", s.HSTS.MaxAge)
		}
		if s.HSTS.Preload && (s.HSTS.MaxAge < 365*24*time.Hour || !s.HSTS.IncludeSubdomains) {
			return nil, fmt.Errorf("tlsedge: hsts preload for %v needs max_age of at least 1 year and include_subdomains (the preload list refuses less)", s.Names)
		}
		for _, n := range s.Names {
			p.byName[normalizeName(n)] = s
		}
	}
	return p, nil
}

// RedirectsHTTP reports whether plain HTTP requests for host are redirected
// to HTTPS (so nothing may answer them from the cache instead).
func (p *Policies) RedirectsHTTP(host string) bool {
	s := lookupName(p.byName, normalizeName(host))
	return s != nil && s.RedirectHTTP
}

// Middleware wraps a handler that serves both the plain-HTTP and the TLS
// listeners (r.TLS tells them apart).
func (p *Policies) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := lookupName(p.byName, normalizeName(r.Host))
		if s == nil {
			next.ServeHTTP(w, r)
			return
		}
		if r.TLS == nil {
			if s.RedirectHTTP && !strings.HasPrefix(r.URL.Path, "/.well-known/acme-challenge/") {
				p.redirect(w, r)
				return
			}
		} else if s.HSTS.MaxAge > 0 {
			w.Header().Set("Strict-Transport-Security", s.HSTS.Header())
		}
		next.ServeHTTP(w, r)
	})
}

func (p *Policies) redirect(w http.ResponseWriter, r *http.Request) {
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
	http.Redirect(w, r, target, code)
}
