// Package proxy is the client-facing forwarding path of a PoP: it turns a
// client request into an origin request (hop-by-hop fields removed, including
// those named in Connection; X-Forwarded-For/-Proto/-Host, Forwarded, Via
// and CDN-Loop (RFC 8586, so a request that comes back can be refused)
// added), passes the origin's response back byte for byte apart from
// hop-by-hop fields, streams bodies both ways, passes 1xx interim responses
// and WebSocket upgrades, and answers 502/504 with a clear body when the
// origin fails.
//
// It owns request/response rewriting and the pages the PoP answers with
// itself (WritePage, WriteOriginError): the cache sends its 502/504 through
// them too, so every path gives a client the same page and header fields.
// It must not cache, pick origin servers or apply timeouts: the origin
// RoundTripper (gateway/origin) does that, and the cache (gateway/cache)
// decides what to store.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"strconv"
	"strings"

	"github.com/meridian-edge/meridian/gateway/origin"
	"github.com/meridian-edge/meridian/gateway/realip"
)

// Options configures a Proxy for one site.
type Options struct {
	// SiteID names the site in error pages and logs.
	SiteID string
	// PoPID is the pseudonym used in Via ("1.1 <PoPID>") and named by the
	// error pages' body; default "meridian".
	PoPID string
	// Transport sends requests to the site's origin; required. It must set
	// the URL's scheme and host (origin.Pool does).
	Transport http.RoundTripper
	// ModifyResponse, when set, runs on each passed-through origin response
	// after hop-by-hop fields are removed and before headers are written.
	// When the origin exchange fails it also runs once, on a Response with
	// only Request (the client's) and an empty Header, to learn the
	// Cache-Status entry the caller gives this request's answers: the error
	// page carries the last one it adds, with the page's detail (see
	// ErrorPage). A hook that adds fields only from the request's context,
	// as the cache's does, needs nothing more.
	ModifyResponse func(*http.Response) error
	// Logger receives origin errors; nil discards.
	Logger *slog.Logger
	// ErrorPage, when set, is the site's own HTML page for the answers the
	// PoP makes itself for it (an origin that failed, only-if-cached with
	// nothing stored), sent to clients that accept text/html instead of
	// the plain-text body: a browser sees the site's page, an API client
	// or a script keeps the plain text. {{status}}, {{status_text}},
	// {{request_id}} and {{pop}} in it are replaced (HTML-escaped).
	ErrorPage []byte
}

// Proxy forwards requests of one site to its origin. It is an http.Handler.
type Proxy struct {
	opts Options
	rp   *httputil.ReverseProxy
	// Via values by protocol, built once: AddVia runs on every hit.
	via11, via2, via3 string
}

// New creates a Proxy.
func New(opts Options) (*Proxy, error) {
	if opts.Transport == nil {
		return nil, errors.New("proxy: Options.Transport is nil; pass the site's origin pool")
	}
	if opts.PoPID == "" {
		opts.PoPID = "meridian"
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	p := &Proxy{opts: opts, via11: "1.1 " + opts.PoPID, via2: "2 " + opts.PoPID, via3: "3 " + opts.PoPID}
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			// Like nginx's $proxy_add_x_forwarded_for: keep the chain the
			// client sent and append this hop (forwardedFor). X-Forwarded-Host
			// and -Proto are always ours.
			if xff := forwardedFor(pr.In); xff != "" {
				pr.Out.Header["X-Forwarded-For"] = []string{xff}
			} else {
				delete(pr.Out.Header, "X-Forwarded-For")
			}
			if v := pr.In.Header["Forwarded"]; len(v) > 0 {
				pr.Out.Header["Forwarded"] = append([]string(nil), v...)
			}
			pr.Out.Header.Set("X-Forwarded-Host", pr.In.Host)
			pr.Out.Header.Set("X-Forwarded-Proto", scheme(pr.In))
			setRealIP(pr.Out.Header, pr.In)
			p.addForwarded(pr.Out.Header, pr.In)
			p.AddVia(pr.Out.Header, pr.In.ProtoMajor, pr.In.ProtoMinor)
			p.AddCDNLoop(pr.Out.Header)
		},
		Transport: opts.Transport,
		ModifyResponse: func(res *http.Response) error {
			p.AddVia(res.Header, res.ProtoMajor, res.ProtoMinor)
			if opts.ModifyResponse != nil {
				return opts.ModifyResponse(res)
			}
			return nil
		},
		ErrorHandler: p.ErrorPage,
		ErrorLog:     nil,
		// Flush as data arrives when the length is unknown (ReverseProxy
		// does this for ContentLength -1 and event streams by itself).
		FlushInterval: 0,
	}
	return p, nil
}

// ServeHTTP forwards r to the origin and streams the response back.
// Request bodies of every method are forwarded intact; WebSocket and other
// upgrades are tunnelled.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.rp.ServeHTTP(w, r)
}

// Outbound builds the origin request for in, as ServeHTTP would, with ctx as
// its context: hop-by-hop fields (and those named in Connection) removed,
// X-Forwarded-*, Forwarded and Via set. The cache uses it for its own
// fetches. The body is not attached; set it if needed.
func (p *Proxy) Outbound(ctx context.Context, in *http.Request) *http.Request {
	out := in.Clone(ctx)
	out.RequestURI = ""
	out.Body = nil
	out.ContentLength = 0
	out.GetBody = nil
	out.Close = false
	RemoveHopByHop(out.Header)
	out.Header.Del("X-Forwarded-For")
	out.Header.Del("X-Forwarded-Host")
	out.Header.Del("X-Forwarded-Proto")
	if xff := forwardedFor(in); xff != "" {
		out.Header.Set("X-Forwarded-For", xff)
	}
	out.Header.Set("X-Forwarded-Host", in.Host)
	out.Header.Set("X-Forwarded-Proto", scheme(in))
	setRealIP(out.Header, in)
	p.addForwarded(out.Header, in)
	p.AddVia(out.Header, in.ProtoMajor, in.ProtoMinor)
	p.AddCDNLoop(out.Header)
	if _, ok := out.Header["User-Agent"]; !ok {
		out.Header.Set("User-Agent", "") // keep Go's default agent off the wire
	}
	return out
}

func scheme(r *http.Request) string {
	if r.TLS != nil {
		return "https"
	}
	return "http"
}

// forwardedFor is the X-Forwarded-For sent to the origin: the chain the
// client sent, then this hop's peer (hopIP), as nginx's
// $proxy_add_x_forwarded_for; "" when there is neither.
func forwardedFor(in *http.Request) string {
	prior := in.Header.Values("X-Forwarded-For")
	ip := hopIP(in)
	switch {
	case len(prior) == 0:
		return ip
	case ip == "":
		return strings.Join(prior, ", ")
	}
	return strings.Join(prior, ", ") + ", " + ip
}

// setRealIP sets X-Real-IP to the request's client (its RemoteAddr, which
// gateway/realip has made the client behind trusted balancers and proxies),
// as nginx setups commonly do with proxy_set_header X-Real-IP
// $remote_addr; a value the client sent is never passed on, since origins
// trust the field.
func setRealIP(h http.Header, in *http.Request) {
	host, _, err := net.SplitHostPort(in.RemoteAddr)
	if err != nil || host == "" {
		h.Del("X-Real-Ip")
		return
	}
	h.Set("X-Real-Ip", host)
}

// hopIP is the address of the node this PoP received the request from,
// which each hop appends to X-Forwarded-For and Forwarded: the
// connection's peer. Behind trusted L7 proxies, RemoteAddr is the client
// the headers named (gateway/realip's Resolver.Handler), which the chain
// already holds; the peer is then in the context, and appending the
// client again would hide the proxy that sent the request.
func hopIP(r *http.Request) string {
	if peer, ok := realip.PeerFromContext(r.Context()); ok {
		return peer.Addr().String()
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return ""
	}
	return host
}

// addForwarded appends this hop's RFC 7239 element to Forwarded.
func (p *Proxy) addForwarded(h http.Header, in *http.Request) {
	var b strings.Builder
	if ip := hopIP(in); ip != "" {
		if strings.Contains(ip, ":") {
			fmt.Fprintf(&b, "for=\"[%s]\";", ip)
		} else {
			fmt.Fprintf(&b, "for=%s;", ip)
		}
	}
	fmt.Fprintf(&b, "host=%q;proto=%s", in.Host, scheme(in))
	h.Add("Forwarded", b.String())
}

// Via11 is the Via value this proxy adds to HTTP/1.1 messages.
func (p *Proxy) Via11() string { return p.via11 }

// AddVia appends this hop to Via (RFC 9110 7.6.3).
func (p *Proxy) AddVia(h http.Header, major, minor int) {
	h["Via"] = append(h["Via"], p.viaFor(major, minor))
}

func (p *Proxy) viaFor(major, minor int) string {
	switch {
	case major == 1 && minor == 1:
		return p.via11
	case major == 2:
		return p.via2
	case major == 3:
		return p.via3
	}
	return ViaValue(major, minor, p.opts.PoPID)
}

// ViaValue is the Via entry (RFC 9110 7.6.3) of a hop called name that
// received the message over HTTP major.minor: "1.1 name", "2 name".
func ViaValue(major, minor int, name string) string {
	switch {
	case major == 1 && minor == 1:
		return "1.1 " + name
	case major >= 2:
		return strconv.Itoa(major) + " " + name
	}
	return fmt.Sprintf("%d.%d %s", major, minor, name)
}

// CDNLoopHeader is RFC 8586's CDN-Loop: each CDN hop appends its own
// token to the requests it forwards, so that one that comes back can be
// refused instead of recursing.
const CDNLoopHeader = "Cdn-Loop"

// AddCDNLoop appends this PoP's token (its Via name) to h's CDN-Loop.
func (p *Proxy) AddCDNLoop(h http.Header) {
	h[CDNLoopHeader] = append(h[CDNLoopHeader], p.opts.PoPID)
}

// LoopCount is how many times the CDN-Loop field lines of h name token (a
// PoP's Via name): 0 for a request that did not pass through that PoP
// before. It does not allocate.
func LoopCount(h http.Header, token string) int {
	n := 0
	for _, v := range h[CDNLoopHeader] {
		for e := range strings.SplitSeq(v, ",") {
			e, _, _ = strings.Cut(e, ";") // parameters
			if strings.EqualFold(strings.TrimSpace(e), token) {
				n++
			}
		}
	}
	return n
}

// hopByHop lists the fields that apply to one connection only (RFC 9110 7.6.1).
var hopByHop = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// RemoveHopByHop deletes hop-by-hop fields and every field named in
// Connection from h.
func RemoveHopByHop(h http.Header) {
	for _, f := range h["Connection"] {
		for _, sf := range strings.Split(f, ",") {
			if sf = textproto.TrimString(sf); sf != "" {
				h.Del(sf)
			}
		}
	}
	for _, f := range hopByHop {
		h.Del(f)
	}
}

// IsTimeout reports whether err means the origin did not answer in time
// (origin.IsTimeout: one definition for the pool, the pages and the cache).
func IsTimeout(err error) bool { return origin.IsTimeout(err) }
