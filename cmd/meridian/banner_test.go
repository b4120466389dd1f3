package main

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/internal/config"
	"github.com/meridian-edge/meridian/internal/stack"
	"github.com/meridian-edge/meridian/internal/testutil"
	"github.com/miekg/dns"
)

// twoPoPs has no geo table: every client is at the default region,
// us-east-1, whose PoP is the second one listed.
const twoPoPs = `nats:
  embedded:
    listen: 127.0.0.1:4222
pops:
  - id: p1
    region: eu-west-2
    http: 127.0.0.21:8080
    admin: 127.0.0.21:9090
    cache: {l1_size: 1MiB, l2: {disabled: true}}
  - id: p2
    region: us-east-1
    http: 127.0.0.22:8080
    admin: 127.0.0.22:9090
    cache: {l1_size: 1MiB, l2: {disabled: true}}
sites:
  - name: www
    hosts: [www.example.test]
    origins:
      - url: http://127.0.0.1:8081
dns:
  listen: 127.0.0.1:5353
  zones:
    - apex: example.test
      names: [www]
  geo:
    default_region: us-east-1
`

// startStack runs the configuration in yaml in this process with roles,
// every listener moved to a free port on its own address, and data under a
// temporary directory; it stops with the test.
func startStack(t *testing.T, yaml string, roles stack.Roles) (*config.Config, *stack.Stack) {
	t.Helper()
	cfg, err := config.Parse("test.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	cfg.DataDir = t.TempDir()
	local := testutil.FreeAddrs(t, "127.0.0.1", 2)
	cfg.NATS.Embedded.Listen, cfg.DNS.Listen = local[0], local[1]
	for i := range cfg.PoPs {
		p := &cfg.PoPs[i]
		host, _, _ := net.SplitHostPort(p.HTTP)
		free := testutil.FreeAddrs(t, host, 2)
		p.HTTP, p.Admin = free[0], free[1]
	}
	st, err := stack.Start(context.Background(), cfg, roles, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		st.Shutdown(ctx)
	})
	return cfg, st
}

// The banner of `meridian dev --config FILE` promises the answer dig
// gets: with no geo table, the default region's PoP (p2), not the first
// PoP listed. Checked against the real server over UDP and TCP.
func TestDevBannerPromisesTheDNSAnswer(t *testing.T) {
	cfg, st := startStack(t, twoPoPs, stack.Roles{AllPoPs: true, DNS: true})
	var out bytes.Buffer
	printDevBanner(&out, "two.yaml", cfg, st, "meridian")
	banner := out.String()
	dig := regexp.MustCompile(`(?m)^  dig @(\S+) -p (\d+) (\S+) A \+subnet=(\S+) \+short\n      -> (\S+) \((\S+), `).FindStringSubmatch(banner)
	if dig == nil {
		t.Fatalf("no dig line and promised answer in the banner:\n%s", banner)
	}
	if dig[5] != "127.0.0.22" || dig[6] != "p2" {
		t.Errorf("banner promises %s (%s), want 127.0.0.22 (p2), the default region's PoP:\n%s", dig[5], dig[6], banner)
	}
	for _, netw := range []string{"udp", "tcp"} {
		q := new(dns.Msg)
		q.SetQuestion(dns.Fqdn(dig[3]), dns.TypeA)
		q.SetEdns0(1232, false)
		_, subnet, _ := net.ParseCIDR(dig[4])
		ones, _ := subnet.Mask.Size()
		q.IsEdns0().Option = append(q.IsEdns0().Option, &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 1, SourceNetmask: uint8(ones), Address: subnet.IP.To4()})
		r, _, err := (&dns.Client{Net: netw, Timeout: 3 * time.Second}).Exchange(q, net.JoinHostPort(dig[1], dig[2]))
		if err != nil {
			t.Fatalf("%s: %v", netw, err)
		}
		if len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != dig[5] {
			t.Errorf("dig over %s answers %v; the banner promised %s", netw, r.Answer, dig[5])
		}
	}
	if !strings.Contains(banner, "curl -i --resolve www.example.test:") || !strings.Contains(banner, ":127.0.0.22 http://www.example.test:") {
		t.Errorf("the curl line does not use the promised PoP:\n%s", banner)
	}
}

// The banner's commands run meridian as the user did: a binary by the
// path they typed, `go run` only for go run's temporary binary.
func TestInvokedAs(t *testing.T) {
	for arg0, want := range map[string]string{
		"/tmp/go-build3141592/b001/exe/meridian": "go run ./cmd/meridian",
		"./meridian":                             "./meridian",
		"meridian":                               "meridian",
		"/usr/local/bin/meridian":                "/usr/local/bin/meridian",
		"/home/me/my tools/meridian":             "'/home/me/my tools/meridian'",
	} {
		if got := invokedAs(arg0); got != want {
			t.Errorf("invokedAs(%q) = %q, want %q", arg0, got, want)
		}
	}
}

// `meridian pop --id` with an id the file does not have is refused before
// anything starts (no embedded NATS, no JetStream files), and the error
// lists the ids there are.
func TestPoPUnknownIDRefusedFirst(t *testing.T) {
	dir := t.TempDir()
	text := strings.Replace(twoPoPs, "nats:\n", "data_dir: "+filepath.Join(dir, "data")+"\nnats:\n", 1)
	text = strings.Replace(text, "127.0.0.1:4222", testutil.FreeAddr(t, "127.0.0.1"), 1)
	path := filepath.Join(dir, "s2.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"pop", "--config", path, "--id", "nope"}, &stdout, &stderr)
	want := `meridian: pop: --id nope: no PoP "nope" in ` + path + "; its PoPs are p1, p2\n"
	if code != 1 || stderr.String() != want {
		t.Fatalf("exit %d, stderr %q; want exit 1 and %q", code, stderr.String(), want)
	}
	if _, err := os.Stat(filepath.Join(dir, "data")); !os.IsNotExist(err) {
		t.Fatalf("the data directory was created (%v): something started before the id was checked", err)
	}
	code = run(context.Background(), []string{"pop", "--config", path}, &stdout, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), "lists 2 PoPs (p1, p2); choose one with --id") {
		t.Fatalf("without --id: exit %d, stderr %q", code, stderr.String())
	}
}
