package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/meridian-edge/meridian/deploy"
	"github.com/meridian-edge/meridian/dnsrouter"
	"github.com/meridian-edge/meridian/dnsrouter/region"
	"github.com/meridian-edge/meridian/gateway/tlsedge/devca"
	"github.com/meridian-edge/meridian/internal/config"
	"github.com/meridian-edge/meridian/internal/stack"
)

func version() string {
	v := "devel"
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				v += " " + s.Value[:12]
			}
		}
		v += " " + bi.GoVersion
	}
	return "meridian " + v
}

// newFlags makes the flag set of command name ("dns explain"). Its -h and
// its flag errors print "usage: meridian SYNOPSIS" and the flags the command
// registered, so every command answers -h/--help with its own usage.
func newFlags(name, synopsis string, stderr io.Writer) flagSet {
	fs := flag.NewFlagSet("meridian "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: meridian %s\n", synopsis)
		n := 0
		fs.VisitAll(func(*flag.Flag) { n++ })
		if n > 0 {
			fmt.Fprintf(fs.Output(), "\nflags:\n")
			fs.PrintDefaults()
		}
	}
	return flagSet{fs}
}

// flagSet is a command's flag.FlagSet whose Parse marks its errors as
// already reported: the flag package has printed the error and the usage.
type flagSet struct{ *flag.FlagSet }

// errFlags is a flag parse error the flag package has printed with the
// command's usage: run exits 2 without printing it again.
type errFlags struct{ err error }

func (e errFlags) Error() string { return e.err.Error() }
func (e errFlags) Unwrap() error { return e.err }

// Parse parses args; an error other than flag.ErrHelp comes as errFlags.
func (f flagSet) Parse(args []string) error {
	err := f.FlagSet.Parse(args)
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		return errFlags{err}
	}
	return err
}

// noArgs parses the arguments of a command that takes none: -h prints its
// usage, anything else is refused.
func noArgs(name, synopsis string, args []string, stderr io.Writer) error {
	fs := newFlags(name, synopsis, stderr)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%s: unexpected argument %q; usage: meridian %s: %w", name, fs.Arg(0), synopsis, errUsage)
	}
	return nil
}

// plural is "1 site", "2 sites": n and the word, pluralised by appending s.
func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return strconv.Itoa(n) + " " + word + "s"
}

func loadConfig(path string) (*config.Config, error) {
	if path == "" {
		data, err := deploy.File("dev.yaml")
		if err != nil {
			return nil, err
		}
		return config.Parse("deploy/dev.yaml (built in)", data)
	}
	return config.Load(path)
}

// newLogger makes the process logger, writing through buf.
func newLogger(cfg *config.Config, buf *logBuffer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.Log.Level))
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewTextHandler(buf, opts)
	if cfg.Log.Format == "json" {
		h = slog.NewJSONHandler(buf, opts)
	}
	return slog.New(flushingHandler{h, buf})
}

// serve runs a stack until SIGINT or SIGTERM, reloading on SIGHUP.
func serve(ctx context.Context, path string, roles stack.Roles, stderr io.Writer, started func(*config.Config, *stack.Stack)) error {
	cfg, err := loadConfig(path)
	if err != nil {
		return err
	}
	buf := newLogBuffer(stderr)
	log := newLogger(cfg, buf)
	// stops delivers SIGINT and SIGTERM: the first begins the stop (ctx
	// ends), a second during shutdown.drain cuts the drain short.
	stops := make(chan os.Signal, 2)
	signal.Notify(stops, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(stops)
	// life bounds the stack's components and ends only once stopStack is
	// over, not at the signal: through shutdown.drain the DNS must go on
	// answering (steering clients away from the draining PoPs is the point
	// of the drain) and the PoPs on beaconing that they drain. stopping
	// ends at the first signal, or with the caller's ctx, and begins the
	// stop.
	life, endLife := context.WithCancel(context.WithoutCancel(ctx))
	defer endLife()
	stopping, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		select {
		case <-stops:
			stop()
		case <-stopping.Done():
		}
	}()
	logCtx, stopLog := context.WithCancel(context.Background())
	logDone := make(chan struct{})
	go func() { buf.run(logCtx); close(logDone) }()
	defer func() { stopLog(); <-logDone }()
	st, err := stack.Start(life, cfg, roles, log)
	if err != nil {
		return err
	}
	if started != nil {
		started(cfg, st)
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-hup:
			st.RecordReload(reload(path, st.Reload, log))
			continue
		case <-stopping.Done():
		}
		break
	}
	return stopStack(st, stops, log)
}

// stopStack stops st as the running configuration's shutdown section says:
// the PoPs drain first (report unhealthy and keep serving, so the DNS moves
// clients away; a signal on more ends the drain early), then stop accepting
// and give requests in flight the grace period.
func stopStack(st *stack.Stack, more <-chan os.Signal, log *slog.Logger) error {
	sd := st.Config().Shutdown
	if sd.Drain > 0 && len(st.PoPIDs()) > 0 {
		log.Info("draining before the stop: the PoPs report unhealthy so the DNS sends clients elsewhere, and keep serving; signal again to stop now", "drain", sd.Drain)
		st.DrainForShutdown()
		t := time.NewTimer(sd.Drain)
		select {
		case <-t.C:
		case <-more:
			t.Stop()
			log.Info("drain cut short by a second signal")
		}
	}
	log.Info("shutting down: no new connections; in-flight requests get the grace period to finish", "grace", sd.Grace)
	sctx, cancel := context.WithTimeout(context.Background(), sd.Grace)
	defer cancel()
	err := st.Shutdown(sctx)
	if sctx.Err() != nil {
		log.Warn("the grace period ran out: requests still in flight were cut off (raise shutdown.grace)", "grace", sd.Grace)
	}
	log.Info("stopped")
	return err
}

// builtInSource names the configuration `meridian dev` runs without --config.
const builtInSource = "built-in deploy/dev.yaml"

// reload reads the configuration again and hands it to apply (the stack's
// Reload), which applies what can change live. A bad file is refused whole
// and the running configuration stays. Every log line names the source; the
// error (nil: applied) is returned for the reload metrics.
//
// The built-in dev configuration is compiled into the binary, so reloading
// it cannot change a setting; it is still applied, because a reload also
// re-reads the certificate files (the dev CA's among them). The log says
// so, and how to get a configuration that SIGHUP can change.
func reload(path string, apply func(*config.Config) error, log *slog.Logger) error {
	source := path
	if source == "" {
		source = builtInSource
	}
	cfg, err := loadConfig(path)
	if err == nil {
		err = apply(cfg)
	}
	if err != nil {
		// One problem per line in the file's report; joined here, so that
		// the log line reads as text rather than with escaped newlines.
		log.Error("reload refused; keeping the running configuration", "source", source, "err", strings.ReplaceAll(err.Error(), "\n", "; "))
		return err
	}
	if path == "" {
		log.Info("configuration reloaded", "source", source,
			"note", "the built-in configuration is part of the binary and cannot change; certificates were re-read. To change settings with SIGHUP, run with --config FILE (a copy of deploy/dev.yaml)")
		return nil
	}
	log.Info("configuration reloaded", "source", source)
	return nil
}

func cmdDev(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("dev", "dev [--config FILE]", stderr)
	path := fs.String("config", "", "configuration file (default: the built-in deploy/dev.yaml)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	return serve(ctx, *path, stack.Roles{AllPoPs: true, DNS: true, DemoOrigin: true, TuneMemory: true}, stderr, func(cfg *config.Config, st *stack.Stack) {
		printDevBanner(stdout, *path, cfg, st, invokedAs(os.Args[0]))
	})
}

// printDevBanner prints what runs and commands to try; self is how the
// user invoked meridian (invokedAs).
func printDevBanner(w io.Writer, path string, cfg *config.Config, st *stack.Stack, self string) {
	fmt.Fprintf(w, "\nMeridian dev stack is up (Ctrl-C stops it).\n\n")
	fmt.Fprintf(w, "  NATS        %s (JetStream state in %s)\n", st.NATSURL(), cfg.DataDir)
	fmt.Fprintf(w, "  origin      http://%s (demo)\n", orDefault(cfg.Dev.Origin, config.DefaultDevOrigin))
	for _, id := range st.PoPIDs() {
		p := st.PoP(id)
		fmt.Fprintf(w, "  PoP         %-16s http://%s  admin http://%s", id, p.HTTPAddr(), p.AdminAddr())
		if a := p.HTTPSAddr(); a != "" {
			fmt.Fprintf(w, "  https://%s", a)
		}
		fmt.Fprintln(w)
	}
	if d := st.DNS(); d != nil {
		fmt.Fprintf(w, "  DNS         %s udp+tcp", d.Addr())
		if cfg.DNS.Metrics != "" {
			fmt.Fprintf(w, ", metrics http://%s/metrics", cfg.DNS.Metrics)
		}
		fmt.Fprintln(w)
	}
	if d := st.DNS(); d != nil && len(cfg.DNS.Zones) > 0 && len(cfg.DNS.Zones[0].Names) > 0 && len(st.PoPIDs()) > 0 {
		z := cfg.DNS.Zones[0]
		name := config.FQDN(z.Names[0], z.Apex)
		for _, n := range z.Names {
			if fq := config.FQDN(n, z.Apex); fq != z.Apex {
				name = fq // a host name reads better than the apex
				break
			}
		}
		host, port, _ := net.SplitHostPort(d.Addr())
		subnet, chosen := exampleSubnet(cfg, d, name)
		fmt.Fprintf(w, "\nTry it:\n")
		fmt.Fprintf(w, "  dig @%s -p %s %s A +subnet=%s +short\n", host, port, name, subnet)
		if len(chosen) > 0 {
			var ips []string
			for _, id := range chosen {
				ips = append(ips, ipv4s(popConfig(cfg, id))...)
			}
			if len(chosen) > 1 {
				fmt.Fprintf(w, "      -> %s (%s: the %d PoPs the DNS answers for that subnet)\n", strings.Join(ips, " "), strings.Join(chosen, ", "), len(chosen))
			} else {
				fmt.Fprintf(w, "      -> %s (%s, the PoP the DNS answers for that subnet)\n", strings.Join(ips, " "), chosen[0])
			}
			pc := popConfig(cfg, chosen[0])
			if p := st.PoP(chosen[0]); p != nil && len(pc.Addresses) > 0 {
				addr := pc.Addresses[0]
				if v4 := ipv4s(pc); len(v4) > 0 {
					addr = v4[0] // the address dig printed
				}
				_, httpPort, _ := net.SplitHostPort(p.HTTPAddr())
				fmt.Fprintf(w, "  curl -i --resolve %s:%s:%s http://%s:%s/\n", name, httpPort, addr, name, httpPort)
				if ca, ok := st.DevCA(); ok && p.HTTPSAddr() != "" {
					fmt.Fprintf(w, "  %s\n", devca.CurlCommand(ca.CACert, name, portNum(p.HTTPSAddr()), addr))
				}
			}
		}
		if cfg.DNS.Metrics != "" {
			cfgFlag := ""
			if path != "" {
				cfgFlag = " --config " + shellQuote(path)
			}
			fmt.Fprintf(w, "  %s dns explain%s --subnet %s %s\n", self, cfgFlag, subnet, name)
		}
	}
	fmt.Fprintln(w)
}

// exampleSubnet picks a geo-table block whose answer is not the first
// PoP, so the printed dig shows geo routing at work, and returns it with
// the PoPs the DNS server answers for it: asked of the server itself
// (dns explain), so that the banner promises what dig will print, default
// region and health included. Without a geo table any subnet gets the
// default region's answer.
func exampleSubnet(cfg *config.Config, d *dnsrouter.Server, name string) (string, []string) {
	chosen := func(subnet string) []string {
		e, err := d.Explain(netip.MustParsePrefix(subnet), name)
		if err != nil {
			return nil // not a served name: nothing to promise
		}
		return e.Chosen
	}
	best, bestChosen := "", []string(nil)
	for _, e := range cfg.DNS.Geo.Table {
		if p, err := netip.ParsePrefix(e.CIDR); err != nil || !p.Addr().Is4() {
			continue // the dig line asks for A records with an IPv4 subnet
		}
		best, bestChosen = e.CIDR, chosen(e.CIDR)
		if len(bestChosen) > 0 && bestChosen[0] != cfg.PoPs[0].ID {
			break
		}
	}
	if best == "" {
		best = "127.0.0.0/8"
		bestChosen = chosen(best)
	}
	return best, bestChosen
}

// ipv4s lists a PoP's IPv4 addresses: its answer to an A query.
func ipv4s(pc config.PoP) []string {
	var out []string
	for _, a := range pc.Addresses {
		if ip, err := netip.ParseAddr(a); err == nil && ip.Unmap().Is4() {
			out = append(out, ip.Unmap().String())
		}
	}
	return out
}

// invokedAs is how the user ran this binary, for the commands the banner
// prints: arg0 (os.Args[0]) as given, or "go run ./cmd/meridian" when it
// is the binary `go run` built in a temporary directory, which a user
// cannot run again.
func invokedAs(arg0 string) string {
	p := filepath.ToSlash(arg0)
	if strings.Contains(p, "/go-build") && strings.Contains(p, "/exe/") {
		return "go run ./cmd/meridian"
	}
	return shellQuote(arg0)
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:=@+,") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func portNum(addr string) int {
	_, port, _ := net.SplitHostPort(addr)
	n, _ := strconv.Atoi(port)
	return n
}

func popConfig(cfg *config.Config, id string) config.PoP {
	for _, p := range cfg.PoPs {
		if p.ID == id {
			return p
		}
	}
	return config.PoP{}
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func cmdPoP(ctx context.Context, args []string, stderr io.Writer) error {
	fs := newFlags("pop", "pop --config FILE [--id ID]", stderr)
	path := fs.String("config", "", "configuration file (required)")
	id := fs.String("id", "", "PoP to run, when the file lists several")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *path == "" {
		fs.Usage()
		return fmt.Errorf("pop: --config is required: %w", errUsage)
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return err
	}
	ids := make([]string, len(cfg.PoPs))
	for i, p := range cfg.PoPs {
		ids[i] = p.ID
	}
	if *id == "" {
		if len(cfg.PoPs) != 1 {
			return fmt.Errorf("pop: %s lists %s (%s); choose one with --id", *path, plural(len(cfg.PoPs), "PoP"), strings.Join(ids, ", "))
		}
		*id = cfg.PoPs[0].ID
	}
	// Checked before anything starts (embedded NATS, memory tuning), so
	// that a typo costs nothing and says what would have been right.
	if !slices.Contains(ids, *id) {
		return fmt.Errorf("pop: --id %s: no PoP %q in %s; its PoPs are %s", *id, *id, *path, strings.Join(ids, ", "))
	}
	return serve(ctx, *path, stack.Roles{PoPs: []string{*id}, TuneMemory: true}, stderr, nil)
}

func cmdDNS(ctx context.Context, args []string, stderr io.Writer) error {
	fs := newFlags("dns", "dns --config FILE   (and: meridian dns explain -h)", stderr)
	path := fs.String("config", "", "configuration file (required)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *path == "" {
		fs.Usage()
		return fmt.Errorf("dns: --config is required: %w", errUsage)
	}
	return serve(ctx, *path, stack.Roles{DNS: true}, stderr, nil)
}

// configUsage is the usage of 'meridian config'.
const configUsage = "usage: meridian config check FILE"

// cmdConfig runs 'meridian config SUBCOMMAND'.
func cmdConfig(args []string, stdout, stderr io.Writer) error {
	switch {
	case len(args) == 0:
		return fmt.Errorf("config: missing subcommand; %s: %w", configUsage, errUsage)
	case args[0] == "-h" || args[0] == "--help" || args[0] == "help":
		fmt.Fprintln(stdout, configUsage)
		return nil
	case args[0] != "check":
		return fmt.Errorf("config: unknown subcommand %q; %s: %w", args[0], configUsage, errUsage)
	}
	return cmdConfigCheck(args[1:], stdout, stderr)
}

func cmdConfigCheck(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("config check", "config check FILE", stderr)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("config check: give exactly one FILE; %s: %w", configUsage, errUsage)
	}
	file := fs.Arg(0)
	cfg, err := config.Load(file)
	if err != nil {
		return err
	}
	zones := 0
	if cfg.DNS != nil {
		zones = len(cfg.DNS.Zones)
	}
	fmt.Fprintf(stdout, "%s: ok (%s, %s, %s)\n", file, plural(len(cfg.PoPs), "PoP"), plural(len(cfg.Sites), "site"), plural(zones, "DNS zone"))
	return nil
}

func cmdToken(args []string, stdout, stderr io.Writer) error {
	if err := noArgs("token", "token   (prints a new admin API token and its SHA-256)", args, stderr); err != nil {
		return err
	}
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return err
	}
	token := base64.RawURLEncoding.EncodeToString(b[:])
	sum := sha256.Sum256([]byte(token))
	fmt.Fprintf(stdout, "token:  %s\nsha256: %s\n\nGive the token to its holder (Authorization: Bearer TOKEN); put only the sha256 in the config\n(admin.ops_token_sha256, or sites[].owner_token_sha256).\n", token, hex.EncodeToString(sum[:]))
	return nil
}

func cmdRegions(args []string, stdout, stderr io.Writer) error {
	if err := noArgs("regions", "regions   (lists the built-in region catalog)", args, stderr); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tCONTINENT\tCITY\tLAT\tLON")
	for _, r := range region.All() {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%.1f\t%.1f\n", r.ID, r.Continent, r.City, r.Lat, r.Lon)
	}
	return tw.Flush()
}

// explainUsage is the synopsis of 'meridian dns explain'.
const explainUsage = "dns explain [--config FILE] --subnet CIDR NAME"

func cmdDNSExplain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("dns explain", explainUsage, stderr)
	path := fs.String("config", "", "configuration file of the running DNS server (default: the built-in dev stack)")
	subnet := fs.String("subnet", "", "client subnet, e.g. 203.0.113.0/24 (required)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *subnet == "" || fs.NArg() != 1 {
		return fmt.Errorf("dns explain: usage: meridian %s: %w", explainUsage, errUsage)
	}
	prefix, err := netip.ParsePrefix(*subnet)
	if err != nil {
		return fmt.Errorf("dns explain: --subnet %q is not a CIDR prefix (want e.g. 203.0.113.0/24 or 2001:db8::/48): %w", *subnet, errUsage)
	}
	cfg, err := loadConfig(*path)
	if err != nil {
		return err
	}
	if cfg.DNS == nil || cfg.DNS.Metrics == "" {
		return fmt.Errorf("dns explain: the configuration has no dns.metrics address to ask the running server on")
	}
	q := url.Values{"subnet": {prefix.String()}, "name": {fs.Arg(0)}}
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+cfg.DNS.Metrics+"/explain?"+q.Encode(), nil)
	req.Header.Set("Accept", "text/plain")
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		return fmt.Errorf("dns explain: is the DNS server running? %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		// The server's errors may carry the prefix already.
		msg := strings.TrimPrefix(strings.TrimSpace(string(body)), "dns explain: ")
		return fmt.Errorf("dns explain: %s", msg)
	}
	_, err = io.Copy(stdout, resp.Body)
	return err
}
