package testutil

import (
	"strconv"
	"strings"
)

// CacheStatusTTL returns the ttl= parameter of a Cache-Status field value
// (RFC 9211), -1 when it has none.
func CacheStatusTTL(cs string) int {
	for _, p := range strings.Split(cs, ";") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(p), "ttl="); ok {
			if n, err := strconv.Atoi(v); err == nil {
				return n
			}
		}
	}
	return -1
}
