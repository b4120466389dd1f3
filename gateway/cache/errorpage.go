package cache

import (
	"net/http"
)

// writeOriginError answers r (for URL u) with the PoP's own 502 or 504 for
// an origin failure err. The page is the proxy's (proxy.WriteOriginError),
// the one a request the cache passes on (an upgrade, an unsafe method, a
// bypassed site) gets from the proxy's error handler: X-Request-Id, Via,
// Cache-Status "meridian; fwd=<fwd>; detail=<why>" (no fwd-status: the
// origin sent none), and a body naming the PoP, the site and the request id.
func (h *siteHandler) writeOriginError(w http.ResponseWriter, r *http.Request, u, fwd string, err error) {
	h.proxy.WriteOriginError(w, r, u, "meridian; fwd="+fwd, err)
}
