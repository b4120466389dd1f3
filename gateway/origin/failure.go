package origin

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"syscall"

	"github.com/meridian-edge/meridian/gateway/tlsedge/origintls"
)

// Why an origin attempt failed, in the words the PoP uses wherever it says
// so: the Cache-Status detail of its 502/504 pages (gateway/proxy's
// Detail* constants are these), the access log's origin_error and
// body_error, and the reason its own answers are counted under.
const (
	FailureTimeout     = "origin-timeout"     // no answer in time (connect, header, idle or total timeout)
	FailureUnreachable = "origin-unreachable" // refused, no route, no server
	FailureError       = "origin-error"       // reset or malformed response
	FailureTLS         = "origin-tls"         // the TLS handshake failed (certificate, pin, alert)
	FailureBusy        = "origin-busy"        // every server was at its MaxConns: none was asked
)

// ClientClosed is the access log's origin_error when an attempt ended
// because its client went away first (nginx's 499), not because the origin
// failed: no error page goes out then, so it is not a Failure reason.
const ClientClosed = "client-closed"

// Failure classifies err, an origin exchange's error, as one of the
// Failure* reasons. It is the one definition for the pool's access log
// record and the PoP's error pages (gateway/proxy's OriginFailure), so a
// log line and the page its client got never disagree.
func Failure(err error) string {
	var oe *net.OpError
	switch {
	case errors.Is(err, ErrBusy):
		return FailureBusy
	case IsTimeout(err):
		return FailureTimeout
	case IsTLSFailure(err):
		return FailureTLS
	case errors.Is(err, syscall.ECONNREFUSED), errors.As(err, &oe) && oe.Op == "dial":
		return FailureUnreachable
	}
	return FailureError
}

// IsTLSFailure reports whether err is a failed TLS handshake with the
// origin: its certificate failed verification (unknown authority, wrong
// name, expired), matched no pinned key (origintls.ErrPinMismatch), the
// origin sent an alert (it refused the PoP's certificate or offers), or it
// does not speak TLS at all.
func IsTLSFailure(err error) bool {
	var (
		cve  *tls.CertificateVerificationError
		ua   x509.UnknownAuthorityError
		he   x509.HostnameError
		ci   x509.CertificateInvalidError
		rhe  tls.RecordHeaderError
		alrt tls.AlertError
		oe   *net.OpError
	)
	return errors.As(err, &cve) || errors.As(err, &ua) || errors.As(err, &he) || errors.As(err, &ci) ||
		errors.Is(err, origintls.ErrPinMismatch) || errors.As(err, &rhe) || errors.As(err, &alrt) ||
		errors.As(err, &oe) && oe.Op == "remote error" // an alert the origin sent (crypto/tls's own error)
}
