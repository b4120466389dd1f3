package proxy

import (
	"errors"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/meridian-edge/meridian/gateway/cache/policy"
	"github.com/meridian-edge/meridian/gateway/origin"
	"github.com/meridian-edge/meridian/middleware"
)

// Why the PoP answered an origin exchange itself: the Cache-Status detail
// (RFC 9211) of its error page and the reason the request metrics count the
// answer under (middleware.MarkGenerated).
// The origin's are origin.Failure's words, which the access log's
// origin_error uses too.
const (
	DetailOriginTimeout     = origin.FailureTimeout     // 504: no answer in time
	DetailOriginUnreachable = origin.FailureUnreachable // 502: refused, no route, no server
	DetailOriginError       = origin.FailureError       // 502: reset or malformed response
	DetailOriginTLS         = origin.FailureTLS         // 502: the TLS handshake with the origin failed (certificate, pin, alert)
	DetailOriginBusy        = origin.FailureBusy        // 503: every origin server was at its max_conns
	DetailLoop              = "loop"                    // 508: the request came back to this PoP (CDN-Loop)
)

// ErrUnreachable marks an origin error as "no server could be reached" when
// the error itself does not show it (no dial error, no refused connection):
// wrap it (fmt.Errorf("...: %w", ErrUnreachable)) and the page says 502
// origin-unreachable, e.g. for a site with no origin configured.
var ErrUnreachable = errors.New("no origin server could be reached")

// Page is an answer the PoP makes itself instead of the origin's: a 502 or
// 504 when the origin failed, a 504 for only-if-cached, a 503. Every such
// answer goes through WritePage, so that a client sees one page and one set
// of header fields whatever path the request took.
type Page struct {
	// Status is the HTTP status, e.g. http.StatusBadGateway.
	Status int
	// Reason is a fixed word for why ("origin-timeout"): the Cache-Status
	// detail and the reason the request metrics count the answer under.
	// Never request data: it becomes a label value.
	Reason string
	// CacheStatus is the PoP's Cache-Status entry for the request without
	// its detail, e.g. "meridian; fwd=uri-miss" (the cache says why it went
	// to the origin); the page adds "; detail=<Reason>", replacing a detail
	// the entry had. Empty: no Cache-Status (a proxy used without a cache).
	CacheStatus string
	// Message says what went wrong and what to do; the body is
	// "<status> from PoP <PoPID>: <Message>" and the request id.
	Message string
}

// WritePage answers r with pg: X-Request-Id (the request's, so the answer
// can be matched with the PoP's log), our Via, Cache-Status with the
// page's reason, no-store, and a plain-text body that names the PoP and the
// request id. Fields set before (by plugins, or the origin's for a
// response that never started) are dropped, except the request id. The
// request is marked as answered by the PoP (middleware.MarkGenerated).
func (p *Proxy) WritePage(w http.ResponseWriter, r *http.Request, pg Page) {
	p.writePage(w, r, requestID(r, w.Header()), pg)
}

// writePage is WritePage for a request whose id the caller already has (and
// logged).
func (p *Proxy) writePage(w http.ResponseWriter, r *http.Request, id string, pg Page) {
	var site []byte
	if len(p.opts.ErrorPage) > 0 && AcceptsHTML(r.Header.Values("Accept")) {
		site = p.opts.ErrorPage
	}
	writePage(w, r, id, p.opts.PoPID, p.viaFor(r.ProtoMajor, r.ProtoMinor), pg, site)
}

// WritePoPPage is WritePage for an answer no site's Proxy makes: the PoP's
// own, before a site is known (an unknown host, a request looping back to
// this PoP). popName is the PoP's Via name ("meridian-<id>", see
// cache.ViaName); an empty pg.CacheStatus is "meridian", the PoP's cache
// name, so the page always carries a Cache-Status with its reason.
func WritePoPPage(w http.ResponseWriter, r *http.Request, popName string, pg Page) {
	if pg.CacheStatus == "" {
		pg.CacheStatus = "meridian"
	}
	writePage(w, r, requestID(r, w.Header()), popName, ViaValue(r.ProtoMajor, r.ProtoMinor, popName), pg, nil)
}

// writePage writes pg; site, when set, is the site's HTML page
// (Options.ErrorPage) to send instead of the plain-text body.
func writePage(w http.ResponseWriter, r *http.Request, id, popName, via string, pg Page, site []byte) {
	hd := w.Header()
	middleware.MarkGenerated(r.Context(), pg.Reason)
	clear(hd)
	hd.Set(middleware.RequestIDHeader, id)
	hd.Set("Content-Type", "text/plain; charset=utf-8")
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd["Via"] = append(hd["Via"], via)
	if pg.CacheStatus != "" {
		hd.Set("Cache-Status", withDetail(pg.CacheStatus, pg.Reason))
	}
	if site != nil {
		hd.Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(pg.Status)
		_, _ = io.WriteString(w, SitePage(site, pg.Status, popName, id))
		return
	}
	w.WriteHeader(pg.Status)
	_, _ = io.WriteString(w, PageBody(pg.Status, popName, pg.Message, id))
}

// SitePage is a site's own error page (Options.ErrorPage) for an answer of
// status with request id, made by PoP pop: its placeholders replaced,
// HTML-escaped.
func SitePage(page []byte, status int, pop, id string) string {
	return strings.NewReplacer(
		"{{status}}", strconv.Itoa(status),
		"{{status_text}}", html.EscapeString(http.StatusText(status)),
		"{{request_id}}", html.EscapeString(id),
		"{{pop}}", html.EscapeString(pop),
	).Replace(string(page))
}

// AcceptsHTML reports whether a request's Accept field values take
// text/html (a browser's navigation does; an API client's or curl's does
// not), not ruled out by q=0.
func AcceptsHTML(accept []string) bool {
	for _, v := range accept {
		for part := range strings.SplitSeq(v, ",") {
			mt, params, _ := strings.Cut(part, ";")
			if strings.EqualFold(strings.TrimSpace(mt), "text/html") {
				return policy.QPositive(params)
			}
		}
	}
	return false
}

// PageBody is the body of every answer the PoP makes itself: the status,
// the PoP (its Via name), what went wrong and what to do, and the request
// id to quote. The plugin chain's fail-closed 503, which has no Proxy at
// hand, writes it too.
func PageBody(status int, pop, message, id string) string {
	return fmt.Sprintf("%d %s from PoP %s: %s\nRequest id: %s (quote it when you report this; the PoP's log has the details).\n",
		status, http.StatusText(status), pop, message, id)
}

// WriteOriginError answers r with the PoP's 504 (the origin did not answer
// in time) or 502 (refused, reset, malformed) for the failed origin
// exchange err, as a Page whose Cache-Status entry is cacheStatus (see
// Page.CacheStatus). The WARN "origin failed" line has the request id, url
// (what the log should name: the cache's URL) and, when the error names
// it, the origin server; the server and the error's text stay in the log,
// they are the operator's, not the client's. Nothing is written when the
// client itself went away.
func (p *Proxy) WriteOriginError(w http.ResponseWriter, r *http.Request, url, cacheStatus string, err error) {
	if r.Context().Err() != nil && !IsTimeout(err) {
		p.opts.Logger.Debug("client went away before the origin answered", "site", p.opts.SiteID, "url", url, "err", err)
		return
	}
	status, detail, server := OriginFailure(err)
	id := requestID(r, w.Header())
	attrs := []any{"request_id", id, "site", p.opts.SiteID, "url", url, "status", status, "err", err}
	if server != "" {
		attrs = append(attrs, "server", server)
	}
	p.opts.Logger.Warn("origin failed", attrs...)
	var msg string
	switch {
	case status == http.StatusGatewayTimeout:
		msg = fmt.Sprintf("the origin of site %q did not answer in time. "+
			"Check the origin server's load and the site's origin timeouts.", p.opts.SiteID)
	case detail == DetailOriginBusy:
		msg = fmt.Sprintf("every origin server of site %q already has as many requests from this PoP as its max_conns allows; "+
			"try again shortly, or raise the origins' max_conns if they can take more.", p.opts.SiteID)
	case detail == DetailOriginTLS:
		msg = fmt.Sprintf("the TLS handshake with the origin of site %q failed: its certificate was not accepted "+
			"(not trusted, expired, issued for another name, or not matching a pinned key), or it refused the PoP's. "+
			"Check the origin's certificate and the site's origin TLS settings.", p.opts.SiteID)
	default:
		msg = fmt.Sprintf("the origin of site %q failed: it refused or reset the connection, or sent a malformed response. "+
			"Check that the origin server is up and speaks HTTP.", p.opts.SiteID)
	}
	p.writePage(w, r, id, Page{Status: status, Reason: detail, CacheStatus: cacheStatus, Message: msg})
}

// ErrorPage is the ReverseProxy's error handler: WriteOriginError with the
// Cache-Status entry ModifyResponse gives this request's answers (see
// Options.ModifyResponse), so a request the cache passed on (an upgrade, an
// unsafe method, a bypassed site) gets the page a cacheable GET gets.
func (p *Proxy) ErrorPage(w http.ResponseWriter, r *http.Request, err error) {
	p.WriteOriginError(w, r, r.URL.String(), p.callerCacheStatus(r), err)
}

// callerCacheStatus is the Cache-Status entry the caller's ModifyResponse
// adds to r's answers: it runs the hook on a Response that has only the
// request and an empty header, and takes the last entry (ours: RFC 9211
// lists the cache nearest the client last).
func (p *Proxy) callerCacheStatus(r *http.Request) string {
	if p.opts.ModifyResponse == nil {
		return ""
	}
	res := &http.Response{
		Status: "502 Bad Gateway", StatusCode: http.StatusBadGateway, Header: http.Header{}, Body: http.NoBody,
		Proto: r.Proto, ProtoMajor: r.ProtoMajor, ProtoMinor: r.ProtoMinor, Request: r,
	}
	if err := p.opts.ModifyResponse(res); err != nil {
		p.opts.Logger.Debug("ModifyResponse refused the error page; it carries no Cache-Status", "site", p.opts.SiteID, "err", err)
		return ""
	}
	v := res.Header.Values("Cache-Status")
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

// withDetail is the Cache-Status entry e with its detail parameter set to
// detail (an entry has at most one).
func withDetail(e, detail string) string {
	if detail == "" {
		return e
	}
	var b strings.Builder
	for i, part := range strings.Split(e, ";") {
		if i > 0 && strings.HasPrefix(strings.TrimSpace(part), "detail=") {
			continue
		}
		if i > 0 {
			b.WriteByte(';')
		}
		b.WriteString(part)
	}
	b.WriteString("; detail=")
	b.WriteString(detail)
	return b.String()
}

// OriginFailure classifies an origin error: the status the PoP answers
// with, the reason (Detail* constants), and the origin server it happened
// on when the error names one (host:port).
func OriginFailure(err error) (status int, detail, server string) {
	// Transports name the server in a *net.OpError (dial, read) and
	// http.Client in a *url.Error; a timeout of the whole exchange names none.
	var oe *net.OpError
	var ue *url.Error
	switch {
	case errors.As(err, &oe) && oe.Addr != nil:
		server = oe.Addr.String()
	case errors.As(err, &ue):
		if u, perr := url.Parse(ue.URL); perr == nil {
			server = u.Host
		}
	}
	switch detail = origin.Failure(err); {
	case detail == DetailOriginTimeout:
		return http.StatusGatewayTimeout, detail, server
	case detail == DetailOriginBusy:
		return http.StatusServiceUnavailable, detail, server
	case detail == DetailOriginError && errors.Is(err, ErrUnreachable):
		detail = DetailOriginUnreachable
	}
	return http.StatusBadGateway, detail, server
}

// IsTLSFailure reports whether err is a failed TLS handshake with the
// origin (origin.IsTLSFailure: one definition for the pool's log record
// and the pages).
func IsTLSFailure(err error) bool { return origin.IsTLSFailure(err) }

// requestID is the request's id: the one the RequestID middleware gave it
// (in the context, or already on the response), else a new one, so that
// even a proxy used without the middleware answers with an id its log has.
func requestID(r *http.Request, hd http.Header) string {
	if id := middleware.GetRequestID(r.Context()); id != "" {
		return id
	}
	if id := hd.Get(middleware.RequestIDHeader); id != "" {
		return id
	}
	return middleware.NewRequestID(r.Header.Get(middleware.RequestIDHeader))
}
