package cache

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"syscall"

	"github.com/meridian-edge/meridian/gateway/proxy"
	"github.com/meridian-edge/meridian/middleware"
)

// Cache-Status details (RFC 9211 "detail") of the responses the PoP makes
// itself when the origin exchange failed. They are also the reason the
// request metrics count these responses under (middleware.MarkGenerated).
const (
	detailOriginTimeout     = "origin-timeout"     // 504: no answer in time
	detailOriginUnreachable = "origin-unreachable" // 502: refused, no route, no server
	detailOriginError       = "origin-error"       // 502: reset or malformed response
)

// originFailure classifies an origin error: the status the PoP answers with,
// the Cache-Status detail, and the origin server it happened on when the
// error names one.
func originFailure(err error) (status int, detail, server string) {
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
	switch {
	case proxy.IsTimeout(err):
		return http.StatusGatewayTimeout, detailOriginTimeout, server
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, errNoOrigin),
		errors.As(err, &oe) && oe.Op == "dial":
		return http.StatusBadGateway, detailOriginUnreachable, server
	default:
		return http.StatusBadGateway, detailOriginError, server
	}
}

// writeOriginError answers r (for URL u) with the PoP's own 502 or 504 for an origin
// failure err: like every other response it carries the request's
// X-Request-Id, our Via and a Cache-Status entry (fwd says why the origin
// was asked, detail what went wrong; no fwd-status, since the origin sent
// none), and its body names the PoP and the request id, so a user's report
// can be matched with the PoP's log. The origin server and the error's text
// stay in the log: they are the operator's, not the client's. Headers set
// before (by plugins) are dropped, except the request id.
func (h *siteHandler) writeOriginError(w http.ResponseWriter, r *http.Request, u, fwd string, err error) {
	status, detail, server := originFailure(err)
	hd := w.Header()
	id := requestID(r, hd)
	attrs := []any{"request_id", id, "site", h.site.SiteID, "url", u, "status", status, "err", err}
	if server != "" {
		attrs = append(attrs, "server", server)
	}
	h.c.log.Warn("cache: origin failed", attrs...)
	middleware.MarkGenerated(r.Context(), detail)
	for k := range hd {
		delete(hd, k)
	}
	hd.Set(middleware.RequestIDHeader, id)
	hd.Set("Content-Type", "text/plain; charset=utf-8")
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Content-Type-Options", "nosniff")
	h.proxy.AddVia(hd, r.ProtoMajor, r.ProtoMinor)
	hd.Set("Cache-Status", "meridian; fwd="+fwd+"; detail="+detail)
	w.WriteHeader(status)
	_, _ = io.WriteString(w, errorBody(status, ViaName(h.c.opts.PoPID), h.site.SiteID, id))
}

// errorBody is the text of a PoP-made 502 or 504.
func errorBody(status int, pop, site, id string) string {
	const tail = "Request id: %s (quote it when you report this; the PoP's log names the origin server and the error).\n"
	if status == http.StatusGatewayTimeout {
		return fmt.Sprintf("504 Gateway Timeout from PoP %s: the origin of site %q did not answer in time. "+
			"Check the origin server's load and the site's origin timeouts.\n"+tail, pop, site, id)
	}
	return fmt.Sprintf("502 Bad Gateway from PoP %s: the origin of site %q failed: it refused or reset the connection, "+
		"or sent a malformed response. Check that the origin server is up and speaks HTTP.\n"+tail, pop, site, id)
}

// requestID is the request's id: the one the RequestID middleware gave it
// (in the context, or already on the response), else a new one, so that
// even a cache used without the middleware answers with an id its log has.
func requestID(r *http.Request, hd http.Header) string {
	if id := middleware.GetRequestID(r.Context()); id != "" {
		return id
	}
	if id := hd.Get(middleware.RequestIDHeader); id != "" {
		return id
	}
	return middleware.NewRequestID(r.Header.Get(middleware.RequestIDHeader))
}
