package tlsedge

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
)

// fileCert is a certificate loaded from a site's PEM files, with what is
// needed to notice that the files changed.
type fileCert struct {
	site     string
	certFile string
	keyFile  string
	cert     *tls.Certificate
	leaf     *x509.Certificate
	stamp    string // size and mtime of both files
}

// loadFileCert reads and checks a site's PEM pair: both files readable, the
// key matching the certificate, the certificate valid now and covering every
// name of the site. Every error names the file at fault.
func loadFileCert(site string, names []string, certFile, keyFile string, now time.Time) (*fileCert, error) {
	stamp, err := fileStamp(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("tlsedge: site %s: %w", site, err)
	}
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("tlsedge: site %s: certificate file %s: %w", site, certFile, err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("tlsedge: site %s: key file %s: %w", site, keyFile, err)
	}
	if !strings.Contains(string(certPEM), "-----BEGIN CERTIFICATE-----") {
		return nil, fmt.Errorf("tlsedge: site %s: certificate file %s holds no PEM CERTIFICATE block", site, certFile)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		if strings.Contains(err.Error(), "does not match") {
			return nil, fmt.Errorf("tlsedge: site %s: key file %s does not match certificate file %s: use the key the certificate was issued for", site, keyFile, certFile)
		}
		return nil, fmt.Errorf("tlsedge: site %s: certificate file %s / key file %s: %w", site, certFile, keyFile, err)
	}
	leaf := cert.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("tlsedge: site %s: certificate file %s: %w", site, certFile, err)
		}
		cert.Leaf = leaf
	}
	if now.After(leaf.NotAfter) {
		return nil, fmt.Errorf("tlsedge: site %s: certificate file %s expired on %s: renew it or switch the site to ACME",
			site, certFile, leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if now.Before(leaf.NotBefore) {
		return nil, fmt.Errorf("tlsedge: site %s: certificate file %s is not valid before %s (check the clock)",
			site, certFile, leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	for _, n := range names {
		if err := leaf.VerifyHostname(n); err != nil {
			return nil, fmt.Errorf("tlsedge: site %s: certificate file %s does not cover host %s (it covers %s)",
				site, certFile, n, strings.Join(leaf.DNSNames, ", "))
		}
	}
	return &fileCert{site: site, certFile: certFile, keyFile: keyFile, cert: &cert, leaf: leaf, stamp: stamp}, nil
}

// fileStamp identifies the current content of the files cheaply (size and
// modification time), so the watcher re-reads only what changed.
func fileStamp(files ...string) (string, error) {
	var b strings.Builder
	for _, f := range files {
		fi, err := os.Stat(f)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return "", fmt.Errorf("file %s does not exist", f)
			}
			return "", fmt.Errorf("file %s: %w", f, err)
		}
		fmt.Fprintf(&b, "%s:%d:%d;", f, fi.Size(), fi.ModTime().UnixNano())
	}
	return b.String(), nil
}
