// Package origintls builds the client-side TLS configuration a PoP uses to
// reach a site's origin over HTTPS: server name (SNI), verification against
// the system roots or a given CA file, an optional client certificate for
// mutual TLS, and optional public-key pinning.
//
// It only builds *tls.Config values; it does not dial, pool connections or
// pick origins (gateway/origin does).
package origintls

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"
)

// Options is one origin pool's TLS settings.
type Options struct {
	// ServerName is sent as SNI and verified against the origin's
	// certificate; empty uses the host of the origin URL (set by the
	// transport).
	ServerName string
	// CAFile is a PEM bundle of CAs trusted for the origin instead of the
	// system roots (a private CA).
	CAFile string
	// InsecureSkipVerify accepts any origin certificate. Only for origins
	// on a trusted network; pins are still checked when set.
	InsecureSkipVerify bool
	// ClientCertFile and ClientKeyFile are the PoP's certificate and key
	// presented to an origin that asks for one (mTLS).
	ClientCertFile, ClientKeyFile string
	// PinSHA256 are base64 SHA-256 digests of SubjectPublicKeyInfo (as in
	// HPKP: `openssl x509 -pubkey | openssl pkey -pubin -outform der |
	// openssl dgst -sha256 -binary | base64`); when set, the origin's chain
	// must contain one of them.
	PinSHA256 []string
}

// Config returns the client TLS config for the origin pool: TLS 1.2+,
// errors naming the file at fault.
func Config(o Options) (*tls.Config, error) {
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         o.ServerName,
		InsecureSkipVerify: o.InsecureSkipVerify,
		NextProtos:         []string{"h2", "http/1.1"},
	}
	if o.CAFile != "" {
		b, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("origintls: ca_file %s: %w", o.CAFile, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("origintls: ca_file %s holds no PEM certificate", o.CAFile)
		}
		cfg.RootCAs = pool
	}
	if (o.ClientCertFile == "") != (o.ClientKeyFile == "") {
		return nil, errors.New("origintls: client_cert_file and client_key_file must be set together")
	}
	if o.ClientCertFile != "" {
		pair, err := tls.LoadX509KeyPair(o.ClientCertFile, o.ClientKeyFile)
		if err != nil {
			return nil, fmt.Errorf("origintls: client certificate %s / key %s: %w", o.ClientCertFile, o.ClientKeyFile, err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	if len(o.PinSHA256) > 0 {
		pins := map[string]bool{}
		for _, p := range o.PinSHA256 {
			raw, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(p, "sha256/"))
			if err != nil || len(raw) != sha256.Size {
				return nil, fmt.Errorf("origintls: pin %q is not a base64 SHA-256 digest (44 characters)", p)
			}
			pins[string(raw)] = true
		}
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			for _, c := range cs.PeerCertificates {
				sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
				if pins[string(sum[:])] {
					return nil
				}
			}
			return pinError(cs)
		}
	}
	return cfg, nil
}

// ErrPinMismatch is what a handshake fails with (wrapped) when the
// origin's chain holds none of the pinned public keys.
var ErrPinMismatch = errors.New("no certificate with a pinned public key")

// pinError names the origin that failed the pins: by the server name the
// PoP sent, else (an origin reached by IP address, no SNI) by its leaf
// certificate's subject.
func pinError(cs tls.ConnectionState) error {
	who := "origin " + cs.ServerName
	if cs.ServerName == "" {
		who = "the origin (no server name sent)"
		if len(cs.PeerCertificates) > 0 {
			who = fmt.Sprintf("the origin (no server name sent; certificate subject %q)", cs.PeerCertificates[0].Subject.String())
		}
	}
	return fmt.Errorf("origintls: %s presented %w; check pin_sha256 against the origin's current key", who, ErrPinMismatch)
}

// Pin returns the pin string of a certificate's public key, for configs and
// tests.
func Pin(c *x509.Certificate) string {
	sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:])
}
