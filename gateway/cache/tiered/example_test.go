package tiered_test

import (
	"context"
	"log"
	"path/filepath"

	"github.com/meridian-edge/meridian/gateway/cache/l1"
	"github.com/meridian-edge/meridian/gateway/cache/l2"
	"github.com/meridian-edge/meridian/gateway/cache/l3"
	"github.com/meridian-edge/meridian/gateway/cache/tier"
	"github.com/meridian-edge/meridian/gateway/cache/tiered"
	"github.com/meridian-edge/meridian/internal/s3embed"
)

// How `meridian dev` builds a PoP's cache tiers: L1 in memory, L2 under the
// data directory, L3 in the embedded S3 server. In production L3's Endpoint
// is the region's S3 service and the embedded server is not started. Close
// in reverse order: the composition first, then the tiers, then the server.
func Example() {
	dataDir := "./.meridian/pop-1"
	s3srv, err := s3embed.Start(s3embed.Options{Addr: "127.0.0.1:0", Dir: filepath.Join(dataDir, "s3"), Buckets: []string{"meridian-cache"}})
	if err != nil {
		log.Fatal(err)
	}
	defer s3srv.Close()
	t1, err := l1.New(l1.Options{Bytes: 512 << 20})
	if err != nil {
		log.Fatal(err)
	}
	defer t1.Close()
	t2, err := l2.Open(l2.Options{Dir: filepath.Join(dataDir, "l2"), Bytes: 10 << 30})
	if err != nil {
		log.Fatal(err)
	}
	defer t2.Close()
	t3, err := l3.New(l3.Options{Endpoint: s3srv.Endpoint(), Bucket: "meridian-cache", Prefix: "eu-west",
		AccessKey: "dev", SecretKey: "dev", Bytes: 100 << 30})
	if err != nil {
		log.Fatal(err)
	}
	defer t3.Close()
	cache, err := tiered.New(tiered.Options{Tiers: []tier.Tier{t1, t2, t3}})
	if err != nil {
		log.Fatal(err)
	}
	defer cache.Close()

	if o, from, err := cache.GetFrom(context.Background(), "https://example.com/"); err == nil {
		defer o.Body.Close()
		log.Printf("hit in %s", from) // Cache-Status: meridian; hit; detail=<from>
	}
}
