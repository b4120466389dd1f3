package tlsedge

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/prometheus/client_golang/prometheus"
)

// LetsEncrypt is the production ACME directory, the default.
const LetsEncrypt = "https://acme-v02.api.letsencrypt.org/directory"

// UnknownSNI says what a handshake gets when its server name matches no site.
type UnknownSNI string

const (
	// UnknownSNIReject fails the handshake (alert "unrecognized_name"-like
	// error), so no certificate of any site is shown to a stranger. Default.
	UnknownSNIReject UnknownSNI = "reject"
	// UnknownSNIDefault completes it with the default site's certificate.
	UnknownSNIDefault UnknownSNI = "default"
)

// SiteCert says where one site's certificate comes from: exactly one of
// (CertFile and KeyFile) or ACME.
type SiteCert struct {
	// Site names the site in errors, logs and metrics.
	Site string
	// Names are the host names (SNI) the certificate serves. A PEM
	// certificate must cover all of them; a name "*.example.com" matches
	// one label, as in X.509. ACME sites cannot use wildcards (they need
	// DNS-01, which is not wired).
	Names []string
	// CertFile and KeyFile are PEM files: the certificate chain (leaf
	// first) and its private key.
	CertFile, KeyFile string
	// ACME obtains and renews the certificate automatically.
	ACME bool
}

// ACME configures automatic certificates.
type ACME struct {
	// DirectoryURL of the ACME CA; default Let's Encrypt production.
	DirectoryURL string
	// Email for the ACME account (expiry notices from the CA).
	Email string
	// TrustedRoots verify the directory's HTTPS (a private or test CA);
	// nil uses the system roots.
	TrustedRoots *x509.CertPool
	// DisableHTTP01 and DisableTLSALPN01 turn a challenge type off; at least
	// one must stay on.
	DisableHTTP01, DisableTLSALPN01 bool
	// RenewalWindowRatio is the fraction of a certificate's lifetime left
	// when renewal starts (when the CA gives no renewal info); default 1/3.
	RenewalWindowRatio float64
	// DisableOCSPStapling turns off fetching and stapling OCSP responses
	// (on by default, for certificates that name a responder).
	DisableOCSPStapling bool
}

// Options configures a Manager.
type Options struct {
	// PoP names this PoP in logs and in lock entries, and is the pop label
	// of the manager's metrics (none when empty).
	PoP string
	// Sites and their certificates.
	Sites []SiteCert
	// UnknownSNI is the answer to a server name that matches no site;
	// default UnknownSNIReject. UnknownSNIDefault needs DefaultSite.
	UnknownSNI UnknownSNI
	// DefaultSite is the site whose certificate answers unknown names when
	// UnknownSNI is UnknownSNIDefault.
	DefaultSite string
	// ACME is used by the sites with ACME set.
	ACME ACME
	// Storage holds ACME accounts, certificates and keys; required when a
	// site uses ACME. Share a jsstorage.Storage across the fleet so that one
	// PoP orders and all serve.
	Storage certmagic.Storage
	// ChallengeHost, HTTPPort and TLSPort are where this PoP answers ACME
	// challenges: its plain-HTTP listener (wrapped with HTTPChallenge) and
	// its HTTPS listener (using TLSConfig). The CA connects to ports 80 and
	// 443 of the name; set these to the ports the PoP binds (they differ
	// only behind port forwarding or in tests). Default 80 and 443.
	ChallengeHost     string
	HTTPPort, TLSPort int
	// RenewCheckInterval is how often certificates are checked for
	// renewal (and renewals by other PoPs picked up); default 10 minutes.
	RenewCheckInterval time.Duration
	// OCSPCheckInterval is how often staples are refreshed; default 1 hour.
	OCSPCheckInterval time.Duration
	// WatchInterval is how often PEM files are checked for changes;
	// default 10s; negative disables watching (Reload still works).
	WatchInterval time.Duration
	// Logger defaults to discarding.
	Logger *slog.Logger
	// Registerer receives the metrics; nil registers none.
	Registerer prometheus.Registerer
}

// Manager holds a PoP's site certificates and answers handshakes. Build it
// with New (PEM files are loaded and checked there), then Start it (ACME and
// file watching run until Stop).
type Manager struct {
	opts Options
	log  *slog.Logger

	// state is swapped whole on reload; handshakes read it lock-free.
	state atomic.Pointer[certState]
	// magic is certmagic's config, set by Start when a site uses ACME.
	magic atomic.Pointer[certmagic.Config]
	cache *certmagic.Cache
	acme  *certmagic.ACMEIssuer

	reloadMu sync.Mutex
	// runCtx lives from Start to Stop; ACME work started by SetSites runs
	// under it rather than under the caller's (often short) context.
	runCtx   context.Context
	cancel   context.CancelFunc
	stopOnce sync.Once
	wg       sync.WaitGroup

	metrics *metrics
}

// certState is one consistent view of the sites' certificates.
type certState struct {
	sites []SiteCert
	// unknown and defaultSite are what the state was built with, so that
	// the file watcher rebuilds it alike.
	unknown     UnknownSNI
	defaultSite string
	files       map[string]*fileCert // by host name (lowercase; wildcards as "*.x")
	acme        map[string]string    // host name -> site
	// defaultName is the host whose certificate answers unknown SNI.
	defaultName string
}

// New checks the options and loads every PEM certificate: a missing,
// expired, not yet valid or mismatched PEM, or one that does not cover the
// site's names, is an error that names the file.
func New(opts Options) (*Manager, error) {
	if opts.HTTPPort == 0 {
		opts.HTTPPort = 80
	}
	if opts.TLSPort == 0 {
		opts.TLSPort = 443
	}
	if opts.RenewCheckInterval == 0 {
		opts.RenewCheckInterval = 10 * time.Minute
	}
	if opts.OCSPCheckInterval == 0 {
		opts.OCSPCheckInterval = time.Hour
	}
	if opts.WatchInterval == 0 {
		opts.WatchInterval = 10 * time.Second
	}
	if opts.ACME.DirectoryURL == "" {
		opts.ACME.DirectoryURL = LetsEncrypt
	}
	if opts.ACME.DisableHTTP01 && opts.ACME.DisableTLSALPN01 {
		return nil, errors.New("tlsedge: acme: both HTTP-01 and TLS-ALPN-01 are disabled; enable at least one")
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := &Manager{opts: opts, log: log.With("component", "tls"), metrics: newMetrics()}
	st, err := m.buildState(opts.Sites, opts.UnknownSNI, opts.DefaultSite, nil)
	if err != nil {
		return nil, err
	}
	if len(st.acme) > 0 && opts.Storage == nil {
		return nil, errors.New("tlsedge: a site uses ACME but no certificate storage is configured: set tls.storage (jetstream or a directory)")
	}
	m.state.Store(st)
	// Registered last, so that a refused config registers nothing.
	if reg := opts.Registerer; reg != nil {
		if opts.PoP != "" {
			reg = prometheus.WrapRegistererWith(prometheus.Labels{"pop": opts.PoP}, reg)
		}
		if err := m.metrics.register(reg, m); err != nil {
			return nil, fmt.Errorf("tlsedge: register metrics: %w", err)
		}
	}
	return m, nil
}

// buildState checks sites and loads PEM files. Files whose size and mtime
// did not change since prev are reused rather than read again.
func (m *Manager) buildState(sites []SiteCert, unknown UnknownSNI, defaultSite string, prev *certState) (*certState, error) {
	if unknown == "" {
		unknown = UnknownSNIReject
	}
	if unknown != UnknownSNIReject && unknown != UnknownSNIDefault {
		return nil, fmt.Errorf("tlsedge: unknown_sni %q: want %q or %q", unknown, UnknownSNIReject, UnknownSNIDefault)
	}
	st := &certState{sites: sites, unknown: unknown, defaultSite: defaultSite, files: map[string]*fileCert{}, acme: map[string]string{}}
	owner := map[string]string{}
	var errs []error
	now := time.Now()
	for _, s := range sites {
		if s.Site == "" {
			errs = append(errs, errors.New("tlsedge: a site certificate has no site name"))
			continue
		}
		if len(s.Names) == 0 {
			errs = append(errs, fmt.Errorf("tlsedge: site %s: no host names to serve a certificate for", s.Site))
			continue
		}
		hasFiles := s.CertFile != "" || s.KeyFile != ""
		switch {
		case hasFiles && s.ACME:
			errs = append(errs, fmt.Errorf("tlsedge: site %s: both PEM files and ACME are set; choose one", s.Site))
			continue
		case !hasFiles && !s.ACME:
			errs = append(errs, fmt.Errorf("tlsedge: site %s: no certificate: set cert_file and key_file, or acme: true", s.Site))
			continue
		case hasFiles && (s.CertFile == "" || s.KeyFile == ""):
			errs = append(errs, fmt.Errorf("tlsedge: site %s: cert_file and key_file must both be set", s.Site))
			continue
		}
		names := make([]string, len(s.Names))
		dup := false
		for i, n := range s.Names {
			n = normalizeName(n)
			names[i] = n
			if o, ok := owner[n]; ok {
				errs = append(errs, fmt.Errorf("tlsedge: host %s is in both site %s and site %s", n, o, s.Site))
				dup = true
			}
			owner[n] = s.Site
			if s.ACME && strings.Contains(n, "*") {
				errs = append(errs, fmt.Errorf("tlsedge: site %s: ACME cannot obtain wildcard %s (needs DNS-01); use a PEM certificate", s.Site, n))
				dup = true
			}
		}
		if dup {
			continue
		}
		if s.ACME {
			for _, n := range names {
				st.acme[n] = s.Site
			}
			continue
		}
		fc := reuse(prev, s, names)
		if fc == nil {
			var err error
			if fc, err = loadFileCert(s.Site, names, s.CertFile, s.KeyFile, now); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		for _, n := range names {
			st.files[n] = fc
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if unknown == UnknownSNIDefault {
		for _, s := range sites {
			if s.Site == defaultSite {
				st.defaultName = normalizeName(s.Names[0])
			}
		}
		if st.defaultName == "" {
			return nil, fmt.Errorf("tlsedge: unknown_sni is %q but default_site %q is not a site with a certificate", UnknownSNIDefault, defaultSite)
		}
	}
	return st, nil
}

// reuse returns prev's certificate for s if its files are unchanged.
func reuse(prev *certState, s SiteCert, names []string) *fileCert {
	if prev == nil {
		return nil
	}
	fc := prev.files[names[0]]
	if fc == nil || fc.certFile != s.CertFile || fc.keyFile != s.KeyFile {
		return nil
	}
	stamp, err := fileStamp(s.CertFile, s.KeyFile)
	if err != nil || stamp != fc.stamp {
		return nil
	}
	for _, n := range names {
		if fc.leaf.VerifyHostname(n) != nil {
			return nil
		}
	}
	if time.Now().After(fc.leaf.NotAfter) {
		return nil
	}
	return fc
}

// ChallengePorts sets the ports of HTTPPort and TLSPort after New, for a
// PoP whose listeners were bound on port 0 (tests, `meridian dev`). Call it
// before Start.
func (m *Manager) ChallengePorts(httpPort, tlsPort int) {
	m.opts.HTTPPort, m.opts.TLSPort = httpPort, tlsPort
}

// Start begins ACME management of the ACME sites' names (obtaining what is
// missing from storage in the background, renewing ahead of expiry) and the
// PEM file watcher. It returns at once; handshakes for an ACME name fail
// until its certificate is obtained or loaded from storage.
func (m *Manager) Start(ctx context.Context) error {
	if m.cancel != nil {
		return errors.New("tlsedge: manager already started")
	}
	m.reloadMu.Lock()
	defer m.reloadMu.Unlock()
	ctx, m.cancel = context.WithCancel(ctx)
	m.runCtx = ctx
	st := m.state.Load()
	if names := st.acmeNames(); len(names) > 0 {
		m.startACME()
		if err := m.magic.Load().ManageAsync(ctx, names); err != nil {
			m.cancel()
			m.cache.Stop()
			return fmt.Errorf("tlsedge: manage ACME names %s: %w", strings.Join(names, ", "), err)
		}
	}
	if m.opts.WatchInterval > 0 {
		m.wg.Go(func() { m.watch(ctx) })
	}
	return nil
}

func (st *certState) acmeNames() []string {
	names := make([]string, 0, len(st.acme))
	for n := range st.acme {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// startACME builds certmagic's cache, config and issuer for this PoP.
func (m *Manager) startACME() {
	zl := zapToSlog(m.log)
	var cfg *certmagic.Config
	m.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert:   func(certmagic.Certificate) (*certmagic.Config, error) { return cfg, nil },
		RenewCheckInterval: m.opts.RenewCheckInterval,
		OCSPCheckInterval:  m.opts.OCSPCheckInterval,
		Logger:             zl,
	})
	cfg = certmagic.New(m.cache, certmagic.Config{
		Storage:            m.opts.Storage,
		Logger:             zl,
		RenewalWindowRatio: m.opts.ACME.RenewalWindowRatio,
		OCSP:               certmagic.OCSPConfig{DisableStapling: m.opts.ACME.DisableOCSPStapling},
		KeySource:          certmagic.StandardKeyGenerator{KeyType: certmagic.P256},
		OnEvent:            m.onEvent,
	})
	m.acme = certmagic.NewACMEIssuer(cfg, certmagic.ACMEIssuer{
		CA:                      m.opts.ACME.DirectoryURL,
		Email:                   m.opts.ACME.Email,
		Agreed:                  true,
		TrustedRoots:            m.opts.ACME.TrustedRoots,
		DisableHTTPChallenge:    m.opts.ACME.DisableHTTP01,
		DisableTLSALPNChallenge: m.opts.ACME.DisableTLSALPN01,
		ListenHost:              m.opts.ChallengeHost,
		AltHTTPPort:             m.opts.HTTPPort,
		AltTLSALPNPort:          m.opts.TLSPort,
		Logger:                  zl,
	})
	cfg.Issuers = []certmagic.Issuer{m.acme}
	m.magic.Store(cfg)
}

// onEvent counts certmagic's lifecycle events. The event data includes
// storage paths and CSRs; it is deliberately not logged.
func (m *Manager) onEvent(_ context.Context, event string, data map[string]any) error {
	switch event {
	case "cert_obtaining", "cert_obtained", "cert_failed", "cached_managed_cert", "cert_ocsp_revoked":
		renewal, _ := data["renewal"].(bool)
		m.metrics.acmeEvents.WithLabelValues(event, fmt.Sprint(renewal)).Inc()
		if event == "cert_failed" {
			m.log.Warn("ACME certificate request failed; the current certificate, if any, stays in service", "name", data["identifier"], "renewal", renewal, "err", data["error"])
		}
	}
	return nil
}

// Stop ends ACME maintenance and file watching and waits for them.
// Calling it again does nothing.
func (m *Manager) Stop() {
	m.reloadMu.Lock()
	cancel, cache := m.cancel, m.cache
	m.reloadMu.Unlock()
	if cancel == nil {
		return
	}
	m.stopOnce.Do(func() {
		cancel()
		m.wg.Wait()
		if cache != nil {
			cache.Stop()
		}
	})
}

// watch re-reads PEM files whose size or mtime changed.
func (m *Manager) watch(ctx context.Context) {
	t := time.NewTicker(m.opts.WatchInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := m.reload(false); err != nil {
			m.log.Error("PEM certificate reload failed; the previous certificates stay in service", "err", err)
		}
	}
}

// Reload re-reads every site's PEM files (for SIGHUP). On any error nothing
// changes and the error names the file; the previous certificates stay in
// service.
func (m *Manager) Reload() error { return m.reload(true) }

func (m *Manager) reload(force bool) error {
	m.reloadMu.Lock()
	defer m.reloadMu.Unlock()
	cur := m.state.Load()
	prev := cur
	if force {
		prev = nil
	}
	st, err := m.buildState(cur.sites, cur.unknown, cur.defaultSite, prev)
	if err != nil {
		m.metrics.reloads.WithLabelValues("error").Inc()
		return err
	}
	if changed(cur, st) {
		m.metrics.reloads.WithLabelValues("ok").Inc()
		m.log.Info("PEM certificates reloaded")
	}
	m.state.Store(st)
	return nil
}

func changed(a, b *certState) bool {
	if len(a.files) != len(b.files) {
		return true
	}
	for n, fc := range a.files {
		if b.files[n] != fc {
			return true
		}
	}
	return false
}

// SetSites replaces the sites (a config reload), keeping the unknown-SNI
// answer and default site: new PEM files are loaded and checked first
// (unchanged ones are reused), and on error nothing changes. ACME names that
// are new are managed from now on (in the background, under Start's
// context); names no longer present stop being renewed.
func (m *Manager) SetSites(sites []SiteCert) error {
	cur := m.state.Load()
	u, err := m.prepare(sites, cur.unknown, cur.defaultSite, cur)
	if err != nil {
		return err
	}
	return u.Apply()
}

// SitesUpdate is a new set of sites whose certificates are loaded and
// checked, ready to be swapped in by Apply. It lets a caller that changes
// several things at once (a config reload) check all of them before it
// changes any.
type SitesUpdate struct {
	m  *Manager
	st *certState
}

// PrepareSites checks sites (with the unknown-SNI answer and the default
// site it names) and reads every PEM file again, as SIGHUP promises, without
// changing what is served. An error names the site and file at fault.
// Apply the result to serve it.
func (m *Manager) PrepareSites(sites []SiteCert, unknown UnknownSNI, defaultSite string) (*SitesUpdate, error) {
	return m.prepare(sites, unknown, defaultSite, nil)
}

func (m *Manager) prepare(sites []SiteCert, unknown UnknownSNI, defaultSite string, prev *certState) (*SitesUpdate, error) {
	st, err := m.buildState(slices.Clone(sites), unknown, defaultSite, prev)
	if err != nil {
		m.metrics.reloads.WithLabelValues("error").Inc()
		return nil, err
	}
	if len(st.acme) > 0 && m.opts.Storage == nil {
		m.metrics.reloads.WithLabelValues("error").Inc()
		return nil, fmt.Errorf("tlsedge: site %s uses ACME but this PoP has no certificate storage (it is opened at start only when a site uses ACME): restart to apply", st.acme[st.acmeNames()[0]])
	}
	return &SitesUpdate{m: m, st: st}, nil
}

// Apply swaps the prepared sites in: handshakes already past certificate
// selection finish with the old certificate, later ones get the new set.
// ACME names that are new are managed from now on (in the background,
// under Start's context); names no longer present stop being renewed. The
// only error is certmagic refusing to manage a new ACME name, after the
// swap.
func (u *SitesUpdate) Apply() error {
	m := u.m
	m.reloadMu.Lock()
	defer m.reloadMu.Unlock()
	cur, st := m.state.Load(), u.st
	var added, removed []string
	for n := range st.acme {
		if _, ok := cur.acme[n]; !ok {
			added = append(added, n)
		}
	}
	for n := range cur.acme {
		if _, ok := st.acme[n]; !ok {
			removed = append(removed, n)
		}
	}
	slices.Sort(added)
	running := m.cancel != nil && m.runCtx.Err() == nil
	if cfg := m.magic.Load(); cfg == nil && len(added) > 0 && running {
		m.startACME()
	}
	// The files were read when the update was prepared; if they changed
	// since, their stamps differ and the watcher reads them again.
	m.state.Store(st)
	if changed(cur, st) || len(added)+len(removed) > 0 {
		m.metrics.reloads.WithLabelValues("ok").Inc()
	}
	if cfg := m.magic.Load(); cfg != nil && running {
		if len(added) > 0 {
			if err := cfg.ManageAsync(m.runCtx, added); err != nil {
				return fmt.Errorf("tlsedge: manage ACME names %s: %w", strings.Join(added, ", "), err)
			}
		}
		if len(removed) > 0 {
			m.cache.RemoveManaged(subjects(removed))
		}
	}
	return nil
}

func subjects(names []string) []certmagic.SubjectIssuer {
	out := make([]certmagic.SubjectIssuer, len(names))
	for i, n := range names {
		out[i] = certmagic.SubjectIssuer{Subject: n}
	}
	return out
}

// TLSConfig is the server-side TLS configuration of the PoP's HTTPS
// listener: TLS 1.2 and 1.3 only, AEAD suites with forward secrecy, the
// certificate chosen by SNI, ALPN h2, http/1.1 and acme-tls/1.
//
// A handshake for a name no site serves (and no default site answers) is
// refused with the alert unrecognized_name (112), as RFC 6066 section 3
// asks, not internal_error: crypto/tls sends 112 only when a config has no
// certificate at all, so GetConfigForClient hands such handshakes a config
// without any.
func (m *Manager) TLSConfig() *tls.Config {
	cfg := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		CipherSuites:   ModernCipherSuites(),
		GetCertificate: m.GetCertificate,
		NextProtos:     []string{"h2", "http/1.1", "acme-tls/1"},
	}
	refuse := cfg.Clone()
	refuse.GetCertificate = nil
	cfg.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		if m.refuses(hello) {
			m.metrics.handshakes.WithLabelValues("unknown_sni").Inc()
			return refuse, nil
		}
		return nil, nil
	}
	return cfg
}

// refuses reports whether GetCertificate would refuse hello for want of a
// site (an unknown server name, no default site), without its side
// effects (counting, asking ACME).
func (m *Manager) refuses(hello *tls.ClientHelloInfo) bool {
	if len(hello.SupportedProtos) == 1 && hello.SupportedProtos[0] == "acme-tls/1" {
		return false
	}
	st := m.state.Load()
	if st == nil {
		return false // not built by New: GetCertificate answers
	}
	return !st.serves(normalizeName(hello.ServerName)) && !st.serves(st.defaultName)
}

// serves reports whether a site has a certificate (a file, or ACME) for
// name.
func (st *certState) serves(name string) bool {
	if name == "" {
		return false
	}
	if lookupName(st.files, name) != nil {
		return true
	}
	_, ok := st.acme[name]
	return ok
}

// ModernCipherSuites are the TLS 1.2 suites offered: ECDHE with AES-GCM or
// ChaCha20-Poly1305 only (TLS 1.3 suites are not configurable and all good).
func ModernCipherSuites() []uint16 {
	return []uint16{
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
		tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
		tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
		tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
		tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
		tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
	}
}

// GetCertificate picks the certificate for a handshake: the ACME challenge
// certificate for a TLS-ALPN-01 validation, else the site's certificate by
// server name (exact, then one-label wildcard), else the unknown-SNI answer.
func (m *Manager) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if len(hello.SupportedProtos) == 1 && hello.SupportedProtos[0] == "acme-tls/1" {
		cfg := m.magic.Load()
		if cfg == nil {
			return nil, fmt.Errorf("tlsedge: TLS-ALPN-01 challenge for %q but ACME is not running", hello.ServerName)
		}
		m.metrics.handshakes.WithLabelValues("acme_challenge").Inc()
		return cfg.GetCertificate(hello)
	}
	st := m.state.Load()
	name := normalizeName(hello.ServerName)
	if cert, err, ok := m.certFor(st, name, hello); ok {
		if err == nil {
			m.metrics.handshakes.WithLabelValues("site").Inc()
		} else {
			m.metrics.handshakes.WithLabelValues("error").Inc()
		}
		return cert, err
	}
	if st.defaultName != "" {
		if cert, err, ok := m.certFor(st, st.defaultName, hello); ok {
			m.metrics.handshakes.WithLabelValues("default").Inc()
			return cert, err
		}
	}
	m.metrics.handshakes.WithLabelValues("unknown_sni").Inc()
	return nil, fmt.Errorf("tlsedge: no site serves TLS for server name %q", hello.ServerName)
}

// certFor returns the certificate for name if some site has it (ok).
func (m *Manager) certFor(st *certState, name string, hello *tls.ClientHelloInfo) (*tls.Certificate, error, bool) {
	if name == "" {
		return nil, nil, false
	}
	if fc := lookupName(st.files, name); fc != nil {
		return fc.cert, nil, true
	}
	if _, ok := st.acme[name]; ok {
		cfg := m.magic.Load()
		if cfg == nil {
			return nil, fmt.Errorf("tlsedge: %s uses ACME but the manager is not started", name), true
		}
		h := *hello
		h.ServerName = name
		cert, err := cfg.GetCertificate(&h)
		if err != nil {
			return nil, fmt.Errorf("tlsedge: no certificate for %s yet (ACME order pending or failing): %w", name, err), true
		}
		return cert, nil, true
	}
	return nil, nil, false
}

func lookupName[T any](m map[string]T, name string) T {
	if v, ok := m[name]; ok {
		return v
	}
	if i := strings.IndexByte(name, '.'); i > 0 {
		if v, ok := m["*"+name[i:]]; ok {
			return v
		}
	}
	var zero T
	return zero
}

// normalizeName lowercases a host name and drops a trailing dot and port.
func normalizeName(n string) string {
	if h, _, err := net.SplitHostPort(n); err == nil {
		n = h
	}
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(n)), ".")
}

// HTTPChallenge wraps the PoP's plain-HTTP handler so that ACME HTTP-01
// validation requests (/.well-known/acme-challenge/…) are answered, from
// this PoP's memory or the shared storage (so any PoP can answer for an
// order another PoP placed); everything else goes to next.
func (m *Manager) HTTPChallenge(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if m.magic.Load() != nil && certmagic.LooksLikeHTTPChallenge(r) && m.acme.HandleHTTPChallenge(w, r) {
			m.metrics.httpChallenges.Inc()
			return
		}
		next.ServeHTTP(w, r)
	})
}

// Leaf returns the certificate currently served for name (nil if none),
// for the admin API, metrics and tests. It does not trigger any ACME work.
func (m *Manager) Leaf(name string) *x509.Certificate {
	name = normalizeName(name)
	st := m.state.Load()
	if fc := lookupName(st.files, name); fc != nil {
		return fc.leaf
	}
	if _, ok := st.acme[name]; ok && m.magic.Load() != nil {
		var best *x509.Certificate
		for _, c := range m.cache.AllMatchingCertificates(name) {
			if c.Leaf != nil && (best == nil || c.Leaf.NotAfter.After(best.NotAfter)) {
				best = c.Leaf
			}
		}
		return best
	}
	return nil
}
