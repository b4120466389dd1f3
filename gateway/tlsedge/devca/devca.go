// Package devca makes a local certificate authority and server certificates
// under a data directory, for `meridian dev` and for tests: HTTPS that a
// client can verify with `--cacert`, without any public CA.
//
// It owns the files it writes (ca.pem, ca-key.pem, <name>.pem,
// <name>-key.pem, keys mode 0600) and reuses them while they are valid and
// cover the names asked for. It must never be used for production sites.
package devca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Files are the paths of a CA and a certificate issued by it.
type Files struct {
	// CACert is the CA certificate (PEM) clients trust: curl --cacert.
	CACert string
	// Cert and Key are the server certificate chain and its private key.
	Cert, Key string
}

// Ensure makes (or reuses) the CA in dir and a certificate named label
// covering names (host names and IP addresses), valid for a year. Existing
// files are reused when still valid for a week and covering every name;
// otherwise the certificate is issued again (the CA is kept).
func Ensure(dir, label string, names []string) (Files, error) {
	if len(names) == 0 {
		return Files{}, errors.New("devca: no names to issue a certificate for")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Files{}, fmt.Errorf("devca: data dir %s: %w", dir, err)
	}
	f := Files{
		CACert: filepath.Join(dir, "ca.pem"),
		Cert:   filepath.Join(dir, label+".pem"),
		Key:    filepath.Join(dir, label+"-key.pem"),
	}
	caKeyFile := filepath.Join(dir, "ca-key.pem")
	ca, caKey, err := loadOrMakeCA(f.CACert, caKeyFile)
	if err != nil {
		return Files{}, err
	}
	if usable(f, ca, names) {
		return f, nil
	}
	if err := issue(f, ca, caKey, names); err != nil {
		return Files{}, err
	}
	return f, nil
}

func loadOrMakeCA(certFile, keyFile string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	if pair, err := tls.LoadX509KeyPair(certFile, keyFile); err == nil {
		if key, ok := pair.PrivateKey.(*ecdsa.PrivateKey); ok && time.Until(pair.Leaf.NotAfter) > 30*24*time.Hour {
			return pair.Leaf, key, nil
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, nil, fmt.Errorf("devca: CA files %s, %s are unreadable (delete them to make a new CA): %w", certFile, keyFile, err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "Meridian dev CA " + now.UTC().Format("2006-01-02T15:04")},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(5, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("devca: create CA: %w", err)
	}
	if err := writePair(certFile, keyFile, [][]byte{der}, key); err != nil {
		return nil, nil, err
	}
	ca, err := x509.ParseCertificate(der)
	return ca, key, err
}

func usable(f Files, ca *x509.Certificate, names []string) bool {
	pair, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil || time.Until(pair.Leaf.NotAfter) < 7*24*time.Hour {
		return false
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	for _, n := range names {
		if _, err := pair.Leaf.Verify(x509.VerifyOptions{DNSName: n, Roots: pool}); err != nil {
			return false
		}
	}
	return true
}

func issue(f Files, ca *x509.Certificate, caKey *ecdsa.PrivateKey, names []string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: names[0]},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.AddDate(1, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, // client too: dev mTLS to origins
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("devca: issue certificate for %v: %w", names, err)
	}
	return writePair(f.Cert, f.Key, [][]byte{der}, key)
}

// writePair writes the chain and key, each through a temporary file and a
// rename so that a reader never sees half a file.
func writePair(certFile, keyFile string, chain [][]byte, key *ecdsa.PrivateKey) error {
	var certPEM []byte
	for _, der := range chain {
		certPEM = append(certPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	if err := writeAtomic(keyFile, keyPEM, 0o600); err != nil {
		return err
	}
	return writeAtomic(certFile, certPEM, 0o644)
}

func writeAtomic(name string, data []byte, mode os.FileMode) error {
	tmp := name + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return fmt.Errorf("devca: write %s: %w", name, err)
	}
	if err := os.Rename(tmp, name); err != nil {
		return fmt.Errorf("devca: write %s: %w", name, err)
	}
	return nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}

// Pool returns a certificate pool holding the CA of files, for clients.
func Pool(f Files) (*x509.CertPool, error) {
	b, err := os.ReadFile(f.CACert)
	if err != nil {
		return nil, fmt.Errorf("devca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("devca: %s holds no PEM certificate", f.CACert)
	}
	return pool, nil
}

// CurlCommand is the command line that fetches https://host:port/ through
// addr (an IP the PoP listens on) trusting only the dev CA, as `meridian dev`
// prints it. An IPv6 addr is bracketed as curl's --resolve wants.
func CurlCommand(caFile, host string, port int, addr string) string {
	if ip := net.ParseIP(addr); ip != nil && ip.To4() == nil {
		addr = "[" + addr + "]"
	}
	return fmt.Sprintf("curl --cacert %s --resolve %s:%d:%s https://%s:%d/", caFile, host, port, addr, host, port)
}
