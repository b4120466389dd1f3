package origintls

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meridian-edge/meridian/gateway/tlsedge/devca"
)

// TestOriginTLS: an origin behind a private CA that requires a client
// certificate (mTLS) is reached with SNI, verification and the PoP's
// certificate; the wrong pin, the wrong server name, or no client
// certificate fail.
func TestOriginTLS(t *testing.T) {
	dir := t.TempDir()
	originFiles, err := devca.Ensure(filepath.Join(dir, "origin-ca"), "origin", []string{"origin.internal"})
	if err != nil {
		t.Fatal(err)
	}
	popFiles, err := devca.Ensure(filepath.Join(dir, "pop-ca"), "pop", []string{"pop-1.meridian"})
	if err != nil {
		t.Fatal(err)
	}
	popCA, _ := devca.Pool(popFiles)
	pair, _ := tls.LoadX509KeyPair(originFiles.Cert, originFiles.Key)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello "+r.TLS.PeerCertificates[0].Subject.CommonName+" via "+r.TLS.ServerName)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: popCA}
	srv.StartTLS()
	defer srv.Close()

	fetch := func(o Options) (string, error) {
		cfg, err := Config(o)
		if err != nil {
			t.Fatal(err)
		}
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
		resp, err := c.Get(srv.URL)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b), nil
	}
	good := Options{ServerName: "origin.internal", CAFile: originFiles.CACert, ClientCertFile: popFiles.Cert, ClientKeyFile: popFiles.Key, PinSHA256: []string{Pin(pair.Leaf)}}
	body, err := fetch(good)
	if err != nil || body != "hello pop-1.meridian via origin.internal" {
		t.Fatalf("mTLS to origin: %q, %v", body, err)
	}

	wrongPin := good
	wrongPin.PinSHA256 = []string{"47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="}
	if _, err := fetch(wrongPin); err == nil || !strings.Contains(err.Error(), "pinned") {
		t.Fatalf("wrong pin: %v", err)
	}
	wrongName := good
	wrongName.ServerName = "other.internal"
	if _, err := fetch(wrongName); err == nil {
		t.Fatal("a certificate for another name was accepted")
	}
	noClient := good
	noClient.ClientCertFile, noClient.ClientKeyFile = "", ""
	if _, err := fetch(noClient); err == nil {
		t.Fatal("the origin demanded a client certificate but the request succeeded without")
	}
	systemRoots := good
	systemRoots.CAFile = ""
	if _, err := fetch(systemRoots); err == nil {
		t.Fatal("a private-CA origin was trusted through the system roots")
	}
}

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk.pem")
	os.WriteFile(junk, []byte("junk"), 0o644)
	for _, tc := range []struct {
		o    Options
		want string
	}{
		{Options{CAFile: filepath.Join(dir, "none.pem")}, "none.pem"},
		{Options{CAFile: junk}, junk + " holds no PEM"},
		{Options{ClientCertFile: junk}, "must be set together"},
		{Options{ClientCertFile: junk, ClientKeyFile: junk}, junk},
		{Options{PinSHA256: []string{"abc"}}, `pin "abc"`},
	} {
		_, err := Config(tc.o)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.o, err, tc.want)
		}
	}
	_ = x509.NewCertPool
}
