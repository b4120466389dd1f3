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

// requireOps wraps an admin handler that only the ops token may call.
func (p *PoP) requireOps(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		who, ok := p.opts.Credentials.Authenticate(r)
		switch {
		case !ok:
			w.Header().Set("WWW-Authenticate", `Bearer realm="meridian admin"`)
			http.Error(w, "meridian admin: send the ops token as 'Authorization: Bearer TOKEN'", http.StatusUnauthorized)
		case !who.Ops:
			http.Error(w, "meridian admin: this needs the ops token; a site owner's token cannot do it", http.StatusForbidden)
		default:
			next(w, r)
		}
	}
}
