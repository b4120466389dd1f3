package gateway

import (
	"encoding/json"
	"net/http"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// adminHandler serves the ops API on the admin listener: health for the DNS
// probes and load balancers, Prometheus metrics, and PoP information.
func (p *PoP) adminHandler() http.Handler {
	r := chi.NewRouter()
	r.Get("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if p.draining.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("draining\n"))
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	r.Handle("/metrics", promhttp.HandlerFor(p.registry, promhttp.HandlerOpts{}))
	r.Get("/admin/info", func(w http.ResponseWriter, _ *http.Request) {
		type siteInfo struct {
			Name    string   `json:"name"`
			Hosts   []string `json:"hosts"`
			Default bool     `json:"default,omitempty"`
			Origins []string `json:"origins"`
		}
		info := struct {
			PoP      string     `json:"pop"`
			Region   string     `json:"region"`
			Draining bool       `json:"draining"`
			Sites    []siteInfo `json:"sites"`
		}{PoP: p.opts.ID, Region: p.opts.Region, Draining: p.draining.Load()}
		for _, s := range p.router.Load().all {
			info.Sites = append(info.Sites, siteInfo{Name: s.Name, Hosts: s.Hosts, Default: s.Default, Origins: s.Origin.ServerHosts()})
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(info)
	})
	r.Post("/admin/purge", p.handlePurge)
	for pattern, h := range p.opts.AdminRoutes {
		r.Handle(pattern, h)
	}
	r.Post("/admin/drain", p.requireOps(func(w http.ResponseWriter, r *http.Request) {
		on := r.URL.Query().Get("off") == ""
		p.SetDraining(on)
		p.log.Info("drain changed by admin API", "draining", on, "remote", r.RemoteAddr)
		w.WriteHeader(http.StatusNoContent)
	}))
	return r
}
