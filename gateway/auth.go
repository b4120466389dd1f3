package gateway

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
)

// Credentials decide who may change what through the admin API: the ops
// token may act on everything, a site owner's token on its own site only.
// Only SHA-256 hashes are held.
type Credentials struct {
	opsHash    []byte
	siteHashes map[string][]byte
}

// NewCredentials takes hex SHA-256 hashes: the ops token's (may be empty)
// and each site owner's by site name (empty values are skipped).
func NewCredentials(opsHex string, siteHex map[string]string) (Credentials, error) {
	c := Credentials{siteHashes: map[string][]byte{}}
	if opsHex != "" {
		h, err := hex.DecodeString(opsHex)
		if err != nil || len(h) != sha256.Size {
			return c, fmt.Errorf("gateway: ops token hash is not a hex SHA-256")
		}
		c.opsHash = h
	}
	for site, hx := range siteHex {
		if hx == "" {
			continue
		}
		h, err := hex.DecodeString(hx)
		if err != nil || len(h) != sha256.Size {
			return c, fmt.Errorf("gateway: site %s: owner token hash is not a hex SHA-256", site)
		}
		c.siteHashes[site] = h
	}
	return c, nil
}

// Principal is who presented a token.
type Principal struct {
	// Ops is true for the ops token.
	Ops bool
	// Site is the site whose owner token was presented.
	Site string
}

// MaySite reports whether p may act on site.
func (p Principal) MaySite(site string) bool { return p.Ops || (p.Site != "" && p.Site == site) }

// Authenticate checks the request's "Authorization: Bearer TOKEN".
func (c Credentials) Authenticate(r *http.Request) (Principal, bool) {
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || token == "" {
		return Principal{}, false
	}
	sum := sha256.Sum256([]byte(token))
	if c.opsHash != nil && subtle.ConstantTimeCompare(sum[:], c.opsHash) == 1 {
		return Principal{Ops: true}, true
	}
	for site, h := range c.siteHashes {
		if subtle.ConstantTimeCompare(sum[:], h) == 1 {
			return Principal{Site: site}, true
		}
	}
	return Principal{}, false
}

// HasOps reports whether an ops token is configured.
func (c Credentials) HasOps() bool { return c.opsHash != nil }

// Configured reports whether any token is configured: the ops token or a
// site owner's.
func (c Credentials) Configured() bool { return c.opsHash != nil || len(c.siteHashes) > 0 }

// The config fields that hold the tokens' hashes (internal/config), named in
// refusals so an operator knows what to set.
const (
	opsTokenField   = "admin.ops_token_sha256"
	ownerTokenField = "sites[].owner_token_sha256"
	challenge       = `Bearer realm="meridian admin"`
)

// Denial is why Check refused an admin request, worded for the caller.
type Denial struct {
	// Status is 401 when another token could succeed (none was sent, or it
	// was not recognised) and 403 when no token can: this PoP has none
	// configured that could allow the call, or the token's holder may not
	// make it.
	Status int
	// Challenge is the WWW-Authenticate value to send with a 401.
	Challenge string
	// Message says what went wrong and what to do, without the
	// "meridian admin: " prefix.
	Message string
}

// Write sends d as a plain-text HTTP error.
func (d *Denial) Write(w http.ResponseWriter) {
	if d.Challenge != "" {
		w.Header().Set("WWW-Authenticate", d.Challenge)
	}
	http.Error(w, "meridian admin: "+d.Message, d.Status)
}

// Check authenticates an admin request's "Authorization: Bearer TOKEN" and
// says why it is refused, keeping apart a missing token, a token that is not
// recognised and a PoP that has no token configured that could allow the
// call (every call then fails whatever the caller sends; the message names
// the config field to set rather than suggesting the caller's token is
// wrong). opsOnly: only the ops token may make the call, and a site owner's
// token is refused with 403; otherwise either token passes and the caller
// checks Principal.MaySite. A caller learns whether this PoP has an ops
// token, or any token; never whether a given site has an owner token.
func (c Credentials) Check(r *http.Request, opsOnly bool) (Principal, *Denial) {
	who := "the ops token or the site owner's token"
	if opsOnly {
		who = "the ops token"
	}
	switch {
	case opsOnly && !c.HasOps():
		return Principal{}, &Denial{Status: http.StatusForbidden, Message: "this PoP has no ops token configured, so no token can make this call; " +
			"set " + opsTokenField + " in the config to the sha256 that `meridian token` prints, reload the configuration (SIGHUP) and send that token as 'Authorization: Bearer TOKEN'"}
	case !c.Configured():
		return Principal{}, &Denial{Status: http.StatusForbidden, Message: "this PoP has no ops token configured (nor any site owner's token), so no token can make this call; " +
			"set " + opsTokenField + " (or a site's " + ownerTokenField + ") in the config to the sha256 that `meridian token` prints, reload the configuration (SIGHUP) and send that token as 'Authorization: Bearer TOKEN'"}
	}
	p, ok := c.Authenticate(r)
	if ok {
		if opsOnly && !p.Ops {
			return p, &Denial{Status: http.StatusForbidden, Message: "this needs the ops token; a site owner's token cannot do it"}
		}
		return p, nil
	}
	if token, bearer := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); !bearer || token == "" {
		return Principal{}, &Denial{Status: http.StatusUnauthorized, Challenge: challenge, Message: "send " + who + " as 'Authorization: Bearer TOKEN'"}
	}
	msg := "the token was not recognised (check MERIDIAN_TOKEN / the admin token settings of this PoP: " + opsTokenField + " for the ops token"
	if !opsOnly {
		msg += ", " + ownerTokenField + " for a site owner's"
	}
	msg += ")"
	if !opsOnly && !c.HasOps() {
		// Worth saying: an operator's token cannot work here.
		msg += "; this PoP has no ops token configured, so only a site owner's token can work"
	}
	return Principal{}, &Denial{Status: http.StatusUnauthorized, Challenge: challenge + `, error="invalid_token"`, Message: msg}
}

// requireOps wraps an admin handler that only the ops token may call.
func (p *PoP) requireOps(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if _, d := p.credentials().Check(r, true); d != nil {
			d.Write(w)
			return
		}
		next(w, r)
	}
}
