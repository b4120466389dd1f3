package proxy_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/meridian-edge/meridian/gateway/origin"
	"github.com/meridian-edge/meridian/gateway/proxy"
	"github.com/meridian-edge/meridian/gateway/tlsedge/origintls"
)

// TestOriginTLSFailuresSaySo: an https origin whose certificate the PoP
// does not accept (an untrusted self-signed one, one for another name, one
// not matching the pinned key) gets a 502 whose page names a TLS problem
// with the origin's certificate and whose Cache-Status detail is
// origin-tls, not the "refused or reset... speaks HTTP" of a broken
// connection; the pin error names the origin without an empty gap.
func TestOriginTLSFailuresSaySo(t *testing.T) {
	origSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "secret") }))
	t.Cleanup(origSrv.Close)
	// The test server's certificate, as a CA file (it is self-signed).
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: origSrv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	otherPin := origintls.Pin(&x509.Certificate{RawSubjectPublicKeyInfo: []byte("another key")})
	tests := []struct {
		name    string
		tls     origintls.Options
		wantLog string // in the error the PoP logs
	}{
		{"untrusted", origintls.Options{}, "certificate"},
		{"wrong name", origintls.Options{CAFile: caFile, ServerName: "wrong.example.test"}, "wrong.example.test"},
		{"pin mismatch", origintls.Options{InsecureSkipVerify: true, PinSHA256: []string{otherPin}}, "origintls: the origin (no server name sent"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := origintls.Config(tc.tls)
			if err != nil {
				t.Fatal(err)
			}
			u, _ := url.Parse(origSrv.URL)
			pool, err := origin.New(origin.Options{Site: "s1", Servers: []origin.Server{{URL: u}}, TLS: cfg})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(pool.Close)
			var failed atomic.Pointer[error] // set on the server's goroutine
			p, err := proxy.New(proxy.Options{SiteID: "s1", PoPID: "pop-a",
				Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
					res, err := pool.RoundTrip(r)
					if err != nil {
						failed.Store(&err)
					}
					return res, err
				}),
				ModifyResponse: func(res *http.Response) error {
					res.Header.Add("Cache-Status", "meridian; fwd=uri-miss")
					return nil
				},
			})
			if err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewServer(p)
			t.Cleanup(srv.Close)
			resp, err := http.Get(srv.URL + "/x")
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadGateway || !strings.Contains(string(b), "TLS handshake with the origin") ||
				!strings.Contains(string(b), "certificate") || strings.Contains(string(b), "speaks HTTP") {
				t.Fatalf("got %d %q, want a 502 naming a TLS problem with the origin's certificate", resp.StatusCode, b)
			}
			if cs := resp.Header.Get("Cache-Status"); cs != "meridian; fwd=uri-miss; detail=origin-tls" {
				t.Errorf("Cache-Status %q, want the detail origin-tls", cs)
			}
			var failure error
			if e := failed.Load(); e != nil {
				failure = *e
			}
			if failure == nil || !strings.Contains(failure.Error(), tc.wantLog) || strings.Contains(failure.Error(), "  ") {
				t.Errorf("origin error %v, want one mentioning %q without a double space", failure, tc.wantLog)
			}
			if _, detail, _ := proxy.OriginFailure(failure); detail != proxy.DetailOriginTLS {
				t.Errorf("OriginFailure(%v) detail %q, want %q", failure, detail, proxy.DetailOriginTLS)
			}
		})
	}
	// A plain-HTTP server behind an https origin URL is a TLS failure too;
	// a refused connection is not.
	if !proxy.IsTLSFailure(tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake"}) {
		t.Error("a record header error is not classified as a TLS failure")
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
