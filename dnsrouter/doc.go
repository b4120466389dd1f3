// Package dnsrouter owns Meridian's authoritative GeoDNS server: it answers
// for the configured zones, sends each client to its nearest healthy PoP
// (haversine from the EDNS Client Subnet, else the resolver's address),
// sheds load from PoPs over their capacity threshold in proportion to how
// little capacity they have left, and fails open (answers the nearest PoP,
// counted) rather than SERVFAIL when every PoP is down.
//
// A zone holds geo-routed names (wildcards included, RFC 4592), each
// answerable by every PoP or by the ones Zone.PoPs lists; aliases of them;
// and static records (records), among which NS below the apex delegates a
// subdomain (answered with referrals) and a CNAME into our zones is
// answered with its target's records (view.node, answer's chain).
//
// Subpackages hold the parts with one job each: geo (address → location:
// YAML CIDR tables and .mmdb files), health (beacons + active HTTP probes →
// which PoPs may be served), records (static records: parsing and the
// checks that they can stand together) and region (the built-in region
// catalog). This
// package must not recurse, transfer zones, or look a PoP's own address up
// in a geo database: PoP coordinates come from configuration.
//
// # Lifecycle
//
//	s, err := dnsrouter.New(opts)          // validates; errors name the field
//	err = s.Start(ctx, "127.0.0.1:5353")   // binds UDP+TCP, serves in the background
//	err = s.WatchBeacons(nc)               // PoP beacons from NATS → health table
//	err = s.Reload(newOpts)                // on SIGHUP: zones, PoPs, geo, RRL
//	e, err := s.Explain(subnet, "www.example.test")
//	err = s.Close()
//
// # The query path
//
// A UDP worker reads a packet, answers it and writes the answer, without
// allocating for the common query (A/AAAA of a geo-routed name, with or
// without ECS): fastAnswer parses and writes wire bytes directly, the
// client's location comes from the geo source, its distance-ordered PoP
// list is precomputed per location (ranking), and choose walks that list
// against the health snapshot; a name under a geo-routed wildcard takes
// the same path after a walk up its labels (view.fastWildcard). Everything
// else — errors, negative answers, SOA/NS, static records, CNAMEs and the
// chains answer follows through our zones, truncation, NSID — goes
// through answer, built on
// miekg/dns. The fuzz test checks that both give identical bytes where the
// fast path answers.
//
// # What an answer carries
//
// Answer records owned by the QNAME spell it as the query did (0x20). A
// query with an OPT record gets one back, on errors too, with the ECS
// option echoed (scope: the geo block that decided, also for a NODATA the
// geo choice caused, lengthened past any more specific block of the table
// that would place some of those clients elsewhere, and past the client's
// own prefix when such a block lies inside it; 0 when nothing about the
// client mattered) and, when
// Options.NSID is set and the query asks for it, the NSID (RFC 5001),
// which also answers CH TXT id.server and hostname.bind (RFC 4892).
//
// # Metrics
//
// Registered on Options.Registerer when set:
//
//	meridian_dns_queries_total{type,rcode,pop}   answers by query type, rcode, first PoP
//	meridian_dns_answers_total{kind}             by what answered: geo, static, zone, referral, negative, none
//	meridian_dns_wildcard_answers_total          answers made from a wildcard
//	meridian_dns_cnames_chased_total             CNAMEs into our zones followed within answers
//	meridian_dns_ecs_queries_total               queries with a valid ECS option
//	meridian_dns_fail_open_total                 answers given with no healthy PoP
//	meridian_dns_spilled_total{pop}              queries a PoP over its threshold shed
//	meridian_dns_answer_duration_seconds         time to build an answer
//	meridian_dns_rrl_total{action}               rate-limited responses (drop, slip)
//	meridian_dns_dropped_total{reason}           queries not answered (malformed, budget)
//	meridian_dns_health_stale                    1 while the beacon feed is unreachable
//	meridian_dns_pop_served{pop}                 1 when a PoP may be answered
//	meridian_dns_beacons_rejected_total          malformed beacons
//	meridian_dns_unknown_beacons_total{pop}      beacons of PoPs not configured here (also logged)
package dnsrouter
