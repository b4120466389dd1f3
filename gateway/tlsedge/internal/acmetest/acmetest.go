// Package acmetest starts a real ACME server for tests: Let's Encrypt's
// pebble, on loopback, with its own HTTPS certificate from a throw-away dev
// CA and a tiny DNS server (real UDP on loopback) that resolves every name
// to 127.0.0.1, so pebble's validation authority performs real HTTP-01 and
// TLS-ALPN-01 validations against the ports a test gives it.
//
// Tests fail, never skip, when pebble is not installed.
package acmetest

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/gateway/tlsedge/devca"
	"github.com/meridian-edge/meridian/internal/testutil"
	"github.com/miekg/dns"
	"golang.org/x/crypto/ocsp"
)

// InstallHint is what a test prints when pebble is missing.
const InstallHint = "pebble (Let's Encrypt's ACME test server) is not installed: run scripts/pebble.sh (make test does), which installs Debian's pebble package or builds it into $HOME/.cache/meridian/bin"

// Options for Start.
type Options struct {
	// HTTPPort and TLSPort are where pebble validates HTTP-01 and
	// TLS-ALPN-01 challenges (on the address the DNS gives: 127.0.0.1).
	HTTPPort, TLSPort int
	// Validity of issued certificates; 0 is pebble's default (years).
	Validity time.Duration
	// OCSPResponderURL is written into issued certificates (pebble runs no
	// responder itself; see OCSPResponder).
	OCSPResponderURL string
}

// Pebble is a running pebble.
type Pebble struct {
	t       testing.TB
	bin     string
	dir     string
	cfgFile string
	dnsAddr string
	listen  string
	mgmt    string
	// Roots trust pebble's own HTTPS endpoint (give to the ACME client).
	Roots *x509.CertPool

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
	out  *testutil.SyncBuffer
}

// Binary finds pebble on PATH or in $HOME/.cache/meridian/bin.
func Binary() (string, error) {
	if p, err := exec.LookPath("pebble"); err == nil {
		return p, nil
	}
	if home, err := os.UserHomeDir(); err == nil {
		p := filepath.Join(home, ".cache", "meridian", "bin", "pebble")
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s", InstallHint)
}

// Start runs pebble and the DNS stub until the end of the test.
func Start(t testing.TB, o Options) *Pebble {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	files, err := devca.Ensure(filepath.Join(dir, "ca"), "pebble", []string{"localhost", "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	roots, err := devca.Pool(files)
	if err != nil {
		t.Fatal(err)
	}
	p := &Pebble{t: t, bin: bin, dir: dir, Roots: roots, dnsAddr: startDNS(t),
		cfgFile: filepath.Join(dir, "pebble.json")}
	cfg := map[string]any{
		"certificate":                    files.Cert,
		"privateKey":                     files.Key,
		"httpPort":                       o.HTTPPort,
		"tlsPort":                        o.TLSPort,
		"ocspResponderURL":               o.OCSPResponderURL,
		"externalAccountBindingRequired": false,
		"certificateValidityPeriod":      uint64(o.Validity / time.Second),
	}
	if o.Validity > 0 {
		// pebble >= 2.7 reads the validity from profiles (and ignores the
		// older field); older ones the reverse. Unknown fields are ignored.
		cfg["profiles"] = map[string]any{
			"default": map[string]any{"description": "test", "validityPeriod": uint64(o.Validity / time.Second)},
		}
	}
	t.Cleanup(p.Stop)
	// The ports are free when chosen but pebble binds them later, and any
	// other process on the machine may take one in between (CI runs many
	// test binaries at once): a pebble that exits at once gets fresh ports.
	for range 3 {
		addrs := testutil.FreeAddrs(t, "127.0.0.1", 2)
		p.listen, p.mgmt = addrs[0], addrs[1]
		cfg["listenAddress"], cfg["managementListenAddress"] = p.listen, p.mgmt
		b, _ := json.Marshal(map[string]any{"pebble": cfg})
		if err := os.WriteFile(p.cfgFile, b, 0o644); err != nil {
			t.Fatal(err)
		}
		var exited bool
		if exited, err = p.start(); err == nil || !exited {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// DirectoryURL is the ACME directory.
func (p *Pebble) DirectoryURL() string { return "https://" + p.listen + "/dir" }

// Restart starts pebble (again) on the same addresses; a restarted pebble
// has a new issuing CA and no accounts, as after a real CA outage with
// data loss.
func (p *Pebble) Restart() {
	p.t.Helper()
	if _, err := p.start(); err != nil {
		p.t.Fatal(err)
	}
}

// start runs pebble and waits until its directory answers. exited tells a
// pebble that stopped by itself (as when a port is taken) from one that
// runs but does not answer.
func (p *Pebble) start() (exited bool, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		return false, fmt.Errorf("acmetest: pebble already running")
	}
	cmd := exec.Command(p.bin, "-config", p.cfgFile, "-dnsserver", p.dnsAddr)
	cmd.Env = append(os.Environ(),
		"PEBBLE_VA_NOSLEEP=1",      // validate at once
		"PEBBLE_WFE_NONCEREJECT=0", // no random bad-nonce errors: tests assert on counts
		"PEBBLE_AUTHZREUSE=0",      // every order is validated for real
	)
	p.out = &testutil.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		return false, fmt.Errorf("acmetest: start %s: %v", p.bin, err)
	}
	done := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(done) }()
	p.cmd, p.done = cmd, done
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.Roots}}, Timeout: time.Second}
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := client.Get(p.DirectoryURL())
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return false, nil
			}
		}
		select {
		case <-done:
			p.cmd, p.done = nil, nil
			return true, fmt.Errorf("acmetest: pebble exited before answering on %s (%v):\n%s", p.DirectoryURL(), waitErr, p.out.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return false, fmt.Errorf("acmetest: pebble did not answer on %s within 15s: %v\n%s", p.DirectoryURL(), err, p.out.String())
		}
	}
}

// Stop kills pebble (the ACME server is then down: connections refused).
func (p *Pebble) Stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return
	}
	p.cmd.Process.Kill()
	<-p.done
	p.cmd, p.done = nil, nil
}

// Log is pebble's output so far, for failure messages.
func (p *Pebble) Log() string { return p.out.String() }

// IssuerRoots is the pool of pebble's current root, which signs (through
// an intermediate) the certificates it issues.
func (p *Pebble) IssuerRoots() *x509.CertPool {
	p.t.Helper()
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.Roots}}, Timeout: 5 * time.Second}
	resp, err := client.Get("https://" + p.mgmt + "/roots/0")
	if err != nil {
		p.t.Fatalf("acmetest: pebble roots: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		p.t.Fatalf("acmetest: pebble /roots/0 gave no PEM: %q", b)
	}
	return pool
}

// Intermediate returns pebble's current issuing certificate and its key
// (pebble publishes both on its management port, for tests).
func (p *Pebble) Intermediate() (*x509.Certificate, crypto.Signer, error) {
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.Roots}}, Timeout: 5 * time.Second}
	fetch := func(path string) (*pem.Block, error) {
		resp, err := client.Get("https://" + p.mgmt + path)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		blk, _ := pem.Decode(b)
		if blk == nil {
			return nil, fmt.Errorf("pebble %s: no PEM in %q", path, b)
		}
		return blk, nil
	}
	cb, err := fetch("/intermediates/0")
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, nil, err
	}
	kb, err := fetch("/intermediate-keys/0")
	if err != nil {
		return nil, nil, err
	}
	var key any
	switch kb.Type {
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(kb.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(kb.Bytes)
	default:
		key, err = x509.ParsePKCS8PrivateKey(kb.Bytes)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("pebble intermediate key (%s): %w", kb.Type, err)
	}
	return cert, key.(crypto.Signer), nil
}

// OCSPResponder is a real OCSP responder (RFC 6960 over HTTP, GET and POST)
// that answers "good" for every serial, signed by pebble's intermediate.
// Set its URL in Options before pebble starts and Pebble after.
type OCSPResponder struct {
	URL string
	// Requests counts the OCSP requests answered.
	Requests atomic.Int64

	mu     sync.Mutex
	pebble *Pebble
}

// StartOCSPResponder listens on loopback until the end of the test.
func StartOCSPResponder(t testing.TB) *OCSPResponder {
	r := &OCSPResponder{}
	srv := httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(srv.Close)
	r.URL = srv.URL
	return r
}

// Use makes the responder sign with p's intermediate.
func (r *OCSPResponder) Use(p *Pebble) {
	r.mu.Lock()
	r.pebble = p
	r.mu.Unlock()
}

func (r *OCSPResponder) serve(w http.ResponseWriter, req *http.Request) {
	var raw []byte
	if req.Method == http.MethodPost {
		raw, _ = io.ReadAll(req.Body)
	} else {
		raw, _ = base64.StdEncoding.DecodeString(strings.TrimPrefix(req.URL.Path, "/"))
	}
	q, err := ocsp.ParseRequest(raw)
	if err != nil {
		http.Error(w, "bad OCSP request: "+err.Error(), http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	p := r.pebble
	r.mu.Unlock()
	if p == nil {
		http.Error(w, "responder not ready", http.StatusServiceUnavailable)
		return
	}
	issuer, key, err := p.Intermediate()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	now := time.Now()
	resp, err := ocsp.CreateResponse(issuer, issuer, ocsp.Response{
		Status:       ocsp.Good,
		SerialNumber: q.SerialNumber,
		ThisUpdate:   now.Add(-time.Minute),
		NextUpdate:   now.Add(time.Hour),
	}, key)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	r.Requests.Add(1)
	w.Header().Set("Content-Type", "application/ocsp-response")
	w.Write(resp)
}

// startDNS answers A 127.0.0.1 for every name (and nothing else) over UDP
// and TCP on one loopback port.
func startDNS(t testing.TB) string {
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.Authoritative = true
		for _, q := range r.Question {
			if q.Qtype == dns.TypeA {
				m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 5}, A: net.IPv4(127, 0, 0, 1)})
			}
		}
		w.WriteMsg(m)
	})
	// The same port number for UDP and TCP: the UDP port is free, the TCP
	// one may not be, so try a few.
	var pc net.PacketConn
	var ln net.Listener
	for try := 0; ; try++ {
		var err error
		if pc, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		if ln, err = net.Listen("tcp", pc.LocalAddr().String()); err == nil {
			break
		}
		pc.Close()
		if try == 10 {
			t.Fatalf("acmetest: no port free for DNS on both UDP and TCP: %v", err)
		}
	}
	udp := &dns.Server{PacketConn: pc, Handler: h}
	tcp := &dns.Server{Listener: ln, Handler: h}
	go udp.ActivateAndServe()
	go tcp.ActivateAndServe()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		udp.ShutdownContext(ctx)
		tcp.ShutdownContext(ctx)
	})
	return pc.LocalAddr().String()
}
