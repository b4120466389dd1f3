package devca

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestEnsureServesVerifiedHTTPS: the files Ensure writes make an HTTPS
// server a client verifies with only the CA, and are reused on a second
// call; asking for another name reissues the certificate under the same CA.
func TestEnsureServesVerifiedHTTPS(t *testing.T) {
	dir := t.TempDir()
	f, err := Ensure(dir, "www.example.test", []string{"www.example.test", "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(f.Key); fi.Mode().Perm() != 0o600 {
		t.Fatalf("key mode %v, want 0600", fi.Mode().Perm())
	}
	pair, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}}
	srv.StartTLS()
	defer srv.Close()
	pool, err := Pool(f)
	if err != nil {
		t.Fatal(err)
	}
	addr := srv.Listener.Addr().String()
	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool},
		DialContext: func(ctx context.Context, n, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, n, addr)
		},
	}}
	resp, err := client.Get("https://www.example.test/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	again, err := Ensure(dir, "www.example.test", []string{"www.example.test", "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	pair2, _ := tls.LoadX509KeyPair(again.Cert, again.Key)
	if pair2.Leaf.SerialNumber.Cmp(pair.Leaf.SerialNumber) != 0 {
		t.Fatal("a valid certificate was reissued")
	}
	ca1, _ := os.ReadFile(f.CACert)
	more, err := Ensure(dir, "www.example.test", []string{"www.example.test", "api.example.test"})
	if err != nil {
		t.Fatal(err)
	}
	pair3, _ := tls.LoadX509KeyPair(more.Cert, more.Key)
	if pair3.Leaf.VerifyHostname("api.example.test") != nil {
		t.Fatal("new name not covered after Ensure")
	}
	ca2, _ := os.ReadFile(more.CACert)
	if string(ca1) != string(ca2) {
		t.Fatal("the CA changed: clients trusting it would break")
	}
}

// TestCurlCommandWorksAsPrinted runs the printed curl line (curl is on the
// machine) against a server with the dev certificate.
func TestCurlCommandWorksAsPrinted(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Fatal("curl is needed to check the printed command: apt-get install curl")
	}
	dir := t.TempDir()
	f, err := Ensure(dir, "www.example.test", []string{"www.example.test"})
	if err != nil {
		t.Fatal(err)
	}
	pair, _ := tls.LoadX509KeyPair(f.Cert, f.Key)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "dev ok") }))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}}
	srv.StartTLS()
	defer srv.Close()
	host, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	var p int
	fmt.Sscan(port, &p)
	line := CurlCommand(f.CACert, "www.example.test", p, host)
	args := strings.Fields(line)
	if args[0] != "curl" {
		t.Fatalf("line %q", line)
	}
	out, err := exec.Command(curl, append([]string{"-sS"}, args[1:]...)...).CombinedOutput()
	if err != nil || string(out) != "dev ok" {
		t.Fatalf("%s: %v: %s", line, err, out)
	}
	if got := CurlCommand("/ca.pem", "h", 8443, "::1"); !strings.Contains(got, "--resolve h:8443:[::1]") {
		t.Fatalf("IPv6: %s", got)
	}
}

func TestEnsureErrors(t *testing.T) {
	if _, err := Ensure(t.TempDir(), "x", nil); err == nil {
		t.Fatal("no names accepted")
	}
	dir := t.TempDir()
	os.WriteFile(dir+"/ca.pem", []byte("junk"), 0o644)
	os.WriteFile(dir+"/ca-key.pem", []byte("junk"), 0o600)
	if _, err := Ensure(dir, "x", []string{"x"}); err == nil || !strings.Contains(err.Error(), dir+"/ca.pem") {
		t.Fatalf("unreadable CA: %v", err)
	}
}
