package dnsrouter

import (
	"encoding/json"
	"net/http"
	"net/netip"
	"strings"
	"time"
)

// AdminHandler serves the DNS server's live view for the admin API, so
// that `meridian dns explain` can ask the running server (with its real
// health table) instead of a cold copy:
//
//	GET /explain?subnet=203.0.113.0/24&name=www.example.test   → Explanation
//	GET /health                                                → PoP health table
//
// Answers are JSON, or the CLI's text form for /explain when the request
// says Accept: text/plain. Mount it under a prefix with http.StripPrefix.
func (s *Server) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /explain", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		sub, err := parseSubnet(q.Get("subnet"))
		if err != nil {
			http.Error(w, "subnet: "+err.Error(), http.StatusBadRequest)
			return
		}
		if q.Get("name") == "" {
			http.Error(w, "name: required, e.g. name=www.example.test", http.StatusBadRequest)
			return
		}
		e, err := s.Explain(sub, q.Get("name"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		if strings.Contains(r.Header.Get("Accept"), "text/plain") {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.Write([]byte(e.String()))
			return
		}
		writeJSON(w, e)
	})
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		type pop struct {
			PoP        string    `json:"pop"`
			Served     bool      `json:"served"`
			Beacon     string    `json:"beacon"`
			Probe      string    `json:"probe"`
			Load       float64   `json:"load"`
			Capacity   float64   `json:"capacity"`
			Keep       float64   `json:"keep"`
			LastBeacon time.Time `json:"last_beacon,omitzero"`
			Reason     string    `json:"reason"`
		}
		snap := s.Health()
		out := struct {
			Stale bool  `json:"stale"`
			PoPs  []pop `json:"pops"`
		}{Stale: snap.Stale, PoPs: []pop{}}
		for _, p := range snap.PoPs {
			out.PoPs = append(out.PoPs, pop{p.ID, p.Served, p.Beacon.String(), p.Probe.String(), p.Load, p.Capacity, p.Keep, p.LastBeacon, p.Reason})
		}
		writeJSON(w, out)
	})
	return mux
}

// parseSubnet accepts a prefix ("203.0.113.0/24") or a bare address.
func parseSubnet(s string) (netip.Prefix, error) {
	if s == "" {
		return netip.Prefix{}, errSubnetMissing
	}
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, errSubnetBad
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

type adminError string

func (e adminError) Error() string { return string(e) }

const (
	errSubnetMissing = adminError("required, e.g. subnet=203.0.113.0/24")
	errSubnetBad     = adminError("want a prefix like 203.0.113.0/24 or an address")
)

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
