package rollout

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/meridian-edge/meridian/plugins"
)

// Handler is the admin API, mounted on a PoP's admin listener under
// /admin/plugins/ (the paths below are absolute). Every request needs
// "Authorization: Bearer TOKEN": a site owner's token for its own site, or
// the ops token. Answers are JSON; errors are {"error": "..."}. A site this
// PoP does not serve (Options.Sites) answers 404.
//
//	POST /admin/plugins/{site}/{plugin}            body: the wasm (push)
//	     ?canary=P                                 P% of requests (default 100)
//	     &config=KEY=VALUE&request_header=NAME&response_header=NAME
//	                                               the plugin's entry (below)
//	GET  /admin/plugins/{site}                     chain, deployments, versions
//	POST /admin/plugins/{site}/{plugin}/deploy     {"version":N,"canary_percent":P}
//	POST /admin/plugins/{site}/{plugin}/rollback   {"version":N} (optional)
//	GET  /admin/plugins/{site}/logs?plugin=P&limit=N&pop=ID
//	                                               lines of every PoP (LogsAnswer);
//	                                               pop=local: this PoP's only
//	GET  /admin/plugins/{site}/chain
//	PUT  /admin/plugins/{site}/chain               body: ChainDoc
//
// A push's entry (its config and headers) is versioned with the code it
// was pushed with. Without entry parameters the plugin's entry is kept.
//
//   - A push to all requests (no canary, or canary=100) sets the plugin's
//     chain entry at once, as does a push of a plugin not in the chain yet.
//   - A push with canary=P below 100 leaves the chain entry alone: the
//     entry goes with the canary (the deployment's "canary_entry"), so that
//     canary requests run the new version with the new entry and the others
//     the running version with the chain's entry. A canary pushed without
//     entry parameters runs with the chain's entry. A canary's entry is at
//     most MaxCanaryEntry bytes of JSON (400 beyond, nothing stored).
//   - Deploy of the running canary's version at 100 (promote) writes its
//     entry into the chain; deploy of it at another share keeps the entry.
//   - Rollback, manual or automatic, drops the canary and its entry: the
//     chain entry, which the canary never changed, is what runs.
//   - Entry parameters give the whole entry (config and both header
//     lists; what is not named is empty), for a canary as for all requests.
//     A chain PUT while a canary has its own entry changes what the stable
//     share runs; the canary keeps its entry until promoted or rolled back.
//   - A push with canary below 100 of the bytes that already are the stable
//     version answers 409 and changes nothing, with or without a new entry:
//     a canary is another build, counted apart from the stable one so that
//     its own error rate decides its rollback. A change of config alone is a
//     push without canary (all requests at once); to try a config on a
//     share of requests, push a rebuild as a canary with that config.
func (mg *Manager) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /admin/plugins/{site}/{plugin}", mg.site(mg.push))
	mux.HandleFunc("GET /admin/plugins/{site}", mg.site(mg.list))
	mux.HandleFunc("GET /admin/plugins/{site}/{$}", mg.site(mg.list))
	mux.HandleFunc("POST /admin/plugins/{site}/{plugin}/deploy", mg.site(mg.deployHandler))
	mux.HandleFunc("POST /admin/plugins/{site}/{plugin}/rollback", mg.site(mg.rollback))
	mux.HandleFunc("DELETE /admin/plugins/{site}/{plugin}", mg.site(mg.remove))
	// Logs travel over core NATS and come from memory, so they answer
	// while JetStream is down: that is when an owner most needs them.
	mux.HandleFunc("GET /admin/plugins/{site}/logs", mg.siteAuth(mg.logs))
	mux.HandleFunc("GET /admin/plugins/{site}/chain", mg.site(mg.getChain))
	mux.HandleFunc("PUT /admin/plugins/{site}/chain", mg.site(mg.putChain))
	return mux
}

// Who wrote a record, for By fields.
type principal struct {
	by string
}

// site authenticates and authorises a request for its {site}, and answers
// 503 while the plugin store (JetStream) has not been reached.
func (mg *Manager) site(next func(w http.ResponseWriter, r *http.Request, site string, who principal)) http.HandlerFunc {
	return mg.siteAuth(func(w http.ResponseWriter, r *http.Request, site string, who principal) {
		if mg.st.Load() == nil {
			writeError(w, http.StatusServiceUnavailable, "this PoP cannot reach JetStream (NATS) now, where plugins and their versions are kept; try again or use another PoP")
			return
		}
		next(w, r, site, who)
	})
}

// siteAuth authenticates and authorises a request for its {site}.
func (mg *Manager) siteAuth(next func(w http.ResponseWriter, r *http.Request, site string, who principal)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if mg.opts.Authenticate == nil {
			writeError(w, http.StatusForbidden, "plugin admin API is disabled on this PoP: no credentials are configured")
			return
		}
		ops, own, ok := mg.opts.Authenticate(r)
		if !ok {
			status, challenge, msg := http.StatusUnauthorized, `Bearer realm="meridian admin"`, "send the site owner's or the ops token as 'Authorization: Bearer TOKEN'"
			if mg.opts.Refusal != nil {
				status, challenge, msg = mg.opts.Refusal(r)
			}
			if challenge != "" {
				w.Header().Set("WWW-Authenticate", challenge)
			}
			writeError(w, status, msg)
			return
		}
		site := r.PathValue("site")
		if err := checkSite(site); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		if !ops && own != site {
			writeError(w, http.StatusForbidden, fmt.Sprintf("this token belongs to site %q; it cannot read or change site %q", own, site))
			return
		}
		// After the token checks: only the ops token may learn which sites
		// exist; a site owner's token only ever reaches here for its own site.
		if msg, ok := mg.unknownSite(site, ops); !ok {
			writeError(w, http.StatusNotFound, msg)
			return
		}
		who := principal{by: "ops"}
		if !ops {
			who.by = "site:" + own
		}
		next(w, r, site, who)
	}
}

// unknownSite checks site against Options.Sites; when the PoP does not
// serve it, ok is false and msg says so (listing the sites to ops only).
func (mg *Manager) unknownSite(site string, ops bool) (msg string, ok bool) {
	if mg.opts.Sites == nil {
		return "", true
	}
	known := slices.Clone(mg.opts.Sites())
	if slices.Contains(known, site) {
		return "", true
	}
	if !ops {
		return fmt.Sprintf("unknown site %q: this PoP does not serve it (was it removed from the configuration?)", site), false
	}
	if len(known) == 0 {
		return fmt.Sprintf("unknown site %q: this PoP serves no sites", site), false
	}
	slices.Sort(known)
	return fmt.Sprintf("unknown site %q: the sites of this PoP are %s", site, strings.Join(known, ", ")), false
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

// PushResult answers a push.
type PushResult struct {
	Version
	// New is false when the same bytes were pushed before (same version).
	New           bool     `json:"new"`
	CanaryPercent int      `json:"canary_percent"`
	Deployment    Target   `json:"deployment"`
	Chain         ChainDoc `json:"chain"`
}

func (mg *Manager) push(w http.ResponseWriter, r *http.Request, site string, who principal) {
	plugin := r.PathValue("plugin")
	if err := checkPlugin(plugin); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	q := r.URL.Query()
	canary := 100
	if s := q.Get("canary"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 || n > 100 {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("canary=%q: want a percentage of requests, 0..100", s))
			return
		}
		canary = n
	}
	entry, setEntry, err := entryFromQuery(plugin, q)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	var entryText string
	if setEntry && canary < 100 {
		if entryText, err = encodeEntry(entry); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
	}
	if r.ContentLength > mg.opts.MaxUpload {
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("plugin of %d bytes is over this PoP's %d byte limit", r.ContentLength, mg.opts.MaxUpload))
		return
	}
	wasm, err := io.ReadAll(http.MaxBytesReader(w, r.Body, mg.opts.MaxUpload))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("plugin is over this PoP's %d byte limit", mg.opts.MaxUpload))
			return
		}
		writeError(w, http.StatusBadRequest, "reading the upload failed: "+err.Error())
		return
	}
	if len(wasm) == 0 {
		writeError(w, http.StatusBadRequest, "empty upload: send the plugin's .wasm as the request body")
		return
	}
	sum := sha256.Sum256(wasm)
	sha := hex.EncodeToString(sum[:])
	ctx := r.Context()

	// A canary of the bytes that already take the stable share would try
	// nothing: refuse it before anything is stored or the chain entry is
	// changed, rather than answer as if a canary had started.
	if canary < 100 {
		if msg, err := mg.canaryOfStable(ctx, site, plugin, sha); err != nil {
			writeError(w, http.StatusServiceUnavailable, err.Error())
			return
		} else if msg != "" {
			writeError(w, http.StatusConflict, msg)
			return
		}
	}

	// Validate with the Host's own checks (compiles, exports on_request,
	// imports only our host functions, starts), without a slot: the
	// version is activated under its own slot once its number is known.
	if err := mg.opts.Host.Validate(ctx, site, wasm); err != nil {
		var ve *plugins.ValidationError
		if errors.As(err, &ve) {
			writeError(w, http.StatusUnprocessableEntity, ve.Error())
			return
		}
		writeError(w, http.StatusInternalServerError, "validating the plugin failed: "+err.Error())
		return
	}
	if err := mg.st.Load().putBlob(ctx, site, plugin, sha, wasm); err != nil {
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	v, isNew, err := mg.st.Load().addVersion(ctx, Version{Site: site, Plugin: plugin, SHA256: sha, Size: len(wasm),
		Uploaded: time.Now().UTC(), By: who.by, PoP: mg.opts.PoPID})
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	// A canary's config and headers go with the canary (in its deployment
	// record), not into the chain, which the stable share keeps running:
	// the chain entry only changes for a push to all requests, or for a
	// plugin not in the chain yet (no stable share runs it).
	canaryEntry := false
	doc, err := mg.st.Load().updateChain(ctx, site, func(d *ChainDoc) bool {
		i := d.index(plugin)
		canaryEntry = false
		switch {
		case i < 0:
			d.Entries = append(d.Entries, entry)
			return true
		case setEntry && canary < 100:
			canaryEntry = true
		case setEntry:
			d.Entries[i] = entry
			return true
		}
		return false
	})
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	t := Target{Stable: v.Version}
	if canary < 100 {
		cur := mg.current(site, plugin)
		if cur.Stable == v.Version {
			// The deployment changed between canaryOfStable and now.
			writeError(w, http.StatusConflict, canaryOfStableMsg(site, plugin, cur))
			return
		}
		t = Target{Canary: v.Version, Percent: canary, Stable: cur.Stable}
		switch {
		case canaryEntry:
			t.Entry = entryText // checked before anything was stored
		case !setEntry && cur.Canary == v.Version:
			t.Entry = cur.Entry // the running canary at a new share: its entry is kept
		}
	}
	if err := mg.deploy(ctx, pluginKey{site, plugin}, t, false, who.by); err != nil {
		writeError(w, http.StatusServiceUnavailable, "recording the deployment failed: "+err.Error())
		return
	}
	mg.log.Info("plugin pushed", "site", site, "plugin", plugin, "version", v.Version, "sha256", sha[:12], "bytes", len(wasm), "canary_percent", t.percent(), "by", who.by)
	status := http.StatusCreated
	if !isNew {
		status = http.StatusOK
	}
	writeJSON(w, status, PushResult{Version: v, New: isNew, CanaryPercent: t.percent(), Deployment: t, Chain: doc})
}

// canaryOfStable returns a refusal message when sha is already stored as
// the version that takes the stable share of site/plugin; "" otherwise.
func (mg *Manager) canaryOfStable(ctx context.Context, site, plugin, sha string) (string, error) {
	cur := mg.current(site, plugin)
	if cur.Stable == 0 {
		return "", nil
	}
	v, err := mg.st.Load().version(ctx, site, plugin, cur.Stable)
	var missing *noVersionError
	switch {
	case errors.As(err, &missing):
		return "", nil
	case err != nil:
		return "", err
	case v.SHA256 == sha:
		return canaryOfStableMsg(site, plugin, cur), nil
	}
	return "", nil
}

// canaryOfStableMsg says why a canary of the stable version is refused and
// what to do instead.
func canaryOfStableMsg(site, plugin string, cur Target) string {
	running := "takes all requests"
	if cur.Canary != 0 {
		running = fmt.Sprintf("is the stable version (version %d runs as a %d%% canary)", cur.Canary, cur.Percent)
	}
	return fmt.Sprintf("these bytes are already version %d of %s/%s, which %s: a canary needs a different build "+
		"(it runs beside the stable version, which its errors are told apart from, and is rolled back alone); nothing was changed. "+
		"To change only the config or headers, push without a canary (--canary in the CLI, canary= in the API): "+
		"that applies to all requests at once. To try a config on a share of requests, rebuild the plugin and push it "+
		"with the canary and the config. To move between stored versions use "+
		"'meridian plugin promote --version N [--canary PCT]' or 'meridian plugin rollback' "+
		"(POST .../deploy or .../rollback in the API)", cur.Stable, site, plugin, running)
}

// entryFromQuery builds a chain entry from push parameters; set is true
// when any was given.
func entryFromQuery(plugin string, q map[string][]string) (ChainEntry, bool, error) {
	e := ChainEntry{Plugin: plugin}
	set := false
	for _, kv := range q["config"] {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return e, false, fmt.Errorf("config %q: want KEY=VALUE (--config KEY=VALUE in the CLI, config=KEY=VALUE in the API)", kv)
		}
		if e.Config == nil {
			e.Config = map[string]string{}
		}
		e.Config[k] = v
		set = true
	}
	for _, h := range q["request_header"] {
		e.RequestHeaders = append(e.RequestHeaders, h)
		set = true
	}
	for _, h := range q["response_header"] {
		e.ResponseHeaders = append(e.ResponseHeaders, h)
		set = true
	}
	return e, set, nil
}

// current is the decoded deployment record of a plugin (zero if none).
func (mg *Manager) current(site, plugin string) Target {
	d, ok := mg.opts.Sync.Deployment(site, plugin)
	if !ok {
		return Target{}
	}
	t, err := decodeTarget(d)
	if err != nil {
		return Target{}
	}
	return t
}

// PluginStatus is one plugin of a site in a list answer.
type PluginStatus struct {
	Plugin string `json:"plugin"`
	// Deployment is the record every PoP follows; nil before the first push.
	Deployment *DeploymentStatus `json:"deployment,omitempty"`
	// Versions is the catalogue, oldest first.
	Versions []Version `json:"versions"`
	// Local is what this PoP runs now (it may lag the record briefly).
	Local *Target `json:"local,omitempty"`
	// Pending is set when this PoP failed to apply the record (retrying).
	Pending string `json:"pending,omitempty"`
	// Health is how each version this PoP runs (Local's stable and canary)
	// has been doing here, by version; empty when it runs none.
	Health []VersionHealth `json:"health,omitempty"`
	// PoPs is, when every PoP was asked (pops=all), each answering PoP's
	// Local, Pending and Health, this one's included, by PoP id; PoPs that
	// neither run nor failed to apply the plugin are left out.
	PoPs []PoPPlugin `json:"pops,omitempty"`
}

// PoPPlugin is what one PoP runs of a plugin and how it is doing there.
type PoPPlugin struct {
	// PoP is the PoP whose view this is; Plugin the plugin's name.
	PoP    string `json:"pop"`
	Plugin string `json:"plugin"`
	// Local is what the PoP runs of the plugin; Health how each of those
	// versions is doing there (as PluginStatus.Local and Health).
	Local  *Target         `json:"local,omitempty"`
	Health []VersionHealth `json:"health,omitempty"`
	// Pending is set when the PoP failed to apply the record (retrying).
	Pending string `json:"pending,omitempty"`
}

// VersionHealth is the health of one version on the PoP that answered.
type VersionHealth struct {
	Version int `json:"version"`
	plugins.Health
}

// DeploymentStatus is a decoded deployment record.
type DeploymentStatus struct {
	Target
	RolledBack bool      `json:"rolled_back,omitempty"`
	At         time.Time `json:"at"`
	By         string    `json:"by,omitempty"`
}

// SiteStatus answers GET /admin/plugins/{site}.
type SiteStatus struct {
	Site    string         `json:"site"`
	PoP     string         `json:"pop"`
	Chain   ChainDoc       `json:"chain"`
	Plugins []PluginStatus `json:"plugins"`
	// Answered, NotAnswered and Notes are set when every PoP was asked
	// (pops=all), as in a logs answer: whose view the PluginStatus.PoPs
	// hold, who was silent, and in words what the answer lacks.
	Answered    []string `json:"answered,omitempty"`
	NotAnswered []string `json:"not_answered,omitempty"`
	Notes       []string `json:"notes,omitempty"`
}

// list answers GET /admin/plugins/{site}; with pops=all it also asks every
// PoP what it runs and how each version is doing there (GatherStatus).
func (mg *Manager) list(w http.ResponseWriter, r *http.Request, site string, _ principal) {
	var st SiteStatus
	var err error
	switch pops := r.URL.Query().Get("pops"); pops {
	case "":
		st, err = mg.Status(r.Context(), site)
	case "all":
		st, err = mg.GatherStatus(r.Context(), site)
	default:
		writeError(w, http.StatusBadRequest, fmt.Sprintf("pops=%q: want \"all\" to ask every PoP, or no pops for this PoP's view", pops))
		return
	}
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, st)
}

// GatherStatus is Status with every PoP's view of each plugin in
// PluginStatus.PoPs: a version failing on one PoP only (its origin, its
// clients, its region's traffic) shows, whichever PoP is asked. It waits
// for the PoPs as GatherLogs does; a silent PoP is named, not an error.
func (mg *Manager) GatherStatus(ctx context.Context, site string) (SiteStatus, error) {
	st, err := mg.Status(ctx, site)
	if err != nil {
		return st, err
	}
	g := mg.gather(ctx, logsQuery{V: logsWire, Site: site, From: mg.opts.PoPID, Health: true}, "their health is unknown")
	st.Answered, st.NotAnswered, st.Notes = g.answered, g.notAnswered, g.notes
	views := mg.localPlugins(site)
	for _, rep := range g.replies {
		for _, v := range rep.Plugins {
			v.PoP = rep.PoP // an answer speaks for its own PoP only
			views = append(views, v)
		}
	}
	slices.SortFunc(views, func(a, b PoPPlugin) int { return strings.Compare(a.PoP, b.PoP) })
	for i := range st.Plugins {
		for _, v := range views {
			if v.Plugin == st.Plugins[i].Plugin {
				st.Plugins[i].PoPs = append(st.Plugins[i].PoPs, v)
			}
		}
	}
	return st, nil
}

// localPlugins is this PoP's view of site's plugins: those it runs or
// failed to apply.
func (mg *Manager) localPlugins(site string) []PoPPlugin {
	mg.mu.Lock()
	defer mg.mu.Unlock()
	keys := map[pluginKey]bool{}
	for k := range mg.applied {
		keys[k] = true
	}
	for k := range mg.failed {
		keys[k] = true
	}
	var out []PoPPlugin
	for k := range keys {
		if k.site != site {
			continue
		}
		v := mg.viewLocked(k)
		if v.Local != nil && *v.Local == (Target{}) {
			v.Local = nil // removed here: runs nothing
		}
		if v.Local != nil || v.Pending != "" {
			out = append(out, v)
		}
	}
	return out
}

// viewLocked is this PoP's view of plugin k: what it runs (nil before it
// applied a record) and how each version does, and why it failed to
// apply one. Callers hold mg.mu.
func (mg *Manager) viewLocked(k pluginKey) PoPPlugin {
	v := PoPPlugin{PoP: mg.opts.PoPID, Plugin: k.plugin}
	if a := mg.applied[k]; a != nil {
		t := a.target
		v.Local, v.Health = &t, mg.health(k.site, k.plugin, t)
	}
	if err := mg.failed[k]; err != nil {
		v.Pending = err.Error()
	}
	return v
}

// Status reports site's chain, deployments, versions and what this PoP runs.
func (mg *Manager) Status(ctx context.Context, site string) (SiteStatus, error) {
	doc, _, err := mg.st.Load().chain(ctx, site)
	if err != nil {
		return SiteStatus{}, err
	}
	names, err := mg.st.Load().plugins(ctx, site)
	if err != nil {
		return SiteStatus{}, err
	}
	for _, d := range mg.opts.Sync.Deployments(site) {
		if !slices.Contains(names, d.Plugin) {
			names = append(names, d.Plugin)
		}
	}
	slices.Sort(names)
	out := SiteStatus{Site: site, PoP: mg.opts.PoPID, Chain: doc, Plugins: []PluginStatus{}}
	for _, name := range names {
		ps := PluginStatus{Plugin: name}
		if ps.Versions, err = mg.st.Load().versions(ctx, site, name); err != nil {
			return SiteStatus{}, err
		}
		if d, ok := mg.opts.Sync.Deployment(site, name); ok {
			t, _ := decodeTarget(d)
			ps.Deployment = &DeploymentStatus{Target: t, RolledBack: d.RolledBack, At: d.At, By: d.By}
		}
		mg.mu.Lock()
		v := mg.viewLocked(pluginKey{site, name})
		mg.mu.Unlock()
		ps.Local, ps.Health, ps.Pending = v.Local, v.Health, v.Pending
		out.Plugins = append(out.Plugins, ps)
	}
	return out, nil
}

// health reports the Host's health of the versions t runs, stable first.
func (mg *Manager) health(site, name string, t Target) []VersionHealth {
	var out []VersionHealth
	for _, v := range [...]int{t.Stable, t.Canary} {
		if v == 0 {
			continue
		}
		if h, ok := mg.opts.Host.Health(site, slotName(name, v)); ok {
			out = append(out, VersionHealth{Version: v, Health: h})
		}
	}
	return out
}

// DeployRequest asks for a version at a canary percentage (promotion is
// the canary's version at 100).
type DeployRequest struct {
	Version       int  `json:"version"`
	CanaryPercent *int `json:"canary_percent,omitempty"`
}

func (mg *Manager) deployHandler(w http.ResponseWriter, r *http.Request, site string, who principal) {
	plugin := r.PathValue("plugin")
	if err := checkPlugin(plugin); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	var req DeployRequest
	if !readJSON(w, r, &req) {
		return
	}
	pct := 100
	if req.CanaryPercent != nil {
		pct = *req.CanaryPercent
	}
	if pct < 0 || pct > 100 {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("canary_percent %d: want 0..100", pct))
		return
	}
	if _, err := mg.st.Load().version(r.Context(), site, plugin, req.Version); err != nil {
		writeError(w, http.StatusNotFound, err.Error())
		return
	}
	t := Target{Stable: req.Version}
	cur := mg.current(site, plugin)
	if pct < 100 && cur.Stable != req.Version {
		t = Target{Canary: req.Version, Percent: pct, Stable: cur.Stable}
		if cur.Canary == req.Version {
			t.Entry = cur.Entry // a new share for the running canary: same config
		}
	}
	if own, ok := cur.CanaryEntry(); ok && pct == 100 && cur.Canary == req.Version {
		// Promotion of a canary with its own entry: the entry becomes the
		// chain's, then the record makes the version stable. The chain
		// (JetStream) and the record (statesync) travel apart: until both
		// reached a PoP, its stable share may run the old version with the
		// new entry (normally milliseconds). The chain goes first as its
		// write is the one likely to fail (JetStream), which then changes
		// nothing; a promotion whose record failed after it is finished by
		// promoting again (the record still names the canary's entry).
		_, err := mg.st.Load().updateChain(r.Context(), site, func(d *ChainDoc) bool {
			i := d.index(plugin)
			if i < 0 {
				return false // taken out of the chain meanwhile: stays out
			}
			d.Entries[i] = own
			return true
		})
		if err != nil {
			writeError(w, http.StatusServiceUnavailable, "promoting the canary's config into the chain failed; nothing was changed: "+err.Error())
			return
		}
	}
	if err := mg.deploy(r.Context(), pluginKey{site, plugin}, t, false, who.by); err != nil {
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, t)
}

// RollbackRequest names the version to go back to; 0 picks (see rollback).
type RollbackRequest struct {
	Version int `json:"version"`
}

// rollback goes back to the asked version; without one it ends a running
// canary (back to its base), or goes to the newest version below the one
// running.
func (mg *Manager) rollback(w http.ResponseWriter, r *http.Request, site string, who principal) {
	plugin := r.PathValue("plugin")
	if err := checkPlugin(plugin); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	var req RollbackRequest
	if !readJSON(w, r, &req) {
		return
	}
	ctx := r.Context()
	cur := mg.current(site, plugin)
	to := req.Version
	if to == 0 {
		switch {
		case cur.Canary != 0 && cur.Stable != 0:
			to = cur.Stable
		case cur.Canary == 0 && cur.Stable == 0:
			writeError(w, http.StatusConflict, fmt.Sprintf("%s/%s has no deployment to roll back", site, plugin))
			return
		default:
			running := cur.Stable
			if cur.Canary != 0 {
				running = cur.Canary
			}
			vs, err := mg.st.Load().versions(ctx, site, plugin)
			if err != nil {
				writeError(w, http.StatusServiceUnavailable, err.Error())
				return
			}
			for _, v := range vs {
				if v.Version < running {
					to = v.Version
				}
			}
			if to == 0 {
				writeError(w, http.StatusConflict, fmt.Sprintf("%s/%s runs version %d and has no earlier version; name the version to go back to (--version N in the CLI, {\"version\":N} in the API)", site, plugin, running))
				return
			}
		}
	} else if _, err := mg.st.Load().version(ctx, site, plugin, to); err != nil {
		writeError(w, http.StatusNotFound, err.Error())
		return
	}
	t := Target{Stable: to}
	if err := mg.deploy(ctx, pluginKey{site, plugin}, t, true, who.by); err != nil {
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	mg.log.Info("plugin rolled back", "site", site, "plugin", plugin, "to", to, "by", who.by)
	writeJSON(w, http.StatusOK, t)
}

// RemoveResult answers DELETE /admin/plugins/{site}/{plugin}.
type RemoveResult struct {
	Site   string `json:"site"`
	Plugin string `json:"plugin"`
	// Chain is the site's chain without the plugin.
	Chain ChainDoc `json:"chain"`
	// Versions are the plugin's stored versions, oldest first: removal
	// keeps them (and the plugin's KV data), so pushing one again puts the
	// plugin back.
	Versions []int `json:"versions"`
}

// remove takes a plugin out of the site's chain and clears its deployment
// (a running canary included), so that no request on any PoP runs it and
// every PoP frees its instances. The chain goes first: it is the write
// likely to fail (JetStream), which then changes nothing, and once it is
// done no request runs the plugin even if clearing the record fails.
func (mg *Manager) remove(w http.ResponseWriter, r *http.Request, site string, who principal) {
	plugin := r.PathValue("plugin")
	if err := checkPlugin(plugin); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	ctx := r.Context()
	cur := mg.current(site, plugin)
	inChain := false
	doc, err := mg.st.Load().updateChain(ctx, site, func(d *ChainDoc) bool {
		i := d.index(plugin)
		inChain = i >= 0
		if !inChain {
			return false
		}
		d.Entries = slices.Delete(d.Entries, i, i+1)
		return true
	})
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "removing the plugin from the chain failed; nothing was changed: "+err.Error())
		return
	}
	if !inChain && cur == (Target{}) {
		names := make([]string, 0, len(doc.Entries))
		for _, e := range doc.Entries {
			names = append(names, e.Plugin)
		}
		chain := "none"
		if len(names) > 0 {
			chain = strings.Join(names, ", ")
		}
		writeError(w, http.StatusNotFound, fmt.Sprintf("site %s runs no plugin %q (its chain: %s)", site, plugin, chain))
		return
	}
	if cur != (Target{}) {
		if err := mg.deploy(ctx, pluginKey{site, plugin}, Target{}, false, who.by); err != nil {
			writeError(w, http.StatusServiceUnavailable, "the plugin left the chain, so no request runs it, but clearing its deployment failed (remove it again to finish): "+err.Error())
			return
		}
	}
	vs, err := mg.st.Load().versions(ctx, site, plugin)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	out := RemoveResult{Site: site, Plugin: plugin, Chain: doc, Versions: make([]int, 0, len(vs))}
	for _, v := range vs {
		out.Versions = append(out.Versions, v.Version)
	}
	mg.log.Info("plugin removed", "site", site, "plugin", plugin, "was", cur.versionString(), "by", who.by)
	writeJSON(w, http.StatusOK, out)
}

// LogLine is one plugin log line in a logs answer.
type LogLine struct {
	Time time.Time `json:"time"`
	// PoP is the PoP that logged the line.
	PoP     string `json:"pop"`
	Plugin  string `json:"plugin"`
	Version int    `json:"version"`
	Level   string `json:"level"`
	Msg     string `json:"msg"`
}

func levelName(l slog.Level) string { return strings.ToLower(l.String()) }

func (mg *Manager) getChain(w http.ResponseWriter, r *http.Request, site string, _ principal) {
	doc, _, err := mg.st.Load().chain(r.Context(), site)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, doc)
}

func (mg *Manager) putChain(w http.ResponseWriter, r *http.Request, site string, who principal) {
	var doc ChainDoc
	if !readJSON(w, r, &doc) {
		return
	}
	if err := doc.validate(); err != nil {
		writeError(w, http.StatusBadRequest, "chain: "+err.Error())
		return
	}
	out, err := mg.st.Load().updateChain(r.Context(), site, func(d *ChainDoc) bool { *d = doc; return true })
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	mg.log.Info("site chain set", "site", site, "entries", len(out.Entries), "by", who.by)
	writeJSON(w, http.StatusOK, out)
}

// readJSON decodes a small JSON body strictly; an empty body is the zero value.
func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
	if err != nil {
		writeError(w, http.StatusBadRequest, "reading the request body failed: "+err.Error())
		return false
	}
	if len(strings.TrimSpace(string(body))) == 0 {
		return true
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, "request body is not the expected JSON: "+err.Error())
		return false
	}
	return true
}
