// Package rollout owns the upload and rollout path of site owners' plugins:
// the admin API that accepts a plugin (per-site token, size limit,
// validation, content hash), the JetStream object store that holds the
// blobs, the version catalogue, the site chains, the deployment watcher that
// makes every PoP fetch, verify, compile and activate what the deployment
// records ask for, the canary split, the automatic rollback, and the
// gathering of a site's plugin log lines from every PoP (logs.go).
//
// It must not run plugins (plugins.Host does), speak the plugin contract
// (plugins/abi) or touch HTTP requests of sites (middleware/plugin does; it
// asks Manager.Chain which chain a request runs). It must not write any
// state but its own: blobs and catalogue in JetStream, deployment records
// through statesync.
//
// # Where things live
//
//   - Blobs: JetStream object store MERIDIAN_PLUGINS, object name
//     "<site>/<plugin>/<sha256 hex>". Immutable; the store checks its own
//     digest and every PoP checks the SHA-256 again before compiling.
//   - Version catalogue: JetStream KV bucket MERIDIAN_PLUGIN_META, key
//     "v.<site>.<plugin>.<n>" holding a JSON Version. Numbers are assigned at
//     upload with a create-if-absent, so two uploads racing on two PoPs never
//     get the same number; the same bytes uploaded again keep their number.
//   - Site chains (which plugins a site runs, in which order, each with its
//     config and the headers it sees): the same bucket, key "chain.<site>",
//     a JSON ChainDoc. The site owner edits it through the admin API (a push
//     appends the plugin when it is not in the chain yet). Every PoP watches
//     the key range and rebuilds its chains; the chain is site-owner data, not
//     ops config, so it is not in the YAML.
//   - Plugin log lines: in each PoP's plugins.Host only (recent lines per
//     site, in memory). A logs request asks the other PoPs on NATS subject
//     LogsSubject(site) ("meridian.plugins.logs.<site>") and merges their
//     answers (at most one NATS message each, older lines left out and
//     counted when over the max payload) within Options.LogsWait.
//   - Deployments: statesync "deploy/<site>/<plugin>" records
//     (statesync.Deployment, last writer wins), see the encoding below.
//
// # Deployment record encoding
//
// statesync.Deployment has one Version and one SHA256, but a canary needs
// two versions. The record says:
//
//   - CanaryPercent 100, Version "N": version N takes all traffic.
//   - CanaryPercent p < 100, Version "N base B": version N (SHA256) takes p%
//     of requests, version B the rest. Without " base B" the rest runs the
//     chain without this plugin.
//   - Version "0": the plugin runs nowhere (the automatic rollback of a
//     canary that had no base).
//   - A canary's Version may end in " entry <JSON ChainEntry>" (after the
//     versions: "N base B entry {...}"): canary requests run with that
//     config and those headers instead of the chain entry's, which the
//     stable share keeps (Target.Entry). The entry rides in the record so
//     that a PoP switches code and config in one step; a record without it
//     means what it did before. PoPs older than this encoding refuse such a
//     record (logged) and keep running what they ran until the next
//     record they can read (a promotion or rollback).
//
// RolledBack marks records written by a rollback (manual or automatic); By
// names who wrote it ("site:<name>", "ops", "auto-rollback@<pop>").
//
// # Without NATS
//
// With Options.CacheDir a PoP keeps a copy of the blobs it runs, their
// catalogue entries and the site chains; the deployment records survive in
// statesync's snapshot. A PoP restarted while NATS is unreachable therefore
// runs its plugins again; uploads and rollbacks answer 503 until JetStream
// is back, which Start keeps retrying in the background.
//
// # Start-up
//
// Start returns at once; WaitReady says when every plugin deployed before
// the PoP started (the deployment records statesync has at Start) that a
// site's chain runs is active, or failed to load once. A PoP opens its
// listeners after it (the stack waits up to 15 s). Until such a plugin is
// active, a fail-closed chain names it with plugins.Entry.Unavailable, so
// that its requests answer 503 instead of being served without it, and a
// fail-open chain leaves it out; plugins deployed later are not waited for
// (the site ran without them before). A failed load is logged once and
// retried every CheckInterval.
//
// # Canary and automatic rollback
//
// Manager.Chain picks the canary's slot for CanaryPercent% of requests (per
// request, independently). Each PoP reads its canary's calls and failures
// from the Host's metrics (Options.Metrics); once a canary has had
// CanaryMinCalls calls on that PoP and more than CanaryErrorThreshold of
// them failed (trap, timeout, memory, bad output, breaker open, ...), the PoP
// writes a rollback record (base version, RolledBack, By
// "auto-rollback@<pop>"), which every PoP follows.
//
// # Wiring (cmd/meridian)
//
//	mg, err := rollout.New(rollout.Options{PoPID: id, Host: host, Sync: node, Conn: nc,
//		Authenticate: func(r *http.Request) (bool, string, bool) {
//			p, ok := creds.Authenticate(r) // gateway.Credentials
//			return p.Ops, p.Site, ok
//		},
//		Metrics: reg, Registerer: reg, // the registry the Host registers on
//		CacheDir: filepath.Join(dataDir, "plugins"), Logger: log})
//	err = mg.Start(ctx); defer mg.Close()
//	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
//	err = mg.WaitReady(wctx); cancel() // before the PoP's listeners open; an error: log it and serve
//	adminRouter.Handle("/admin/plugins/*", mg.Handler()) // full paths
//	pluginmw.New(pluginmw.Options{Host: host, Chain: func(r *http.Request) *plugins.Chain {
//		return mg.Chain(siteName(r)) }, ...})
//
// # Versions in the local Host
//
// Each global version N of plugin P runs in its own slot of plugins.Host,
// named "P@N", so metrics, log lines and the circuit breaker are per version
// and a canary and its base run side by side. Slots a PoP no longer needs are
// removed after RetireAfter, when no request can still hold a chain naming
// them. The Host labels a slot's series plugin="P@N", version="1" (its own
// count of uploads to the slot) unless it maps them with MetricLabels to
// plugin="P", version="N"; the canary checks read either.
package rollout
