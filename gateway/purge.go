package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/meridian-edge/meridian/gateway/cache"
	"github.com/meridian-edge/meridian/internal/statesync"
)

// purgeRequest is the body of POST /admin/purge.
type purgeRequest struct {
	Site string `json:"site"`
	// Kind is url, prefix, surrogate-key (or tag) or site.
	Kind  string `json:"kind"`
	Value string `json:"value"`
	// Soft marks matching objects stale instead of removing them.
	Soft bool `json:"soft"`
}

type purgeResponse struct {
	ID         string `json:"id,omitempty"`
	Local      int    `json:"purged_here"`
	Replicated bool   `json:"replicated"`
	// Queued: recorded, and waiting in the sync node's queue until NATS is
	// back (Replicated is then false).
	Queued  bool   `json:"queued,omitempty"`
	Warning string `json:"warning,omitempty"`
}

// handlePurge records a purge and applies it here. With state sync the
// record goes to every PoP (which apply it on arrival, and check it on every
// read until then); without, it applies to this PoP only.
func (p *PoP) handlePurge(w http.ResponseWriter, r *http.Request) {
	// The token first: a caller without one learns nothing from the body's
	// checks, and a PoP without tokens says so before a body is fixed.
	who, denied := p.credentials().Check(r, false)
	if denied != nil {
		denied.Write(w)
		return
	}
	var req purgeRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		http.Error(w, fmt.Sprintf(`meridian admin: purge: bad JSON body (%v); send {"site":"www","kind":"url|prefix|surrogate-key|site","value":"...","soft":false}`, err), http.StatusBadRequest)
		return
	}
	if !who.MaySite(req.Site) {
		http.Error(w, fmt.Sprintf("meridian admin: this token may not purge site %q", req.Site), http.StatusForbidden)
		return
	}
	if !p.hasSite(req.Site) {
		http.Error(w, fmt.Sprintf("meridian admin: purge: no site %q at this PoP", req.Site), http.StatusNotFound)
		return
	}
	kind, err := cache.ParseSelectorKind(req.Kind)
	if err != nil {
		http.Error(w, "meridian admin: "+err.Error(), http.StatusBadRequest)
		return
	}
	sel := cache.Selector{Site: req.Site, Kind: kind, Value: req.Value, Soft: req.Soft}
	if err := sel.Validate(); err != nil {
		http.Error(w, "meridian admin: "+err.Error(), http.StatusBadRequest)
		return
	}
	sel = sel.Normalize()
	var resp purgeResponse
	if n := p.opts.Sync; n != nil {
		rec, err := n.Purge(r.Context(), statesync.PurgeRecord{Site: sel.Site, Kind: statesync.PurgeKind(sel.Kind.String()), Value: sel.Value, Soft: sel.Soft})
		switch {
		case errors.Is(err, statesync.ErrQueueFull):
			resp.Warning = "NATS is unreachable and the outgoing queue is full: applied here and spread by anti-entropy later"
		case err != nil && rec.ID == "":
			http.Error(w, "meridian admin: purge: "+err.Error(), http.StatusBadRequest)
			return
		case err != nil:
			resp.Warning = "recorded here, not yet replicated: " + err.Error()
		}
		resp.ID, resp.Replicated = rec.ID, err == nil
		if err == nil {
			// Purge returns nil both when it published and when NATS was
			// away and it queued the record on disk: only a node that is
			// connected with nothing waiting has sent it.
			if st := n.Status(); st.Degraded {
				resp.Replicated, resp.Queued = false, true
				resp.Warning = fmt.Sprintf("NATS is unreachable: applied here and queued (%d waiting); it replicates to the other PoPs when NATS is back", st.Queued)
			}
		}
	}
	resp.Local, err = p.cache.Purge(r.Context(), sel)
	if err != nil {
		http.Error(w, "meridian admin: purge: "+err.Error(), http.StatusInternalServerError)
		return
	}
	if hint := p.purgeHint(sel); hint != "" {
		if resp.Warning != "" {
			resp.Warning += "; "
		}
		resp.Warning += hint
	}
	p.log.Info("purge requested", "site", sel.Site, "kind", sel.Kind.String(), "value", sel.Value, "soft", sel.Soft, "id", resp.ID, "purged_here", resp.Local)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(resp)
}

// purgeHint explains why a URL or prefix purge of sel may match nothing:
// cache keys hold the request's host (lower-cased, without port or trailing
// dot), so a URL whose host is not one of the site's selects none of its
// objects. "" when there is nothing to say.
func (p *PoP) purgeHint(sel cache.Selector) string {
	if sel.Kind != cache.ByURL && sel.Kind != cache.ByPrefix {
		return ""
	}
	u, err := url.Parse(sel.Value)
	if err != nil || u.Host == "" {
		return "" // Validate refused these
	}
	rt := p.router.Load()
	site := rt.byName(sel.Site)
	if site == nil {
		return ""
	}
	if serving := rt.lookup(u.Host); serving != site {
		hosts := strings.Join(site.Hosts, ", ")
		if site.Default {
			hosts += ", and as the default site any host no other site claims"
		}
		msg := fmt.Sprintf("%s is not a host of site %s (its hosts: %s)", u.Scheme+"://"+u.Host+"/", site.Name, hosts)
		if serving != nil {
			msg += fmt.Sprintf("; %s belongs to site %s", normalizeHost(u.Host), serving.Name)
		}
		return msg + "; cache keys hold the request's host, so this purge matches none of the site's objects"
	}
	// The port a client used is no part of a cache key, so a purge with or
	// without it selects the same objects: nothing to add when the host is
	// right.
	return ""
}

func (p *PoP) hasSite(name string) bool { return p.router.Load().byName(name) != nil }

// byName is the site called name, or nil.
func (rt *router) byName(name string) *siteEntry {
	for _, s := range rt.all {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// applyReplicatedPurges removes from this PoP's tiers what purges recorded
// elsewhere select. Correctness does not wait for it (reads check the purge
// log); it frees the space and spares a lookup.
func (p *PoP) applyReplicatedPurges(ctx context.Context) {
	n := p.opts.Sync
	if n == nil {
		return
	}
	queue := make(chan statesync.PurgeRecord, 1024)
	stop := n.Watch(func(e statesync.Event) {
		// Purges recorded here were applied by handlePurge already (the
		// sync node is named after the PoP).
		if e.Purge == nil || e.Purge.Origin == p.opts.ID {
			return
		}
		select {
		case queue <- *e.Purge:
		default:
			// The read-time check keeps this correct; only the eager sweep is skipped.
			p.log.Warn("purge sweep queue full; the object will be dropped when next read", "site", e.Purge.Site, "id", e.Purge.ID)
		}
	})
	p.wg.Go(func() {
		defer stop()
		for {
			select {
			case <-ctx.Done():
				return
			case rec := <-queue:
				kind, err := cache.ParseSelectorKind(string(rec.Kind))
				if err != nil {
					p.log.Warn("replicated purge has an unknown kind", "id", rec.ID, "kind", rec.Kind)
					continue
				}
				sctx, cancel := context.WithTimeout(ctx, time.Minute)
				n, err := p.cache.Purge(sctx, cache.Selector{Site: rec.Site, Kind: kind, Value: rec.Value, Soft: rec.Soft})
				cancel()
				if err != nil {
					p.log.Warn("replicated purge sweep failed; reads still honour it", "id", rec.ID, "err", err)
					continue
				}
				p.log.Info("replicated purge applied", "id", rec.ID, "from", rec.Origin, "site", rec.Site, "kind", rec.Kind, "value", rec.Value, "objects", n)
			}
		}
	})
}
