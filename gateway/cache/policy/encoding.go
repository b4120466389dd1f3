package policy

import (
	"strconv"
	"strings"
)

// keptCodings are the content codings the cache keeps variants of, in the
// order a normalised Accept-Encoding lists them. Others (deflate, compress,
// exotic ones) are dropped: browsers that send them also send gzip, and
// deflate is ambiguous in practice (zlib or raw), which is why Fastly's and
// Varnish's normalisations drop it too.
var keptCodings = [...]string{"br", "gzip", "zstd"}

// NormalizeAcceptEncoding reduces the values of a request's Accept-Encoding
// field to the codings in keptCodings that the client accepts (q > 0,
// "*" standing for those it does not name), as one canonical list such as
// "br, gzip" or "gzip"; "identity" when it accepts none of them.
//
// The cache keys Vary: Accept-Encoding variants on this value and sends it
// to the origin instead of the client's, so that the hundreds of spellings
// browsers and tools use ("gzip, deflate, br, zstd", "br;q=1.0, gzip;q=0.8,
// *;q=0.1", ...) share at most eight variants, and a stored variant was
// made for exactly the codings its key says the client accepts.
func NormalizeAcceptEncoding(values []string) string {
	var named, accepted [len(keptCodings)]bool
	star := false
	for _, v := range values {
		for m := range strings.SplitSeq(v, ",") {
			coding, params, _ := strings.Cut(m, ";")
			coding = strings.ToLower(strings.TrimSpace(coding))
			ok := QPositive(params)
			if coding == "*" {
				star = ok
				continue
			}
			for i, k := range keptCodings {
				if coding == k {
					named[i] = true
					accepted[i] = ok
				}
			}
		}
	}
	mask := 0
	for i := range keptCodings {
		if accepted[i] || (star && !named[i]) {
			mask |= 1 << i
		}
	}
	return normalizedAE[mask]
}

// normalizedAE is NormalizeAcceptEncoding's answer for each set of
// keptCodings (bit i: keptCodings[i]), so that a lookup allocates nothing.
var normalizedAE = [1 << len(keptCodings)]string{
	"identity", "br", "gzip", "br, gzip", "zstd", "br, zstd", "gzip, zstd", "br, gzip, zstd",
}

// QPositive reports whether the parameters of a member of an Accept-style
// field (Accept, Accept-Encoding) leave it acceptable: no q, or a q above 0
// (RFC 9110 12.4.2). A malformed q counts as absent, as the member is then
// best read as plainly listed.
func QPositive(params string) bool {
	for p := range strings.SplitSeq(params, ";") {
		name, value, ok := strings.Cut(p, "=")
		if !ok || !strings.EqualFold(strings.TrimSpace(name), "q") {
			continue
		}
		q, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			return true
		}
		return q > 0
	}
	return true
}
