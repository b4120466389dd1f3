package tlsedge

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/internal/testutil"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// testPoP is the TLS side of a PoP as the lead will wire it: a plain-HTTP
// listener wrapped with the HTTP-01 handler and the policies, and the HTTPS +
// HTTP/3 server, all on loopback.
type testPoP struct {
	m        *Manager
	srv      *Server
	httpSrv  *http.Server
	httpAddr string
	reg      *prometheus.Registry
	logs     *testutil.SyncBuffer // the HTTPS server's log, as text
}

func (p *testPoP) log() *slog.Logger {
	p.logs = &testutil.SyncBuffer{}
	return slog.New(slog.NewTextHandler(p.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func (p *testPoP) httpPort() int  { return portOf(p.httpAddr) }
func (p *testPoP) httpsPort() int { return portOf(p.srv.Addr()) }

func portOf(addr string) int {
	_, port, _ := net.SplitHostPort(addr)
	var n int
	fmt.Sscan(port, &n)
	return n
}

// okHandler answers with the protocol the request came over.
var okHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	fmt.Fprintf(w, "hello %s over %s", r.Host, r.Proto)
})

// newPoP builds the manager and binds the listeners; start runs ACME.
func newPoP(t *testing.T, opts Options, policies *Policies) *testPoP {
	t.Helper()
	return newPoPWith(t, func(int, int) Options { return opts }, policies)
}

// newPoPDeferred binds the listeners first, then asks mk for the manager's
// options given the bound ports (a test's ACME server must know them).
func newPoPDeferred(t *testing.T, mk func(httpPort, tlsPort int) Options) *testPoP {
	t.Helper()
	return newPoPWith(t, mk, nil)
}

func newPoPWith(t *testing.T, mk func(httpPort, tlsPort int) Options, policies *Policies) *testPoP {
	t.Helper()
	p := &testPoP{reg: prometheus.NewRegistry()}
	// The server is bound before the manager exists; its TLS config
	// reaches the manager through p.
	tlsCfg := (&Manager{}).TLSConfig()
	// (atomically: a stray QUIC packet may start a handshake before p.m is set).
	var mp atomic.Pointer[Manager]
	tlsCfg.GetCertificate = func(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
		m := mp.Load()
		if m == nil {
			return nil, errors.New("test PoP not ready")
		}
		return m.GetCertificate(h)
	}
	tlsCfg.GetConfigForClient = func(h *tls.ClientHelloInfo) (*tls.Config, error) {
		if m := mp.Load(); m != nil {
			return m.TLSConfig().GetConfigForClient(h)
		}
		return nil, nil
	}
	var h http.Handler = okHandler
	if policies != nil {
		h = policies.Middleware(h)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.httpAddr = ln.Addr().String()
	p.httpSrv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m := mp.Load()
		if m == nil {
			http.Error(w, "test PoP not ready", http.StatusServiceUnavailable)
			return
		}
		m.HTTPChallenge(h).ServeHTTP(w, r)
	})}
	go p.httpSrv.Serve(ln)
	t.Cleanup(func() { p.httpSrv.Close() })
	srv, err := NewServer(ServerOptions{Addr: "127.0.0.1:0", HTTP3Addr: "same", TLSConfig: tlsCfg, Handler: h, Registerer: p.reg, Logger: p.log()})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	p.srv = srv
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	opts := mk(p.httpPort(), p.httpsPort())
	opts.Registerer = p.reg
	m, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	m.ChallengePorts(p.httpPort(), p.httpsPort())
	p.m = m
	mp.Store(m)
	return p
}

func (p *testPoP) start(t *testing.T) {
	t.Helper()
	if err := p.m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.m.Stop)
}

// handshake connects to the PoP's HTTPS port with SNI name and returns the
// served leaf (verified against roots when roots is not nil).
func (p *testPoP) handshake(name string, roots *x509.CertPool, cfg *tls.Config) (*x509.Certificate, tls.ConnectionState, error) {
	if cfg == nil {
		cfg = &tls.Config{}
	}
	cfg = cfg.Clone()
	cfg.ServerName = name
	cfg.RootCAs = roots
	cfg.InsecureSkipVerify = roots == nil
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", p.srv.Addr(), cfg)
	if err != nil {
		return nil, tls.ConnectionState{}, err
	}
	defer c.Close()
	cs := c.ConnectionState()
	return cs.PeerCertificates[0], cs, nil
}

// h2Client speaks HTTP/2 (or 1.1) over TLS to the PoP whatever the URL host.
func (p *testPoP) h2Client(roots *x509.CertPool) *http.Client {
	addr := p.srv.Addr()
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: roots},
		ForceAttemptHTTP2: true,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}}
}

// h3Client speaks HTTP/3 with quic-go's client to the PoP's UDP port.
func (p *testPoP) h3Client(t testing.TB, roots *x509.CertPool) *http.Client {
	addr := p.srv.HTTP3Addr()
	tr := &http3.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots},
		Dial: func(ctx context.Context, _ string, tlsCfg *tls.Config, qcfg *quic.Config) (*quic.Conn, error) {
			return quic.DialAddrEarly(ctx, addr, tlsCfg, qcfg)
		},
	}
	t.Cleanup(func() { tr.Close() })
	return &http.Client{Timeout: 10 * time.Second, Transport: tr}
}

func get(t *testing.T, c *http.Client, url string) (*http.Response, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// counter reads a counter (or gauge) of the PoP's registry by name and
// labels, summed over the series that match.
func (p *testPoP) counter(name string, labels map[string]string) float64 {
	mfs, _ := p.reg.Gather()
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue metric
				}
			}
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true after %s: %v", what, within, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// certFiles writes a self-signed ECDSA certificate for names with the given
// validity into dir as label.pem / label-key.pem.
func certFiles(t testing.TB, dir, label string, names []string, notBefore, notAfter time.Time) (certFile, keyFile string, leaf *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: names[0]},
		DNSNames:     names,
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:         true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ = x509.ParseCertificate(der)
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	certFile = filepath.Join(dir, label+".pem")
	keyFile = filepath.Join(dir, label+"-key.pem")
	writeFile(t, certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	writeFile(t, keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}))
	return certFile, keyFile, leaf
}

func writeFile(t testing.TB, name string, b []byte) {
	t.Helper()
	tmp := name + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, name); err != nil {
		t.Fatal(err)
	}
}

func poolOf(certs ...*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

func wantErrContains(t *testing.T, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("want an error containing %q, got none", parts)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Fatalf("error %q does not contain %q", err, p)
		}
	}
}
