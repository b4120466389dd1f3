// Command dnsserver runs Meridian's dnsrouter with the peers' setup in
// ../shared/bench/dns (zone example.com, served name cdn, the five gdnsd
// datacenters, the synthetic test-city.mmdb) for CPU-per-query comparisons:
//
//	cd ../shared/bench/dns && WORK=/tmp/dnslab ./servers.sh setup && WORK=/tmp/dnslab ./servers.sh start
//	go build -o /tmp/dnsserver ./bench/dnsserver && taskset -c 0 /tmp/dnsserver -addr 127.0.0.1:5303 &
//	./cpu-per-query.sh -Q 5000 -l 6 -e 203.0.113.0/24 $! 127.0.0.1:5303
package main

import (
	"context"
	"flag"
	"log"
	"net/netip"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"

	"github.com/meridian-edge/meridian/dnsrouter"
	"github.com/meridian-edge/meridian/dnsrouter/geo"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:5303", "listen address")
	mmdb := flag.String("mmdb", "/tmp/dnslab/test-city.mmdb", "geo database")
	prof := flag.String("cpuprofile", "", "write a CPU profile here until SIGTERM")
	workers := flag.Int("workers", 1, "UDP workers")
	flag.Parse()
	g, err := geo.OpenMMDB(*mmdb)
	if err != nil {
		log.Fatal(err)
	}
	a := func(s string) []netip.Addr { return []netip.Addr{netip.MustParseAddr(s)} }
	opts := dnsrouter.Options{
		Zones: []dnsrouter.Zone{{Apex: "example.com", Names: []string{"cdn"},
			NS: []dnsrouter.NameServer{{Name: "ns1", Addrs: a("127.0.0.1")}}}},
		PoPs: []dnsrouter.PoP{
			{ID: "lhr", Lat: 51.51, Lon: -0.13, IPv4: a("172.16.0.10"), IPv6: a("2001:db8:1::10")},
			{ID: "iad", Lat: 39.04, Lon: -77.49, IPv4: a("192.0.2.10"), IPv6: a("2001:db8:2::10")},
			{ID: "nrt", Lat: 35.68, Lon: 139.69, IPv4: a("198.51.100.10"), IPv6: a("2001:db8:3::10")},
			{ID: "syd", Lat: -33.87, Lon: 151.21, IPv4: a("203.0.113.10"), IPv6: a("2001:db8:4::10")},
			{ID: "gru", Lat: -23.55, Lon: -46.63, IPv4: a("100.64.0.10"), IPv6: a("2001:db8:5::10")},
		},
		Geo:           g,
		DefaultRegion: "eu-west-2",
		UDPWorkers:    *workers,
	}
	s, err := dnsrouter.New(opts)
	if err != nil {
		log.Fatal(err)
	}
	if *prof != "" {
		f, err := os.Create(*prof)
		if err != nil {
			log.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			log.Fatal(err)
		}
		defer pprof.StopCPUProfile()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := s.Start(ctx, *addr); err != nil {
		log.Fatal(err)
	}
	log.Printf("serving on %s", s.Addr())
	<-ctx.Done()
	s.Close()
}
