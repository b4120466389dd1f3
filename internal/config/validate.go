package config

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/meridian-edge/meridian/dnsrouter/records"
	"github.com/meridian-edge/meridian/dnsrouter/region"
	"github.com/meridian-edge/meridian/gateway/headers"
	"github.com/meridian-edge/meridian/gateway/pathmatch"
	"github.com/miekg/dns"
)

var (
	idPattern   = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?$`)
	hostPattern = regexp.MustCompile(`^(\*\.)?([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\.)*[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$`)
)

// validation collects problems by field path; Parse adds file and line.
type validation struct {
	errs []*Error
	// listeners maps a bound address to the field that claimed it.
	listeners map[string]string
	// zero lists the duration fields the file set to 0 explicitly (before
	// defaults replaced them), for checks where 0 is not the default.
	zero map[string]bool
}

func (v *validation) add(field, format string, args ...any) {
	v.errs = append(v.errs, &Error{Field: field, Msg: fmt.Sprintf(format, args...)})
}

// validate checks c after defaults; zero lists the duration fields the
// file set explicitly to 0 (nil: none).
func validate(c *Config, zero map[string]bool) []*Error {
	v := &validation{listeners: map[string]string{}, zero: zero}
	v.oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error")
	v.oneOf("log.format", c.Log.Format, "text", "json")
	v.nats(c)
	if c.Dev.Origin != "" {
		// Only `meridian dev` binds it, but a clash is reported for every file
		// so that `config check` tells the truth about the dev stack.
		v.listen("dev.origin", c.Dev.Origin)
	}
	if len(c.PoPs) == 0 {
		v.add("pops", "no PoPs; list at least one (id, region, http, admin)")
	}
	ids := map[string]int{}
	for i, p := range c.PoPs {
		v.pop(fmt.Sprintf("pops[%d]", i), p, ids, i)
	}
	v.sites(c.Sites)
	v.originLoops(c.Sites, c.PoPs)
	v.tokenHash("admin.ops_token_sha256", c.Admin.OpsTokenSHA256)
	v.tls(c)
	v.oneOf("plugins.engine", c.Plugins.Engine, "native", "sdk")
	if d := c.Plugins.Timeout; d < time.Millisecond || d > 10*time.Second {
		v.add("plugins.timeout", "%v is out of range [1ms,10s]", d)
	}
	if m := c.Plugins.Memory; m < 1<<20 || m > 4<<30 || m%(64<<10) != 0 {
		v.add("plugins.memory", "%d bytes: want whole 64KiB pages from 1MiB to 4GiB, e.g. 32MiB", int64(m))
	}
	if d := c.Shutdown.Drain; d < 0 || d > time.Hour {
		v.add("shutdown.drain", "%v is out of range [0s,1h]; use about the DNS answers' TTL", d)
	}
	if g := c.Shutdown.Grace; g < 0 || g > time.Hour {
		v.add("shutdown.grace", "%v is out of range [0s,1h]", g)
	}
	for i, name := range c.Plugins.SDKSites {
		found := false
		for _, s := range c.Sites {
			found = found || s.Name == name
		}
		if !found {
			v.add(fmt.Sprintf("plugins.sdk_sites[%d]", i), "no site named %q", name)
		}
	}
	if c.DNS != nil {
		v.dns(c.DNS, c.PoPs)
	}
	return v.errs
}

func (v *validation) oneOf(field, got string, allowed ...string) {
	for _, a := range allowed {
		if got == a {
			return
		}
	}
	v.add(field, "%q is not allowed; expected one of %s", got, strings.Join(allowed, ", "))
}

func (v *validation) nats(c *Config) {
	n := c.NATS
	if n.Embedded == nil && len(n.URLs) == 0 {
		v.add("nats", "no NATS: set nats.embedded.listen for a built-in server, or nats.urls for an external cluster")
	}
	if n.Embedded != nil && len(n.URLs) > 0 {
		// Both would start a server of its own and connect to it alone,
		// cut off from the cluster the URLs name.
		v.add("nats.urls", "set either nats.embedded (a built-in server for this process alone) or nats.urls (an external cluster), not both; to join the cluster, delete nats.embedded")
	}
	if n.Embedded != nil {
		v.listen("nats.embedded.listen", n.Embedded.Listen)
	}
	for i, u := range n.URLs {
		pu, err := url.Parse(u)
		if err != nil || (pu.Scheme != "nats" && pu.Scheme != "tls" && pu.Scheme != "ws" && pu.Scheme != "wss") || pu.Host == "" {
			v.add(fmt.Sprintf("nats.urls[%d]", i), "%q is not a NATS URL; expected nats://host:port (or tls://, ws://, wss://)", RedactURL(u))
		}
	}
	if n.StreamReplicas < 1 || n.StreamReplicas > 5 {
		v.add("nats.stream_replicas", "%d is out of range [1,5]", n.StreamReplicas)
	} else if n.Embedded != nil && n.StreamReplicas != 1 {
		v.add("nats.stream_replicas", "the embedded server is a single node; use 1 (or nats.urls for a cluster)")
	}
	v.readable("nats.tls.ca_file", n.TLS.CAFile)
	v.readable("nats.tls.cert_file", n.TLS.CertFile)
	v.readable("nats.tls.key_file", n.TLS.KeyFile)
	if (n.TLS.CertFile == "") != (n.TLS.KeyFile == "") {
		v.add("nats.tls", "set both cert_file and key_file for a client certificate, or neither")
	}
	v.readable("nats.credentials", n.Credentials)
}

// RedactURL hides a password in a URL, for messages and logs.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		if i := strings.LastIndex(raw, "@"); i >= 0 {
			return "[redacted]" + raw[i:]
		}
		return raw
	}
	return u.Redacted()
}

// readable checks that a file the configuration names can be read now, so
// that a typo fails at start (and in config check), not at first use.
func (v *validation) readable(field, path string) {
	if path == "" {
		return
	}
	if _, err := os.Stat(path); err != nil {
		v.add(field, "cannot read %s: %s", path, errText(err))
	}
}

func errText(err error) string {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err.Error()
	}
	return err.Error()
}

// listen checks a host:port and that no other listener of this file claims it.
func (v *validation) listen(field, addr string) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		v.add(field, "%q is not an address; expected host:port, like 127.0.0.1:8080", addr)
		return
	}
	pn, err := strconv.Atoi(port)
	if err != nil || pn < 0 || pn > 65535 {
		v.add(field, "port %q is out of range [0,65535]", port)
		return
	}
	if host != "" && host != "localhost" && net.ParseIP(host) == nil {
		v.add(field, "host %q is not an IP address; listen on an IP (or leave it empty for all addresses)", host)
		return
	}
	if pn == 0 {
		return // the kernel picks distinct ports
	}
	for other, owner := range v.listeners {
		oh, op, _ := net.SplitHostPort(other)
		if op != port {
			continue
		}
		if oh == host || isWildcard(oh) || isWildcard(host) {
			v.add(field, "address %s clashes with %s (%s); give each listener its own host:port", addr, owner, other)
			return
		}
	}
	v.listeners[addr] = field
}

func isWildcard(h string) bool {
	ip := net.ParseIP(h)
	return h == "" || (ip != nil && ip.IsUnspecified())
}

func (v *validation) latLon(field string, lat, lon *float64) {
	if lat != nil && (*lat < -90 || *lat > 90) {
		v.add(field+".lat", "%v is out of range [-90,90]", *lat)
	}
	if lon != nil && (*lon < -180 || *lon > 180) {
		v.add(field+".lon", "%v is out of range [-180,180]", *lon)
	}
	if (lat == nil) != (lon == nil) {
		v.add(field, "set both lat and lon, or neither")
	}
}

func (v *validation) region(field, id string) {
	if _, ok := region.Lookup(id); !ok {
		v.add(field, "unknown region %q; expected a catalog region such as us-east-1, eu-west-2 or ap-northeast-1 (`meridian regions` lists all), or set lat and lon", id)
	}
}

func (v *validation) pop(f string, p PoP, ids map[string]int, i int) {
	switch {
	case p.ID == "":
		v.add(f+".id", "missing; give the PoP an id such as us-east-1")
	case !idPattern.MatchString(p.ID):
		v.add(f+".id", "%q is not a valid id; use lower-case letters, digits and '-'", p.ID)
	default:
		if first, dup := ids[p.ID]; dup {
			v.add(f+".id", "duplicate PoP id %q (also pops[%d]); every PoP needs its own id", p.ID, first)
		} else {
			ids[p.ID] = i
		}
	}
	if p.Region != "" {
		v.region(f+".region", p.Region)
	} else if p.Lat == nil || p.Lon == nil {
		v.add(f+".region", "missing; name a catalog region or set lat and lon")
	}
	v.latLon(f, p.Lat, p.Lon)
	if p.HTTP == "" {
		v.add(f+".http", "missing; the proxy needs a listen address, like 127.0.0.11:8080")
	} else {
		v.listen(f+".http", p.HTTP)
	}
	if p.Admin == "" {
		v.add(f+".admin", "missing; the admin API (health, metrics, purge) needs a listen address, like 127.0.0.11:9090")
	} else {
		v.listen(f+".admin", p.Admin)
	}
	if len(p.Addresses) == 0 && p.HTTP != "" {
		v.add(f+".addresses", "missing; the http host is not an IP, so list the IPs the DNS should answer for this PoP")
	}
	for j, a := range p.Addresses {
		if _, err := netip.ParseAddr(a); err != nil {
			v.add(fmt.Sprintf("%s.addresses[%d]", f, j), "%q is not an IP address", a)
		}
	}
	if p.HTTPS != "" {
		v.listen(f+".https", p.HTTPS)
	} else if p.HTTP3 {
		v.add(f+".http3", "HTTP/3 runs beside HTTPS; set https too")
	}
	if p.ProxyProtocol != nil {
		v.proxyProtocol(f+".proxy_protocol", p.ProxyProtocol, p.HTTP3)
	}
	if p.RealIP != nil {
		v.realIP(f+".real_ip", p.RealIP)
	}
	if p.Capacity < 0 {
		v.add(f+".capacity", "%v is negative; use 0 for unlimited", p.Capacity)
	}
	if l3 := p.Cache.L3; l3.Endpoint != "" && l3.Endpoint != "embedded" {
		if u, err := url.Parse(l3.Endpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			v.add(f+".cache.l3.endpoint", "%q is not an S3 endpoint; expected http(s)://host:port, or embedded under meridian dev", RedactURL(l3.Endpoint))
		}
		if l3.AccessKey == "" || l3.SecretKeyFile == "" {
			v.add(f+".cache.l3", "set access_key and secret_key_file for the S3 endpoint")
		} else {
			v.readable(f+".cache.l3.secret_key_file", l3.SecretKeyFile)
		}
	}
	if !p.Cache.L2.Disabled && p.Cache.L2.Size < 16<<20 {
		v.add(f+".cache.l2.size", "%s is too small; the disk tier needs at least 16MiB (or set disabled: true)", p.Cache.L2.Size)
	}
	if p.Cache.L1Size < 1<<20 {
		v.add(f+".cache.l1_size", "%s is too small; the memory tier needs at least 1MiB", p.Cache.L1Size)
	} else if lb := p.Cache.L1LargeBodies; lb != nil && *lb > 0 && p.Cache.L1Size-*lb < 1<<20 {
		v.add(f+".cache.l1_large_bodies", "%s leaves less than 1MiB of l1_size %s for BigCache; lower it or raise l1_size", *lb, p.Cache.L1Size)
	}
}

// proxyProtocol checks a PoP's proxy_protocol section. With http3 it is
// refused rather than documented: a balancer that hides clients' addresses
// on TCP hides them on UDP too, and h3 clients would be rate-limited, located
// and logged as the balancer without a word.
func (v *validation) proxyProtocol(f string, pp *ProxyProtocol, http3 bool) {
	if http3 {
		v.add(f, "cannot be used with http3: HTTP/3 (QUIC over UDP) carries no PROXY header, so h3 clients would be seen as the balancer; set http3: false on this PoP")
	}
	if len(pp.Trusted) == 0 {
		v.add(f+".trusted", "missing; list the balancers' addresses or CIDR blocks, e.g. [10.0.0.0/8]: only they may send a PROXY header")
	}
	v.trustedList(f+".trusted", pp.Trusted)
	if d := pp.HeaderTimeout; d < time.Millisecond || d > time.Minute {
		v.add(f+".header_timeout", "%v is out of range [1ms,1m]; a balancer sends its header at once", d)
	}
}

// originLoops refuses an origin that is one of the file's own PoP
// listeners: every miss would come back to a PoP (RFC 8586's loop), which
// the PoPs answer 508 at run time; the file can say so before that. A PoP
// on a wildcard address (0.0.0.0:8080) is also reached through loopback.
func (v *validation) originLoops(sites []Site, pops []PoP) {
	listeners := map[string]string{} // host:port -> pops[i].field
	for i, p := range pops {
		for _, l := range []struct{ field, addr string }{{"http", p.HTTP}, {"https", p.HTTPS}} {
			if l.addr != "" {
				listeners[l.addr] = fmt.Sprintf("pops[%d].%s", i, l.field)
			}
		}
	}
	for i, s := range sites {
		for j, o := range s.Origins {
			u, err := url.Parse(o.URL)
			if err != nil || u.Host == "" {
				continue // sites reports it
			}
			port := u.Port()
			if port == "" {
				port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
			}
			host := u.Hostname()
			candidates := []string{net.JoinHostPort(host, port)}
			if ip, err := netip.ParseAddr(host); (err == nil && ip.IsLoopback()) || host == "localhost" {
				candidates = append(candidates, net.JoinHostPort("0.0.0.0", port), net.JoinHostPort("::", port), ":"+port)
			}
			for _, c := range candidates {
				if pf, ok := listeners[c]; ok {
					v.add(fmt.Sprintf("sites[%d].origins[%d].url", i, j),
						"%q is this file's own PoP listener (%s): every miss would come back to a PoP and loop; give the site's real origin server", o.URL, pf)
					break
				}
			}
		}
	}
}

func (v *validation) sites(sites []Site) {
	names := map[string]int{}
	hosts := map[string]string{}
	defaultSite := ""
	for i, s := range sites {
		f := fmt.Sprintf("sites[%d]", i)
		switch {
		case s.Name == "":
			v.add(f+".name", "missing; give the site a name such as www")
		case !idPattern.MatchString(s.Name):
			v.add(f+".name", "%q is not a valid name; use lower-case letters, digits and '-'", s.Name)
		default:
			if first, dup := names[s.Name]; dup {
				v.add(f+".name", "duplicate site name %q (also sites[%d])", s.Name, first)
			}
			names[s.Name] = i
		}
		if s.Default {
			if defaultSite != "" {
				v.add(f+".default", "%s is already the default site; at most one site may be", defaultSite)
			}
			defaultSite = f
		}
		if len(s.Hosts) == 0 && !s.Default {
			v.add(f+".hosts", "missing; list the host names this site serves")
		}
		for j, h := range s.Hosts {
			hf := fmt.Sprintf("%s.hosts[%d]", f, j)
			if scheme, rest, ok := strings.Cut(h, "://"); ok {
				bare := rest
				if u, err := url.Parse(h); err == nil && u.Hostname() != "" {
					bare = u.Hostname()
				}
				v.add(hf, "%q has a scheme (%s://); hosts are bare names: write %s", h, scheme, bare)
			} else if strings.Contains(h, ":") {
				v.add(hf, "%q has a port; hosts are matched without the port", h)
			} else if !hostPattern.MatchString(h) {
				v.add(hf, "%q is not a host name", h)
			} else if other, dup := hosts[h]; dup {
				v.add(hf, "host %q is already served by %s; a host belongs to one site", h, other)
			} else {
				hosts[h] = f
			}
		}
		if len(s.Origins) == 0 {
			v.add(f+".origins", "missing; a site needs at least one origin (url: http://host:port)")
		}
		if len(s.Routes) == 0 && len(s.Origins) > 0 && !slices.ContainsFunc(s.Origins, func(o Origin) bool { return !o.Backup }) {
			v.add(f+".origins", "every origin is a backup; backups serve only while the others are down, so make one a regular origin")
		}
		for j, o := range s.Origins {
			of := fmt.Sprintf("%s.origins[%d].url", f, j)
			u, err := url.Parse(o.URL)
			switch {
			case o.URL == "":
				v.add(of, "missing; expected http://host:port or https://host")
			case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
				v.add(of, "%q is not an origin URL; expected http://host:port or https://host", o.URL)
			case u.RawQuery != "" || u.Fragment != "" || u.ForceQuery:
				v.add(of, "%q has a query or fragment; an origin is a scheme, a host and an optional path prefix", o.URL)
			case slices.Contains(strings.Split(u.Path, "/"), "..") || slices.Contains(strings.Split(u.Path, "/"), "."):
				v.add(of, "%q has a dot segment in its path; write the prefix the origin serves under, such as /site-v2", o.URL)
			}
			if o.Weight < 0 || o.Weight > 100 {
				v.add(fmt.Sprintf("%s.origins[%d].weight", f, j), "%d is out of range [0,100] (0: 1, an equal share)", o.Weight)
			}
			if o.MaxConns < 0 || o.MaxConns > 1_000_000 {
				v.add(fmt.Sprintf("%s.origins[%d].max_conns", f, j), "%d is out of range [0,1000000] (0: no bound)", o.MaxConns)
			}
		}
		v.tokenHash(f+".owner_token_sha256", s.OwnerTokenSHA256)
		ot := s.OriginTLS
		for _, pf := range []struct{ field, path string }{{"ca_file", ot.CAFile}, {"client_cert_file", ot.ClientCertFile}, {"client_key_file", ot.ClientKeyFile}} {
			v.readable(f+".origin_tls."+pf.field, pf.path)
		}
		if (ot.ClientCertFile == "") != (ot.ClientKeyFile == "") {
			v.add(f+".origin_tls", "set both client_cert_file and client_key_file, or neither")
		}
		if s.ErrorPage != "" {
			if st, err := os.Stat(s.ErrorPage); err != nil {
				v.add(f+".error_page", "cannot read %s: %s", s.ErrorPage, errText(err))
			} else if st.Size() > MaxErrorPage {
				v.add(f+".error_page", "%s is %d bytes; an error page may be at most %d (64 KiB)", s.ErrorPage, st.Size(), MaxErrorPage)
			}
		}
		v.positive(f+".timeouts.connect", s.Timeouts.Connect)
		v.positive(f+".timeouts.header", s.Timeouts.Header)
		v.positive(f+".timeouts.idle", s.Timeouts.Idle)
		v.positive(f+".timeouts.total", s.Timeouts.Total)
		if d := s.Cache.StaleIfError; d < 0 || d > 30*24*time.Hour {
			v.add(f+".cache.stale_if_error", "%v is out of range [0s,720h]", d)
		}
		if d := s.Cache.StaleWhileRevalidate; d < 0 || d > 30*24*time.Hour {
			v.add(f+".cache.stale_while_revalidate", "%v is out of range [0s,720h]", d)
		}
		v.oneOf(f+".cache.client_cache_control", s.Cache.ClientCacheControl, "ignore", "honor")
		if d := s.Cache.DefaultTTL; d < 0 || d > 365*24*time.Hour {
			v.add(f+".cache.default_ttl", "%v is out of range [0s,8760h] (a year); 0 keeps the RFC 9111 heuristic only", d)
		}
		v.cacheRules(f+".cache.rules", s.Cache.Rules)
		v.routes(f, s)
		v.healthCheck(f+".health_check", s.HealthCheck)
		if _, err := headers.ForResponses(s.Headers.Response.Set, s.Headers.Response.Remove); err != nil {
			v.add(f+".headers.response", "%v", err)
		}
		if _, err := headers.ForRequests(s.Headers.Request.Set, s.Headers.Request.Remove); err != nil {
			v.add(f+".headers.request", "%v", err)
		}
	}
}

// healthCheck checks a site's active origin health checks.
func (v *validation) healthCheck(f string, h HealthCheck) {
	if h == (HealthCheck{}) {
		return
	}
	switch {
	case h.Path == "":
		v.add(f+".path", "missing; the checks need a path to request, such as /healthz")
	case h.Path[0] != '/' || strings.ContainsAny(h.Path, "# \t"):
		v.add(f+".path", "%q is not a request path; expected one such as /healthz or /status?full=0", h.Path)
	}
	if h.Host != "" && !hostPattern.MatchString(strings.ToLower(h.Host)) || strings.HasPrefix(h.Host, "*") {
		v.add(f+".host", "%q is not a host name", h.Host)
	}
	if h.Interval != 0 && (h.Interval < 100*time.Millisecond || h.Interval > time.Hour) {
		v.add(f+".interval", "%v is out of range [100ms,1h]", h.Interval)
	}
	interval := h.Interval
	if interval == 0 {
		interval = 5 * time.Second
	}
	if h.Timeout < 0 || h.Timeout > interval {
		v.add(f+".timeout", "%v is out of range [0s,%v] (the interval: a probe ends before the next starts)", h.Timeout, interval)
	}
	for _, t := range []struct {
		name string
		n    int
	}{{"fails", h.Fails}, {"passes", h.Passes}} {
		if t.n < 0 || t.n > 10 {
			v.add(f+"."+t.name, "%d is out of range [0,10] (0: the default, 2)", t.n)
		}
	}
}

// originNames lists the names of origins for messages.
func originNames(origins []Origin) string {
	var names []string
	for _, o := range origins {
		if o.Name != "" {
			names = append(names, o.Name)
		}
	}
	if len(names) == 0 {
		return "none has a name: set origins[].name"
	}
	return "named: " + strings.Join(names, ", ")
}

// routes checks a site's routes against its origins: each names origins
// that exist, no route is hidden by an earlier one with the same
// pattern, and a request no route matches still has an origin.
func (v *validation) routes(f string, s Site) {
	if len(s.Routes) == 0 {
		return
	}
	names := map[string]int{}
	for j, o := range s.Origins {
		if o.Name == "" {
			continue
		}
		if first, dup := names[o.Name]; dup {
			v.add(fmt.Sprintf("%s.origins[%d].name", f, j), "%q is already origins[%d]'s; routes name origins, so names must be unique", o.Name, first)
		} else {
			names[o.Name] = j
		}
	}
	routed, seen, catchAll := map[string]bool{}, map[string]int{}, false
	for i, r := range s.Routes {
		rf := fmt.Sprintf("%s.routes[%d]", f, i)
		if err := pathmatch.Check(r.Path); err != nil {
			v.add(rf+".path", "%v", err)
		} else if j, dup := seen[r.Path]; dup {
			v.add(rf+".path", "%q is already routes[%d]'s, which matches first: this route would never apply", r.Path, j)
		} else {
			seen[r.Path] = i
			catchAll = catchAll || pathmatch.MatchesAll(r.Path)
		}
		if len(r.Origins) == 0 {
			v.add(rf+".origins", "missing; list the names of the origins (origins[].name) that serve %s", r.Path)
		}
		regular, unknown := false, false
		for k, n := range r.Origins {
			j, ok := names[n]
			if !ok {
				v.add(fmt.Sprintf("%s.origins[%d]", rf, k), "%q is not the name of one of the site's origins (%s)", n, originNames(s.Origins))
				unknown = true
				continue
			}
			routed[n] = true
			regular = regular || !s.Origins[j].Backup
		}
		if len(r.Origins) > 0 && !regular && !unknown {
			v.add(rf+".origins", "names only backup origins, which serve while the others are down; name a regular origin too")
		}
	}
	unrouted, regular := 0, 0
	for _, o := range s.Origins {
		if o.Name == "" || !routed[o.Name] {
			unrouted++
			if !o.Backup {
				regular++
			}
		}
	}
	switch {
	case catchAll:
	case unrouted == 0:
		v.add(f+".routes", "every origin is named by a route, so a request no route matches would have no origin; leave one out of the routes, or add a route for /*")
	case regular == 0:
		v.add(f+".routes", "the origins no route names are all backups, so a request no route matches would go to a backup; leave a regular origin out of the routes, or add a route for /*")
	}
}

// cacheRules checks a site's cache.rules.
func (v *validation) cacheRules(field string, rules []CacheRule) {
	seen := map[string]int{}
	for i, r := range rules {
		f := fmt.Sprintf("%s[%d]", field, i)
		if err := pathmatch.Check(r.Path); err != nil {
			v.add(f+".path", "%v", err)
		} else {
			if j, dup := seen[r.Path]; dup {
				v.add(f+".path", "%q is already rules[%d]'s, which matches first: this rule would never apply", r.Path, j)
			}
			seen[r.Path] = i
		}
		for _, d := range []struct {
			name     string
			d, most  time.Duration
			mostText string
		}{
			{"ttl", r.TTL, 365 * 24 * time.Hour, "8760h] (a year)"}, {"default_ttl", r.DefaultTTL, 365 * 24 * time.Hour, "8760h] (a year)"},
			{"stale_if_error", r.StaleIfError, 30 * 24 * time.Hour, "720h]"}, {"stale_while_revalidate", r.StaleWhileRevalidate, 30 * 24 * time.Hour, "720h]"},
		} {
			if d.d < 0 || d.d > d.most {
				v.add(f+"."+d.name, "%v is out of range [0s,%s", d.d, d.mostText)
			}
		}
		stores := r.TTL != 0 || r.DefaultTTL != 0 || r.StaleIfError != 0 || r.StaleWhileRevalidate != 0
		switch {
		case r.Redirect != "" || r.RedirectStatus != 0:
			v.redirectRule(f, r, stores)
		case r.Bypass && stores:
			v.add(f+".bypass", "bypass stores nothing, so ttl, default_ttl and the stale windows would never apply; keep one")
		case !r.Bypass && !stores && len(r.Headers.Set) == 0 && len(r.Headers.Remove) == 0:
			v.add(f, "does nothing; set bypass: true, ttl, default_ttl, stale_if_error, stale_while_revalidate, headers or redirect")
		}
		if _, err := headers.ForResponses(r.Headers.Set, r.Headers.Remove); err != nil {
			v.add(f+".headers", "%v", err)
		}
	}
}

// redirectRule checks a cache rule that redirects: its target, its
// status and that it sets nothing a redirect would ignore (stores says a
// TTL or stale window is set).
func (v *validation) redirectRule(f string, r CacheRule, stores bool) {
	if r.Redirect == "" {
		v.add(f+".redirect_status", "without redirect; set the target, such as /new/$1")
	} else if err := pathmatch.CheckTarget(r.Path, r.Redirect); err != nil {
		v.add(f+".redirect", "%v", err)
	}
	switch r.RedirectStatus {
	case 0, 301, 302, 303, 307, 308:
	default:
		v.add(f+".redirect_status", "%d is not a redirect; use 301, 302, 303, 307 or 308", r.RedirectStatus)
	}
	if r.Bypass || stores {
		v.add(f+".redirect", "a redirect is answered at the PoP and stores nothing; drop bypass, the TTLs and the stale windows")
	}
}

// MaxErrorPage is the largest sites[].error_page file, in bytes.
const MaxErrorPage = 64 << 10

// zoneRecords checks a zone's static records: each must parse, and
// together they must stand beside the zone's served names, aliases and
// name servers (served: its served names as FQDNs).
func (v *validation) zoneRecords(f string, z Zone, served map[string]bool) {
	apex := dns.Fqdn(strings.ToLower(z.Apex))
	var rrs []dns.RR
	var at []int // rrs[k] is records[at[k]]
	for j, text := range z.Records {
		rr, err := records.Parse(apex, text)
		if err != nil {
			v.add(fmt.Sprintf("%s.records[%d]", f, j), "%v", err)
			continue
		}
		rrs, at = append(rrs, rr), append(at, j)
	}
	aliases, glue := map[string]bool{}, map[string]bool{}
	for a := range z.Aliases {
		if fq, ok := inZone(a, z.Apex); ok {
			aliases[dns.Fqdn(fq)] = true
		}
	}
	for _, ns := range z.NS {
		if fq, ok := inZone(strings.ToLower(strings.TrimSuffix(ns.Name, ".")), z.Apex); ok {
			glue[dns.Fqdn(fq)] = true
		}
	}
	fqServed := map[string]bool{}
	for n := range served {
		fqServed[dns.Fqdn(n)] = true
	}
	for _, p := range records.Check(apex, rrs, fqServed, aliases, glue) {
		v.add(fmt.Sprintf("%s.records[%d]", f, at[p.Index]), "%v", p.Err)
	}
}

func (v *validation) tls(c *Config) {
	v.oneOf("tls.unknown_sni", c.TLS.UnknownSNI, "reject", "default")
	anyTLS := false
	for _, s := range c.Sites {
		anyTLS = anyTLS || s.TLS != nil
	}
	if !anyTLS {
		for i, p := range c.PoPs {
			if p.HTTPS != "" {
				v.add(fmt.Sprintf("pops[%d].https", i), "%s listens for HTTPS but no site has a tls section (cert_file and key_file, acme or dev_ca), so every handshake would fail; give a site tls, or remove https", p.HTTPS)
			}
		}
	}
	if c.TLS.UnknownSNI == "default" {
		def := false
		for _, s := range c.Sites {
			def = def || (s.Default && s.TLS != nil)
		}
		if !def {
			v.add("tls.unknown_sni", "default needs a site with default: true and a tls section, whose certificate answers unknown names")
		}
	}
	acme := false
	for i, s := range c.Sites {
		if s.TLS == nil {
			continue
		}
		f := fmt.Sprintf("sites[%d].tls", i)
		t := s.TLS
		sources := 0
		if t.CertFile != "" || t.KeyFile != "" {
			sources++
			if t.CertFile == "" || t.KeyFile == "" {
				v.add(f, "set both cert_file and key_file")
			}
			for _, pf := range []struct{ field, path string }{{"cert_file", t.CertFile}, {"key_file", t.KeyFile}} {
				v.readable(f+"."+pf.field, pf.path)
			}
		}
		if t.ACME {
			sources++
			acme = true
			for j, h := range s.Hosts {
				if strings.HasPrefix(h, "*.") {
					v.add(fmt.Sprintf("sites[%d].hosts[%d]", i, j), "%s: ACME certificates cannot be wildcards here (that needs DNS-01); use a PEM certificate", h)
				}
			}
		}
		if t.DevCA {
			sources++
		}
		if sources != 1 {
			v.add(f, "choose one certificate source: cert_file and key_file, acme: true, or dev_ca: true")
		}
		if t.RedirectHTTP {
			// A PoP without https cannot redirect (to where?): it would
			// serve the site over plain HTTP, the opposite of what the
			// site asks. Refused rather than warned: config has no
			// channel for warnings, and `config check` must tell.
			var plain []string
			for j, p := range c.PoPs {
				if p.HTTPS == "" {
					plain = append(plain, fmt.Sprintf("pops[%d] (%s)", j, p.ID))
				}
			}
			if len(plain) > 0 {
				v.add(f+".redirect_http", "%s %s no https listener, so %s would serve this site over plain HTTP without redirecting; give every PoP an https address, or set redirect_http: false",
					strings.Join(plain, ", "), pluralVerb(len(plain), "has", "have"), pluralVerb(len(plain), "it", "they"))
			}
		}
		if t.HSTS.MaxAge < 0 {
			v.add(f+".hsts.max_age", "%s is negative", t.HSTS.MaxAge)
		}
		if len(s.Hosts) == 0 {
			v.add(f, "a site with TLS needs hosts: the certificate's names")
		}
	}
	if acme {
		if u, err := url.Parse(c.TLS.ACME.Directory); err != nil || u.Scheme != "https" || u.Host == "" {
			v.add("tls.acme.directory", "%q is not an https URL of an ACME directory", c.TLS.ACME.Directory)
		}
		v.readable("tls.acme.ca_file", c.TLS.ACME.CAFile)
	}
}

// tokenHash checks a hex SHA-256; a plain token pasted by mistake is refused
// so that it does not sit in the file.
func (v *validation) tokenHash(field, h string) {
	if h == "" {
		return
	}
	if b, err := hex.DecodeString(h); err != nil || len(b) != sha256.Size {
		v.add(field, "expected the 64 hex digits of a SHA-256, not the token itself; `meridian token` prints a token and its hash")
	}
}

func (v *validation) positive(field string, d time.Duration) {
	if d < 0 {
		v.add(field, "%s is negative; expected a positive duration", d)
	}
}

func (v *validation) dns(d *DNS, pops []PoP) {
	v.listen("dns.listen", d.Listen)
	if d.Metrics != "" {
		v.listen("dns.metrics", d.Metrics)
	}
	if d.Answers < 1 || d.Answers > 8 {
		v.add("dns.answers", "%d is out of range [1,8]", d.Answers)
	}
	if d.RRL.ResponsesPerSecond < 0 {
		v.add("dns.rrl.responses_per_second", "%v is negative; use 0 to turn RRL off", d.RRL.ResponsesPerSecond)
	}
	if d.RRL.Slip < 0 || d.RRL.Slip > 10 {
		v.add("dns.rrl.slip", "%d is out of range [0,10]", d.RRL.Slip)
	}
	if d.RRL.IPv4Prefix < 0 || d.RRL.IPv4Prefix > 32 {
		v.add("dns.rrl.ipv4_prefix", "%d is out of range [0,32]", d.RRL.IPv4Prefix)
	}
	if d.RRL.IPv6Prefix < 0 || d.RRL.IPv6Prefix > 128 {
		v.add("dns.rrl.ipv6_prefix", "%d is out of range [0,128]", d.RRL.IPv6Prefix)
	}
	if d.QueryLogSample < 0 {
		v.add("dns.query_log_sample", "%d is negative; use 0 for no query log", d.QueryLogSample)
	}
	if _, err := d.NSIDBytes(); err != nil {
		v.add("dns.nsid", "%v", err)
	}
	if len(d.Zones) == 0 {
		v.add("dns.zones", "missing; the DNS server needs at least one zone (apex, names)")
	}
	apexes := map[string]bool{}
	for i, z := range d.Zones {
		f := fmt.Sprintf("dns.zones[%d]", i)
		if z.Apex == "" || !hostPattern.MatchString(z.Apex) {
			v.add(f+".apex", "%q is not a domain name; expected a zone such as example.com", z.Apex)
			continue
		}
		if apexes[z.Apex] {
			v.add(f+".apex", "zone %s is listed twice", z.Apex)
		}
		apexes[z.Apex] = true
		if len(z.Names) == 0 {
			v.add(f+".names", "missing; list the names answered with the nearest PoP, such as www")
		}
		served := map[string]bool{}
		for j, n := range z.Names {
			fq, ok := inZone(n, z.Apex)
			if !ok {
				v.add(fmt.Sprintf("%s.names[%d]", f, j), "%s is outside zone %s; use a name under the apex", n, z.Apex)
			}
			served[fq] = true
		}
		for alias, target := range z.Aliases {
			af := fmt.Sprintf("%s.aliases.%s", f, alias)
			afq, ok := inZone(alias, z.Apex)
			if !ok {
				v.add(af, "alias %s is outside zone %s", alias, z.Apex)
			} else if afq == z.Apex {
				v.add(af, "the apex cannot be an alias (a CNAME cannot stand beside SOA and NS)")
			} else if served[afq] {
				v.add(af, "%s is both a served name and an alias; pick one", alias)
			}
			if tfq, ok := inZone(target, z.Apex); !ok || !served[tfq] {
				v.add(af, "target %q is not a served name of this zone", target)
			}
		}
		for n, ids := range z.PoPs {
			pf := fmt.Sprintf("%s.pops.%s", f, n)
			if fq, ok := inZone(n, z.Apex); !ok || !served[fq] {
				v.add(pf, "%s is not one of the zone's names; list a served name", n)
			}
			if len(ids) == 0 {
				v.add(pf, "no PoPs; list the ids of the PoPs that may answer %s", n)
			}
			for k, id := range ids {
				if !slices.ContainsFunc(pops, func(p PoP) bool { return p.ID == id }) {
					v.add(fmt.Sprintf("%s[%d]", pf, k), "%q is not the id of one of the pops", id)
				}
			}
		}
		v.ttl(f+".ttl", z.TTL)
		v.zoneRecords(f, z, served)
		for j, ns := range z.NS {
			nf := fmt.Sprintf("%s.ns[%d]", f, j)
			name := strings.ToLower(strings.TrimSuffix(ns.Name, "."))
			if !hostPattern.MatchString(name) {
				v.add(nf+".name", "%q is not a host name", ns.Name)
			}
			if _, inside := inZone(name, z.Apex); inside && len(ns.Addresses) == 0 {
				v.add(nf+".addresses", "missing; %s is inside the zone, so it needs glue addresses", ns.Name)
			}
			for k, a := range ns.Addresses {
				if _, err := netip.ParseAddr(a); err != nil {
					v.add(fmt.Sprintf("%s.addresses[%d]", nf, k), "%q is not an IP address", a)
				}
			}
		}
		for _, t := range []struct {
			field string
			d     time.Duration
		}{{"ttl", z.SOA.TTL}, {"refresh", z.SOA.Refresh}, {"retry", z.SOA.Retry}, {"expire", z.SOA.Expire}, {"minimum", z.SOA.Minimum}} {
			v.ttl(f+".soa."+t.field, t.d)
		}
	}
	g := d.Geo
	v.region("dns.geo.default_region", g.DefaultRegion)
	cidrs := map[netip.Prefix]int{}
	for i, e := range g.Table {
		f := fmt.Sprintf("dns.geo.table[%d]", i)
		if p, err := netip.ParsePrefix(e.CIDR); err != nil {
			v.add(f+".cidr", "%q is not a CIDR block; expected e.g. 203.0.113.0/24", e.CIDR)
		} else if p.Masked() != p {
			v.add(f+".cidr", "%s has host bits set; did you mean %s?", e.CIDR, p.Masked())
		} else if first, dup := cidrs[canonPrefix(p)]; dup {
			v.add(f+".cidr", "%s is already listed as dns.geo.table[%d] (%s); a network has one location: delete one of the two", e.CIDR, first, geoWhere(g.Table[first]))
		} else {
			cidrs[canonPrefix(p)] = i
		}
		switch {
		case e.Region != "" && (e.Lat != nil || e.Lon != nil):
			v.add(f, "set region or lat/lon, not both")
		case e.Region != "":
			v.region(f+".region", e.Region)
		case e.Lat == nil || e.Lon == nil:
			v.add(f, "missing location; set region, or lat and lon")
		}
		v.latLon(f, e.Lat, e.Lon)
	}
	v.readable("dns.geo.mmdb", g.MMDB)
	h := d.Health
	if h.BeaconInterval < 10*time.Millisecond {
		v.add("dns.health.beacon_interval", "%s is too short; expected at least 10ms", h.BeaconInterval)
	}
	if h.MissedBeacons < 1 || h.MissedBeacons > 100 {
		v.add("dns.health.missed_beacons", "%d is out of range [1,100]", h.MissedBeacons)
	}
	if h.ProbeInterval < 0 {
		v.add("dns.health.probe_interval", "%s is negative; expected a duration like 2s", h.ProbeInterval)
	}
}

// pluralVerb picks one or many by n.
func pluralVerb(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// canonPrefix writes an IPv4-mapped IPv6 prefix as the IPv4 prefix it is,
// so that the two spellings of one network compare equal.
func canonPrefix(p netip.Prefix) netip.Prefix {
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		return netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p
}

// geoWhere names a geo table row's location for messages.
func geoWhere(e GeoEntry) string {
	if e.Region != "" {
		return "region " + e.Region
	}
	if e.Lat != nil && e.Lon != nil {
		return fmt.Sprintf("lat %v, lon %v", *e.Lat, *e.Lon)
	}
	return "no location"
}

// ttl checks a DNS TTL: whole seconds within RFC 2181's 2^31-1.
func (v *validation) ttl(field string, d time.Duration) {
	if v.zero[field] {
		// Defaults turned the 0 into the default TTL; say so rather than
		// answer with a TTL the file did not ask for.
		d = 0
	}
	if d < time.Second || d > (1<<31-1)*time.Second {
		v.add(field, "%s is out of range [1s, 68y]; DNS TTLs are whole seconds", d)
	} else if d%time.Second != 0 {
		v.add(field, "%s is not a whole number of seconds", d)
	}
}

// inZone turns a relative or absolute name into its fully qualified,
// lower-case form and tells whether it lies in the zone.
func inZone(name, apex string) (string, bool) {
	n := strings.ToLower(strings.TrimSuffix(name, "."))
	switch {
	case n == "@" || n == apex:
		return apex, true
	case n == "*":
		// The wildcard under the apex (RFC 4592): every name of the zone
		// that does not exist itself.
		return "*." + apex, true
	case strings.HasSuffix(n, "."+apex):
		return n, true
	case !strings.Contains(n, "."):
		return n + "." + apex, hostPattern.MatchString(n)
	}
	return n, false
}

// FQDN returns name (relative to apex, absolute, or "@") fully qualified,
// lower-case and without the trailing dot.
func FQDN(name, apex string) string {
	n, _ := inZone(name, apex)
	return n
}

// Location returns the PoP's coordinates: lat/lon when set, else its region's.
func (p PoP) Location() (lat, lon float64) {
	if p.Lat != nil && p.Lon != nil {
		return *p.Lat, *p.Lon
	}
	r, _ := region.Lookup(p.Region)
	return r.Lat, r.Lon
}
