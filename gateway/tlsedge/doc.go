// Package tlsedge terminates TLS at a PoP: it owns the certificate of every
// site (from PEM files, or obtained and renewed through ACME with certmagic),
// picks one per handshake by SNI, answers ACME HTTP-01 and TLS-ALPN-01
// challenges, applies per-site HSTS and HTTP→HTTPS redirects, and runs the
// HTTPS (HTTP/1.1 and HTTP/2 over TCP) and HTTP/3 (QUIC) servers for a
// handler it is given.
//
// It does not route requests, cache or proxy: the PoP's handler does. It
// does not choose where certificates are stored: the caller passes a
// certmagic.Storage (jsstorage for a fleet sharing JetStream, or
// certmagic.FileStorage for one machine). It never logs private keys.
//
// Subpackages: jsstorage (certmagic storage and locks in JetStream), devca
// (a local CA for `meridian dev`), origintls (TLS from the PoP to origins).
package tlsedge
