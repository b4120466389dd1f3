// Package config is the ops-facing YAML model of a Meridian deployment: PoPs,
// sites and their origins, the DNS zone, NATS and the cache tiers.
//
// It owns parsing (strict: unknown keys and wrong types are errors),
// defaults (all in defaults.go) and validation, and reports every problem as
// "file:line: field: what was expected". It starts nothing and opens no
// sockets; cmd/meridian turns a Config into running components.
//
// The doc comment of each field is the user documentation; deploy/reference.yaml
// shows every field with its default.
package config

import (
	"errors"
	"net/netip"
	"strings"
	"time"
)

// Config is one YAML file: a whole dev cluster, or one PoP or DNS node of a
// real deployment.
type Config struct {
	// DataDir holds local state: JetStream files of the embedded NATS server and
	// per-PoP cache files. Default "./.meridian".
	DataDir string `yaml:"data_dir"`
	// Log sets the log level and format.
	Log Log `yaml:"log"`
	// NATS says how to reach the message bus (embedded server or external URLs).
	NATS NATS `yaml:"nats"`
	// PoPs are the points of presence this file describes.
	PoPs []PoP `yaml:"pops"`
	// Sites are served by every PoP, matched by Host.
	Sites []Site `yaml:"sites"`
	// DNS configures the authoritative GeoDNS server. Optional for a PoP-only file.
	DNS *DNS `yaml:"dns"`
	// Dev configures extras of `meridian dev` (the demo origin).
	Dev Dev `yaml:"dev"`
	// Admin configures who may change things through the PoPs' admin API.
	Admin Admin `yaml:"admin"`
	// TLS holds fleet-wide HTTPS settings (ACME, unknown server names).
	TLS TLS `yaml:"tls"`
	// Plugins chooses how site owners' wasm plugins run.
	Plugins Plugins `yaml:"plugins"`
	// Shutdown says how a PoP stops on SIGTERM or SIGINT.
	Shutdown Shutdown `yaml:"shutdown"`
}

// Shutdown says how a PoP stops. It is read when the stop begins, so a
// reload changes it.
type Shutdown struct {
	// Drain is how long the PoPs keep serving while reporting unhealthy
	// (health beacons and /healthz) before they stop accepting, so that the
	// DNS sends clients elsewhere first: about the DNS answers' TTL. A second
	// signal ends it early. Default 0 (stop at once).
	Drain time.Duration `yaml:"drain"`
	// Grace is how long requests in flight get to finish once the PoPs stop
	// accepting; what is left is then cut off. Default 10s.
	Grace time.Duration `yaml:"grace"`
}

// Plugins chooses the host that runs site owners' plugins.
type Plugins struct {
	// Engine is native (Meridian's own Extism-ABI host on wazero, about ten
	// times cheaper per call) or sdk (github.com/extism/go-sdk, the reference
	// host). Default native.
	Engine string `yaml:"engine"`
	// SDKSites run on the go-sdk whatever Engine says, e.g. to compare a
	// site's plugins against the reference host.
	SDKSites []string `yaml:"sdk_sites"`
	// Timeout bounds each plugin call (one on_request or on_response): past
	// it the call is stopped and fails as a timeout. Default 50ms.
	Timeout time.Duration `yaml:"timeout"`
	// Memory caps each plugin instance's linear memory (and, separately, its
	// Extism kernel's): in whole 64 KiB pages, from 1MiB to 4GiB. A plugin
	// that needs more fails as out of memory. Default 32MiB.
	Memory ByteSize `yaml:"memory"`
}

// TLS holds fleet-wide HTTPS settings. Certificates are per site
// (sites[].tls); PoPs serve HTTPS on pops[].https.
type TLS struct {
	// UnknownSNI is the answer to a server name no site claims: "reject"
	// (handshake failure) or "default" (the default site's certificate).
	// Default reject.
	UnknownSNI string `yaml:"unknown_sni"`
	// ACME configures automatic certificates for sites with tls.acme.
	ACME ACME `yaml:"acme"`
}

// ACME configures the certificate authority for automatic certificates.
// Certificates and ACME accounts are kept in JetStream, so one PoP orders
// and every PoP serves the result.
type ACME struct {
	// Directory is the CA's ACME directory URL. Default Let's Encrypt.
	Directory string `yaml:"directory"`
	// Email receives the CA's expiry notices.
	Email string `yaml:"email"`
	// CAFile is a PEM bundle trusted for the directory's HTTPS (a private
	// CA, or a test CA such as pebble's). Default: the system roots.
	CAFile string `yaml:"ca_file"`
}

// Admin holds the admin API's credentials. Tokens are stored as SHA-256
// hashes so a leaked config file leaks no token; `meridian token` makes a
// token and its hash.
type Admin struct {
	// OpsTokenSHA256 is the hex SHA-256 of the ops token, which may act on
	// every site and on the PoP itself (drain). Empty: only reads are allowed.
	OpsTokenSHA256 string `yaml:"ops_token_sha256"`
}

// Log configures log/slog output.
type Log struct {
	// Level is one of debug, info, warn, error. Default info.
	Level string `yaml:"level"`
	// Format is text or json. Default text.
	Format string `yaml:"format"`
}

// NATS says how this process reaches NATS.
type NATS struct {
	// Embedded, when set, runs a NATS server with JetStream inside this
	// process (state under data_dir/nats) and connects to it. Set either
	// embedded or urls, not both.
	Embedded *EmbeddedNATS `yaml:"embedded"`
	// URLs of an external NATS cluster, e.g. nats://nats-1:4222.
	URLs []string `yaml:"urls"`
	// Credentials is a NATS .creds file (JWT + NKey) for an external cluster.
	Credentials string `yaml:"credentials"`
	// TLS configures TLS to an external NATS cluster with a private CA or
	// client certificates. Users and passwords go in the URLs
	// (nats://user:pass@host:4222); they are never logged.
	TLS NATSTLS `yaml:"tls"`
	// StreamReplicas is how many copies JetStream keeps of the state log
	// (1 on a single server, 3 on a cluster). Default 1.
	StreamReplicas int `yaml:"stream_replicas"`
}

// NATSTLS holds the files for TLS to NATS.
type NATSTLS struct {
	// CAFile is a PEM bundle of the CAs that sign the servers' certificates.
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are a client certificate for mutual TLS.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// EmbeddedNATS configures the in-process NATS server.
type EmbeddedNATS struct {
	// Listen is the client address, host:port. Default 127.0.0.1:4222.
	Listen string `yaml:"listen"`
}

// PoP is one point of presence: an HTTP proxy with its cache.
type PoP struct {
	// ID names the PoP in beacons, logs and metrics: lower-case letters, digits, '-'.
	ID string `yaml:"id"`
	// Region is a region of the built-in catalog (`meridian regions` lists
	// them); it gives the PoP's coordinates. Leave empty and set lat/lon for a
	// location outside the catalog.
	Region string `yaml:"region"`
	// Lat and Lon override the region's coordinates, in decimal degrees.
	Lat *float64 `yaml:"lat"`
	Lon *float64 `yaml:"lon"`
	// HTTP is the address the proxy listens on, host:port.
	HTTP string `yaml:"http"`
	// Admin is the address of the admin API (health, metrics, purge), host:port.
	Admin string `yaml:"admin"`
	// Addresses are the IPs the DNS hands out for this PoP (A and AAAA).
	// Default: the host of http, when it is an IP.
	Addresses []string `yaml:"addresses"`
	// HTTPS is the address HTTPS (HTTP/1.1 and HTTP/2) listens on, host:port.
	// Empty: no HTTPS at this PoP.
	HTTPS string `yaml:"https"`
	// HTTP3 serves HTTP/3 over QUIC on the same port as https (UDP) and
	// advertises it with Alt-Svc. Default false.
	HTTP3 bool `yaml:"http3"`
	// ProxyProtocol reads each client's address from a PROXY protocol
	// header (v1 or v2) on http and https, for a PoP behind an L4 load
	// balancer (a Kubernetes Service, an AWS NLB, HAProxy in TCP mode)
	// that would otherwise be seen as every client: in the access log,
	// X-Forwarded-For to the origin, and plugins' geo and rate limits.
	// Like nginx's `listen ... proxy_protocol` with set_real_ip_from.
	// HTTP/3 (QUIC over UDP) cannot carry the header, so it cannot be set
	// together with http3. Absent: off, and no connection pays for it.
	ProxyProtocol *ProxyProtocol `yaml:"proxy_protocol"`
	// RealIP takes each request's client from the header that trusted L7
	// proxies in front of the PoP add (an AWS ALB, a GCP HTTPS load
	// balancer, a Kubernetes ingress, a CDN), like nginx's
	// set_real_ip_from, real_ip_header and real_ip_recursive on: the access
	// log, X-Forwarded-For to the origin and plugins' geo and rate limits
	// then see the client, not the proxy. With proxy_protocol too, the
	// PROXY header is read first, and its address is the one checked
	// against real_ip.trusted. Both change on a reload. Absent: off.
	RealIP *RealIP `yaml:"real_ip"`
	// Capacity is the load, in requests per second, at which the DNS starts
	// sending part of this PoP's clients to the next nearest. 0 means unlimited.
	Capacity float64 `yaml:"capacity"`
	// FastHits has the cache answer fresh plain-HTTP/1.1 hits of sites
	// without plugins itself instead of through Go's HTTP server (about half
	// the CPU per hit). Default true; false is the escape hatch that sends
	// every request through the full handler chain.
	FastHits *bool `yaml:"fast_hits"`
	// Cache sizes this PoP's cache tiers.
	Cache CacheTiers `yaml:"cache"`
}

// ProxyProtocol says who may send PROXY protocol headers to a PoP.
type ProxyProtocol struct {
	// Trusted are the balancers' addresses: IPs or CIDR blocks, e.g.
	// 10.0.0.0/8 (nginx's set_real_ip_from). Only these may send a header;
	// a header from anyone else is refused (the connection is closed and
	// counted in meridian_proxy_protocol_rejected_total). A client that
	// connects directly, without a header, is served with its own address.
	Trusted []string `yaml:"trusted"`
	// Required refuses a trusted peer's connection that does not start
	// with a header (HAProxy's accept-proxy). Default false: it is served
	// with the balancer's own address.
	Required bool `yaml:"required"`
	// HeaderTimeout bounds the wait for the header, in the connection's
	// own goroutine (a silent peer never holds other clients back): a
	// trusted peer still silent then is closed when required, and a peer
	// cut off mid-header always. Default 10s.
	HeaderTimeout time.Duration `yaml:"header_timeout"`
}

// TrustedPrefixes returns Trusted as prefixes, a lone IP as a /32 or
// /128 block. Entries that do not parse are left out (validation refuses
// them).
func (p *ProxyProtocol) TrustedPrefixes() []netip.Prefix {
	if p == nil {
		return nil
	}
	out := make([]netip.Prefix, 0, len(p.Trusted))
	for _, s := range p.Trusted {
		if pf, err := parseTrusted(s); err == nil {
			out = append(out, pf)
		}
	}
	return out
}

// parseTrusted parses an IP or a CIDR block.
func parseTrusted(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		return netip.ParsePrefix(s)
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	if a.Zone() != "" {
		return netip.Prefix{}, errors.New("an address with a zone")
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// CacheTiers sizes a PoP's cache: L1 in memory, L2 on local disk, L3 in a
// regional S3-compatible store, walked in that order before the origin.
type CacheTiers struct {
	// L1Size is the memory tier's byte budget, e.g. 512MiB. Default 512MiB.
	L1Size ByteSize `yaml:"l1_size"`
	// L1LargeBodies is the part of L1Size that holds bodies of 8KiB and
	// more outside BigCache, shared by every hit without a copy (BigCache
	// copies an entry on each read). Unset: half of l1_size when l1_size
	// is at least 64MiB, else none. 0B keeps every body in BigCache, which
	// suits a cache of small objects only.
	L1LargeBodies *ByteSize `yaml:"l1_large_bodies"`
	// L2 is the local disk tier; it keeps the working set across restarts.
	L2 L2 `yaml:"l2"`
	// L3 is the regional object-store tier, shared by a region's PoPs.
	// Without an endpoint there is no L3.
	L3 L3 `yaml:"l3"`
}

// L2 configures the disk tier.
type L2 struct {
	// Disabled turns the disk tier off.
	Disabled bool `yaml:"disabled"`
	// Dir holds the objects and the index. Default data_dir/pops/<id>/l2.
	Dir string `yaml:"dir"`
	// Size is the byte budget. Default 10GiB.
	Size ByteSize `yaml:"size"`
}

// L3 configures the object-store tier.
type L3 struct {
	// Endpoint is the S3-compatible service's URL, or "embedded" for the
	// server `meridian dev` runs in-process. Empty: no L3.
	Endpoint string `yaml:"endpoint"`
	// Bucket holds the objects. Default meridian-cache.
	Bucket string `yaml:"bucket"`
	// Prefix separates regions sharing a bucket. Default the PoP's region.
	Prefix string `yaml:"prefix"`
	// Region signs the requests. Default us-east-1.
	Region string `yaml:"region"`
	// AccessKey and SecretKeyFile are the credentials; the secret is read
	// from a file so it stays out of the configuration.
	AccessKey     string `yaml:"access_key"`
	SecretKeyFile string `yaml:"secret_key_file"`
	// Size is the byte budget kept by the sweeper. Default 100GiB.
	Size ByteSize `yaml:"size"`
	// Timeout bounds one read; a failing store is skipped (circuit breaker). Default 2s.
	Timeout time.Duration `yaml:"timeout"`
	// Sweep makes this PoP enforce the budget; enable it on one PoP per region.
	Sweep bool `yaml:"sweep"`
}

// Site is one site owner's property: host names and origins.
type Site struct {
	// Name identifies the site in the admin API, metrics and plugin tokens.
	Name string `yaml:"name"`
	// Hosts are the host names served, matched case-insensitively and without
	// the port.
	Hosts []string `yaml:"hosts"`
	// Default makes this site answer requests whose Host matches no site. At
	// most one site may be the default; without one such requests get 421.
	Default bool `yaml:"default"`
	// Origins are the site's origin servers, tried round-robin by weight,
	// skipping ones that fail to connect or their health checks; backups
	// last.
	Origins []Origin `yaml:"origins"`
	// Routes send the requests whose path matches to some of the origins
	// only (CloudFront's behaviours, an nginx location with its own
	// upstream): the first route whose path matches applies, and a
	// request no route matches goes to the origins no route names.
	// Failover stays among the route's origins. A plugin's choice of
	// origin still wins.
	Routes []Route `yaml:"routes"`
	// HealthCheck probes each origin in the background; one that fails
	// its checks gets no requests until it passes them again.
	HealthCheck HealthCheck `yaml:"health_check"`
	// Headers change header fields: on responses to the site's clients
	// (security headers, removing what the origin leaks) and on requests
	// to its origins (a shared secret, dropping cookies).
	Headers SiteHeaders `yaml:"headers"`
	// Timeouts bound each origin request.
	Timeouts Timeouts `yaml:"timeouts"`
	// OriginTLS configures TLS to https origins: trust, SNI, pinning, mTLS.
	OriginTLS OriginTLS `yaml:"origin_tls"`
	// Cache holds per-site cache options.
	Cache SiteCache `yaml:"cache"`
	// ErrorPage is an HTML file (at most 64 KiB) the PoP answers with,
	// instead of its plain-text page, when it answers a browser for the
	// site itself: the origin failed or timed out (502, 504), a
	// fail-closed plugin failed (503). Clients that
	// do not accept text/html (APIs, scripts) keep the plain text, which
	// names the PoP and the failure. {{status}}, {{status_text}},
	// {{request_id}} and {{pop}} in the file are replaced. Read at start
	// and on each reload. Default: none.
	ErrorPage string `yaml:"error_page"`
	// OwnerTokenSHA256 is the hex SHA-256 of the site owner's token, which may
	// purge and deploy plugins for this site only.
	OwnerTokenSHA256 string `yaml:"owner_token_sha256"`
	// TLS says where the site's certificate comes from. Without it the site
	// is served over plain HTTP only.
	TLS *SiteTLS `yaml:"tls"`
}

// SiteTLS is a site's certificate source and HTTPS policy. Exactly one of
// cert_file/key_file, acme or dev_ca.
type SiteTLS struct {
	// CertFile and KeyFile are PEM files (chain leaf first, and its key),
	// re-read when they change and on SIGHUP.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ACME obtains and renews the certificate automatically (tls.acme).
	ACME bool `yaml:"acme"`
	// DevCA issues the certificate from a local CA made under
	// data_dir/tls, for development: clients need --cacert data_dir/tls/ca.pem.
	DevCA bool `yaml:"dev_ca"`
	// RedirectHTTP answers plain-HTTP requests with a redirect to HTTPS
	// (ACME challenges excepted). Every PoP of the file needs an https
	// address: one without would serve the site over plain HTTP.
	RedirectHTTP bool `yaml:"redirect_http"`
	// HSTS sends Strict-Transport-Security over HTTPS when MaxAge > 0.
	HSTS HSTS `yaml:"hsts"`
}

// HSTS configures Strict-Transport-Security.
type HSTS struct {
	// MaxAge, e.g. 8760h; 0 sends no header.
	MaxAge time.Duration `yaml:"max_age"`
	// IncludeSubdomains and Preload add those directives.
	IncludeSubdomains bool `yaml:"include_subdomains"`
	Preload           bool `yaml:"preload"`
}

// Origin is one origin server.
type Origin struct {
	// Name lets a site's plugin send a request to this origin by name.
	Name string `yaml:"name"`
	// URL is the origin's base URL, http:// or https://, with an optional
	// path prefixed to every request's (CloudFront's origin path):
	// https://bucket.example/site-v2 fetches /a.css as /site-v2/a.css.
	URL string `yaml:"url"`
	// HostHeader, when set, replaces the client's Host on requests to this
	// origin (for origins that serve under another name). Default: keep it.
	HostHeader string `yaml:"host_header"`
	// Weight is the origin's share of requests relative to the others of
	// its route (nginx's weight): 3 against 1 sends it three in four.
	// 0 counts as 1; at most 100.
	Weight int `yaml:"weight"`
	// MaxConns bounds the requests each PoP has in flight to this origin
	// at once (nginx's max_conns, Fastly's max_conn); at the bound the
	// origin is skipped, and when every origin of the route is, the PoP
	// answers 503 (origin-busy) rather than piling on. 0: no bound.
	MaxConns int `yaml:"max_conns"`
	// Backup makes the origin take requests only while every other origin
	// of its route (or of the unrouted ones) is down: a static copy of the
	// site, a distant region (nginx's backup).
	Backup bool `yaml:"backup"`
}

// OriginTLS configures TLS towards a site's https origins.
type OriginTLS struct {
	// ServerName is sent as SNI and verified; default the origin URL's host.
	ServerName string `yaml:"server_name"`
	// CAFile is a PEM bundle trusted instead of the system roots.
	CAFile string `yaml:"ca_file"`
	// ClientCertFile and ClientKeyFile are presented to origins that ask (mTLS).
	ClientCertFile string `yaml:"client_cert_file"`
	ClientKeyFile  string `yaml:"client_key_file"`
	// PinSHA256 are base64 SHA-256 digests of SubjectPublicKeyInfo; when set
	// the origin's chain must contain one.
	PinSHA256 []string `yaml:"pin_sha256"`
	// InsecureSkipVerify accepts any certificate (pins are still checked).
	// Only for origins on a trusted network.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

// Timeouts bound one origin request.
type Timeouts struct {
	// Connect bounds the TCP (and TLS) connect. Default 5s.
	Connect time.Duration `yaml:"connect"`
	// Header bounds the wait for the response headers. Default 30s.
	Header time.Duration `yaml:"header"`
	// Idle aborts a response body when the origin sends no byte for this
	// long (nginx's proxy_read_timeout, 60s there too); the client gets a
	// truncated response, counted as outcome="body_error". Default 60s.
	Idle time.Duration `yaml:"idle"`
	// Total bounds the whole exchange, body included. Default 5m.
	Total time.Duration `yaml:"total"`
}

// SiteCache holds per-site cache options.
type SiteCache struct {
	// IgnoreQuery lists query parameters left out of the cache key (utm_source, ...).
	IgnoreQuery []string `yaml:"ignore_query"`
	// SortQuery sorts query parameters in the cache key so that ?a=1&b=2 and
	// ?b=2&a=1 share an entry. Default false (the origin may care about order).
	SortQuery bool `yaml:"sort_query"`
	// MaxL1Object is the largest response kept in the memory tier. Default 4MiB.
	MaxL1Object ByteSize `yaml:"max_l1_object"`
	// StaleIfError serves a stored copy up to this long past its freshness
	// when the origin fails (5xx, refused, timed out) and its response set
	// no stale-if-error of its own; must-revalidate still forbids it
	// (nginx's proxy_cache_use_stale error timeout http_5xx). Default 0: only
	// what the origin's stale-if-error allows.
	StaleIfError time.Duration `yaml:"stale_if_error"`
	// StaleWhileRevalidate serves a stored copy up to this long past its
	// freshness while one background request revalidates it, when its
	// response set no stale-while-revalidate of its own (Varnish's grace,
	// nginx's proxy_cache_use_stale updating with
	// proxy_cache_background_update); must-revalidate, no-cache and a
	// soft purge still forbid it. Default 0: only what the origin's
	// stale-while-revalidate allows.
	StaleWhileRevalidate time.Duration `yaml:"stale_while_revalidate"`
	// DefaultTTL is how long a response stays fresh when the origin says
	// nothing about it (no s-maxage, max-age or Expires, no no-cache), for
	// statuses a cache may store without being told (200, 301, 404, ...):
	// Varnish's default_ttl, nginx's proxy_cache_valid, a CDN's default
	// TTL. It replaces the Last-Modified heuristic and never makes a
	// private, no-store, Set-Cookie or authorised response cacheable.
	// Default 0: only the RFC 9111 heuristic.
	DefaultTTL time.Duration `yaml:"default_ttl"`
	// Compress compresses text-like responses (HTML, CSS, JavaScript,
	// JSON, SVG, fonts, ...; at least 1 KiB or of unknown length) that the
	// origin sent uncompressed: cacheable ones once when they are fetched,
	// in brotli, zstd or gzip (the first the client accepts), stored so
	// (CloudFront's "compress objects automatically"), so that an origin
	// such as an S3 bucket keeps serving plain bytes; the others for each
	// client as they stream through, in zstd, gzip or brotli. They gain
	// Vary: Accept-Encoding and a weak ETag; Cache-Control: no-transform
	// is respected. Default false.
	Compress bool `yaml:"compress"`
	// ClientCacheControl says what the cache does with a client's
	// Cache-Control and Pragma request fields: "ignore" (the default, as
	// nginx's proxy_cache, Varnish, Fastly, Cloudflare and CloudFront do)
	// removes them before the site's plugins and cache, so no client can
	// force origin fetches with no-cache or max-age=0 (only-if-cached is
	// kept; plugins may still set directives); "honor" applies them as RFC
	// 9111 describes.
	ClientCacheControl string `yaml:"client_cache_control"`
	// Rules give paths their own cache behaviour, first match first:
	// CloudFront's cache behaviours, Cloudflare's cache rules, an nginx
	// location with its own proxy_cache_valid. A request no rule matches
	// gets the settings above.
	Rules []CacheRule `yaml:"rules"`
}

// SiteHeaders are a site's header changes, nginx's add_header and
// proxy_set_header, CloudFront's response headers policies.
type SiteHeaders struct {
	// Response applies to what clients get from the cache and the origin,
	// the PoP's 502/504 pages for the site included, on both the fast
	// path and net/http; the site's plugins run after and see it.
	Response HeaderChanges `yaml:"response"`
	// Request applies to every request sent to the site's origins.
	Request HeaderChanges `yaml:"request"`
}

// HeaderChanges set and remove header fields.
type HeaderChanges struct {
	// Set replaces each field (or adds it): name to value.
	Set map[string]string `yaml:"set"`
	// Remove drops each field.
	Remove []string `yaml:"remove"`
}

// HealthCheck is a site's active origin health checks (nginx's
// health_check, HAProxy's httpchk): every PoP sends GET Path to each
// origin every Interval; Fails failures in a row (a status outside
// 200-399, no answer within Timeout) take the origin out, Passes passes in
// a row put it back. Passive health (a failed request takes its origin
// out for 10s) applies with or without them.
type HealthCheck struct {
	// Path is requested, e.g. /healthz. Empty: no active checks.
	Path string `yaml:"path"`
	// Host is the probes' Host header for origins without host_header.
	// Default: the site's first host that is not a wildcard.
	Host string `yaml:"host"`
	// Interval between probes of one origin. Default 5s.
	Interval time.Duration `yaml:"interval"`
	// Timeout of one probe, connect included. Default 2s.
	Timeout time.Duration `yaml:"timeout"`
	// Fails and Passes are the thresholds. Default 2 each.
	Fails  int `yaml:"fails"`
	Passes int `yaml:"passes"`
}

// Route sends the requests whose path matches Path to the named origins.
type Route struct {
	// Path is matched against the path sent to the origin (after plugins'
	// rewrites) as cache rules' paths are: /api/*, *.png. Required.
	Path string `yaml:"path"`
	// Origins are names of the site's origins (origins[].name). Required.
	Origins []string `yaml:"origins"`
}

// CacheRule is the cache behaviour of the paths one pattern matches.
type CacheRule struct {
	// Path is matched against the request path as sent (percent-encoded,
	// case-sensitive, without the query; after plugins' rewrites): "*"
	// matches any run of characters, "/" included, e.g. /static/*, *.css,
	// /robots.txt. Required.
	Path string `yaml:"path"`
	// Bypass sends matching requests to the origin, neither looked up nor
	// stored (Cache-Status: fwd=bypass; detail=path-rule).
	Bypass bool `yaml:"bypass"`
	// TTL keeps matching responses fresh this long whatever their
	// Cache-Control or Expires says (an edge TTL overriding the origin),
	// for successes and redirects (200, 203, 204, 300, 301, 308) only:
	// errors keep their own. It never makes a private, no-store,
	// cookie-setting or authorised response cacheable; a plugin's TTL wins.
	TTL time.Duration `yaml:"ttl"`
	// DefaultTTL replaces the site's cache.default_ttl for matching
	// responses.
	DefaultTTL time.Duration `yaml:"default_ttl"`
	// Headers change the response fields clients get for matching paths,
	// on top of the site's headers.response (the rule's win where both
	// name a field): a Cache-Control set here is what browsers get, a
	// browser TTL apart from the cache's own.
	// StaleIfError and StaleWhileRevalidate replace the site's
	// cache.stale_if_error and cache.stale_while_revalidate for matching
	// responses; 0 keeps the site's.
	StaleIfError         time.Duration `yaml:"stale_if_error"`
	StaleWhileRevalidate time.Duration `yaml:"stale_while_revalidate"`
	// Redirect answers matching requests with a redirect there instead
	// (Cloudflare's forwarding URLs, nginx's return): a path such as
	// /new/$1 or an http(s) URL, $1 to $9 being what path's stars matched;
	// the query is kept unless the target has one.
	Redirect string `yaml:"redirect"`
	// RedirectStatus is 301 (the default), 302, 303, 307 or 308.
	RedirectStatus int           `yaml:"redirect_status"`
	Headers        HeaderChanges `yaml:"headers"`
}

// DNS configures the authoritative GeoDNS server.
type DNS struct {
	// Listen is the UDP and TCP address, host:port. Default 127.0.0.1:5353.
	Listen string `yaml:"listen"`
	// Metrics is the HTTP address serving /metrics and /healthz. Empty: off.
	Metrics string `yaml:"metrics"`
	// Zones are the zones served authoritatively.
	Zones []Zone `yaml:"zones"`
	// Geo locates clients.
	Geo Geo `yaml:"geo"`
	// Health sets how PoP health is judged.
	Health Health `yaml:"health"`
	// Answers is how many PoPs (nearest healthy first) each answer holds. Default 1.
	Answers int `yaml:"answers"`
	// RRL limits responses per client prefix over UDP, as BIND and Knot do,
	// so the server cannot be used to flood a spoofed victim. Off by default.
	RRL RRL `yaml:"rrl"`
	// QueryLogSample logs one query in this many (0: no query log).
	QueryLogSample int `yaml:"query_log_sample"`
	// NSID names this DNS node (RFC 5001) in answers to queries that ask
	// for it (`dig +nsid`), so that operators running several nodes behind
	// one anycast address, or on several addresses, can tell which one
	// answered: a text of at most 128 bytes, sent as written, or `hostname`
	// for the machine's host name (read at start and on each reload). The
	// same text answers `dig CH TXT id.server` (RFC 4892). Empty: off,
	// nothing is sent and CH queries are refused.
	NSID string `yaml:"nsid"`
}

// RRL configures DNS response rate limiting.
type RRL struct {
	// ResponsesPerSecond per client prefix; 0 turns RRL off.
	ResponsesPerSecond float64 `yaml:"responses_per_second"`
	// Slip sends every Slip-th limited response truncated (so real clients
	// retry over TCP) and drops the others. Default 2.
	Slip int `yaml:"slip"`
	// NoSlip drops every limited response instead.
	NoSlip bool `yaml:"no_slip"`
	// IPv4Prefix and IPv6Prefix group clients. Defaults 24 and 56.
	IPv4Prefix int `yaml:"ipv4_prefix"`
	IPv6Prefix int `yaml:"ipv6_prefix"`
}

// Zone is one authoritative zone.
type Zone struct {
	// Apex is the zone's name, e.g. example.test.
	Apex string `yaml:"apex"`
	// Names are the served names answered with the nearest PoP, relative to
	// the apex ("www") or absolute ("www.example.test"); "@" is the apex.
	Names []string `yaml:"names"`
	// Aliases map a name to a served name, answered with a CNAME.
	Aliases map[string]string `yaml:"aliases"`
	// PoPs keep served names to some PoPs (geofencing: data that must stay
	// in a region, a name served from a few sites): name (as in names) to
	// the ids of the PoPs that may answer it, the nearest healthy one
	// first as for any name; when none is healthy, the nearest of them.
	// A name not listed may be answered by every PoP.
	PoPs map[string][]string `yaml:"pops"`
	// TTL of PoP answers, 1s to 68 years (0 is refused). Default 30s.
	TTL time.Duration `yaml:"ttl"`
	// NS are the zone's name servers. Default: ns1.<apex> at the DNS listen address's IP.
	NS []NameServer `yaml:"ns"`
	// SOA holds the zone's SOA fields.
	SOA SOA `yaml:"soa"`
	// Records are static records served beside the geo-routed names, one
	// per entry in zone-file syntax relative to the apex ("@" is the
	// apex; TTL and class may be left out, TTL default 1h): what a
	// delegated domain needs besides its web names, such as
	// `@ MX 10 mail.example.com.`, `@ TXT "v=spf1 mx -all"`,
	// `@ CAA 0 issue "letsencrypt.org"`, `docs CNAME example.github.io.`.
	// Types: A, AAAA, CNAME, TXT, MX, SRV, CAA, PTR, HTTPS, SVCB; a served
	// name holds no static address and a CNAME stands alone.
	Records []string `yaml:"records"`
}

// NameServer is an NS record and its glue.
type NameServer struct {
	// Name is the server's host name.
	Name string `yaml:"name"`
	// Addresses are glue A/AAAA records, needed when Name is inside the zone.
	Addresses []string `yaml:"addresses"`
}

// SOA holds the fields of a zone's SOA record.
type SOA struct {
	// MName is the primary server. Default: the first NS.
	MName string `yaml:"mname"`
	// RName is the contact mailbox in DNS form. Default hostmaster.<apex>.
	RName string `yaml:"rname"`
	// Serial of the zone. Default 1.
	Serial uint32 `yaml:"serial"`
	// Refresh, Retry and Expire are for secondaries. Defaults 1h, 10m, 7d.
	Refresh time.Duration `yaml:"refresh"`
	Retry   time.Duration `yaml:"retry"`
	Expire  time.Duration `yaml:"expire"`
	// Minimum is the negative-caching TTL (RFC 2308). Default 60s.
	Minimum time.Duration `yaml:"minimum"`
	// TTL of the SOA record itself. Default 1h.
	TTL time.Duration `yaml:"ttl"`
}

// Geo configures client location.
type Geo struct {
	// DefaultRegion is where a client of unknown location is placed. Default us-east-1.
	DefaultRegion string `yaml:"default_region"`
	// Table maps CIDR blocks to a region or coordinates; the longest prefix wins,
	// and it is consulted before MMDB.
	Table []GeoEntry `yaml:"table"`
	// MMDB is a MaxMind-format City database (GeoLite2, GeoIP2, DB-IP).
	MMDB string `yaml:"mmdb"`
}

// GeoEntry places one network block.
type GeoEntry struct {
	// CIDR is the block, e.g. 203.0.113.0/24 or 2001:db8:3::/48.
	CIDR string `yaml:"cidr"`
	// Region places the block at a catalog region's coordinates.
	Region string `yaml:"region"`
	// Lat and Lon place the block at explicit coordinates instead.
	Lat *float64 `yaml:"lat"`
	Lon *float64 `yaml:"lon"`
}

// Health sets how the DNS judges PoP health.
type Health struct {
	// BeaconInterval is how often PoPs publish beacons. Default 1s.
	BeaconInterval time.Duration `yaml:"beacon_interval"`
	// MissedBeacons is how many intervals without a beacon mark a PoP down. Default 3.
	MissedBeacons int `yaml:"missed_beacons"`
	// ProbeInterval is how often the DNS probes each PoP's admin /healthz itself. Default 2s.
	ProbeInterval time.Duration `yaml:"probe_interval"`
}

// Dev configures extras of `meridian dev`.
type Dev struct {
	// Origin is where the demo origin listens. Default 127.0.0.1:8081.
	Origin string `yaml:"origin"`
}
