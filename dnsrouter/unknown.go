package dnsrouter

import (
	"log/slog"
	"sync"
	"time"

	"github.com/meridian-edge/meridian/internal/beacon"
	"github.com/prometheus/client_golang/prometheus"
)

const (
	// unknownLogEvery is how often the same unknown PoP id is logged again:
	// once is enough to give the hint, again later for whoever missed it.
	unknownLogEvery = 10 * time.Minute
	// maxUnknownIDs bounds the ids remembered and the metric's label values:
	// beacons are unauthenticated on the subject, so a stream of made-up
	// ids must grow neither memory nor the metrics without limit. Beyond
	// it, beacons count under pop="other" and are not logged.
	maxUnknownIDs = 64
)

// unknownPoPs notices beacons from PoPs this server does not list: the
// usual cause is a PoP added to the fleet but not to the DNS
// configuration, which the operator should hear about once, not never.
type unknownPoPs struct {
	log   *slog.Logger
	count *prometheus.CounterVec // pop
	now   func() time.Time

	mu     sync.Mutex
	logged map[string]time.Time // id -> when it was last logged
}

func newUnknownPoPs(log *slog.Logger, count *prometheus.CounterVec) *unknownPoPs {
	return &unknownPoPs{log: log, count: count, now: time.Now, logged: map[string]time.Time{}}
}

// seen records one beacon from a PoP the health table does not list.
func (u *unknownPoPs) seen(b beacon.Beacon) {
	now := u.now()
	u.mu.Lock()
	last, known := u.logged[b.PoP]
	full := !known && len(u.logged) >= maxUnknownIDs
	logIt := !full && (!known || now.Sub(last) >= unknownLogEvery)
	if logIt {
		u.logged[b.PoP] = now
	}
	u.mu.Unlock()
	label := b.PoP
	if full {
		label = "other"
	}
	u.count.WithLabelValues(label).Inc()
	if logIt {
		u.log.Warn("dns: beacon from a PoP this DNS server does not know; ignored. If it is one of yours, add it to pops in the DNS configuration (then reload) so that clients are sent to it",
			"pop", b.PoP, "region", b.Region, "repeats_every", unknownLogEvery)
	}
}
