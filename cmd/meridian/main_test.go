package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/andybalholm/brotli"
	"github.com/meridian-edge/meridian/deploy"
	"github.com/meridian-edge/meridian/internal/config"
	"github.com/meridian-edge/meridian/internal/demoorigin"
	"github.com/meridian-edge/meridian/internal/testutil"
	"github.com/miekg/dns"
)

func TestConfigCheck(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	data, _ := deploy.File("dev.yaml")
	os.WriteFile(good, data, 0o644)
	bad := filepath.Join(dir, "bad.yaml")
	badData := bytes.Replace(data, []byte("region: eu-west-2"), []byte("region: eu-west-9"), 1)
	os.WriteFile(bad, badData, 0o644)
	badLine := 1 + bytes.Count(badData[:bytes.Index(badData, []byte("region: eu-west-9"))], []byte("\n"))

	cases := []struct {
		args     []string
		code     int
		out, err string
		not      string // in neither stdout nor stderr ("" = not checked)
	}{
		{[]string{"config", "check", good}, 0, good + ": ok (3 PoPs, 1 site, 1 DNS zone)", "", ""},
		{[]string{"config", "check", bad}, 1, "", fmt.Sprintf("%s:%d: pops[1].region: unknown region \"eu-west-9\"", bad, badLine), ""},
		{[]string{"config", "check", filepath.Join(dir, "missing.yaml")}, 1, "", "no such file or directory", ""},
		{[]string{"config", "check"}, 2, "", "usage: meridian config check FILE", ""},
		{[]string{"config", "validate", "x"}, 2, "", `config: unknown subcommand "validate"; usage: meridian config check FILE`, ""},
		{[]string{"config"}, 2, "", "config: missing subcommand; usage: meridian config check FILE", ""},
		{[]string{"config", "--help"}, 0, "usage: meridian config check FILE", "", ""},
		{[]string{"config", "check", "--help"}, 0, "", "usage: meridian config check FILE", "no such file"},
		{[]string{"regions"}, 0, "Asia-Pacific   Tokyo", "", ""},
		{[]string{"regions", "--help"}, 0, "", "usage: meridian regions", "Tokyo"},
		{[]string{"regions", "extra"}, 2, "", `regions: unexpected argument "extra"`, "Tokyo"},
		{[]string{"token", "-h"}, 0, "", "usage: meridian token", "sha256:"},
		{[]string{"version", "--help"}, 0, "", "usage: meridian version", "devel"},
		{[]string{"dev", "--help"}, 0, "", "usage: meridian dev [--config FILE]", ""},
		{[]string{"pop", "-h"}, 0, "", "usage: meridian pop --config FILE [--id ID]", ""},
		{[]string{"dns", "-h"}, 0, "", "usage: meridian dns --config FILE", ""},
		{[]string{"dns", "explain", "-h"}, 0, "", "usage: meridian dns explain [--config FILE] --subnet CIDR NAME", ""},
		{[]string{"purge", "-h"}, 0, "", "usage: meridian purge --site SITE (--url URL | --prefix URL | --key KEY | --all)", ""},
		{[]string{"purge", "--site=www", "--nope"}, 2, "", "flag provided but not defined: -nope", ""},
		{[]string{"help"}, 0, "meridian purge --site SITE", "", ""},
		{[]string{"state", "--help"}, 0, "meridian state get    [--config FILE] --node POP KEY", "", ""},
		{[]string{"state", "get", "-h"}, 0, "", "usage: meridian state get [--config FILE] --node POP KEY", ""},
		{[]string{"state", "frob"}, 2, "", `state: unknown verb "frob"`, ""},
		{[]string{"help"}, 0, "meridian dns explain [--config FILE] --subnet CIDR NAME", "", ""},
		{[]string{"dns", "explain", "--subnet", "nonsense", "www.example.test"}, 2, "",
			`meridian: dns explain: --subnet "nonsense" is not a CIDR prefix (want e.g. 203.0.113.0/24 or 2001:db8::/48)`, "ParsePrefix"},
		{[]string{"frobnicate"}, 2, "", `unknown command "frobnicate"`, ""},
		{[]string{"pop"}, 2, "", "--config is required", ""},
		{[]string{"version"}, 0, "meridian ", "", ""},
	}
	for _, c := range cases {
		var out, errb bytes.Buffer
		code := run(context.Background(), c.args, &out, &errb)
		if code != c.code || !strings.Contains(out.String(), c.out) || !strings.Contains(errb.String(), c.err) ||
			c.not != "" && strings.Contains(out.String()+errb.String(), c.not) {
			t.Errorf("meridian %v: exit %d, stdout %q, stderr %q; want exit %d, stdout ~%q, stderr ~%q, neither ~%q",
				c.args, code, out.String(), errb.String(), c.code, c.out, c.err, c.not)
		}
	}
}

// TestReloadNamesSource: the reload log names what was reloaded, the
// built-in dev configuration included (it used to log file=""), and says
// that the built-in one cannot change; a refused reload names it too.
func TestReloadNamesSource(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	var got *config.Config
	reload("", func(c *config.Config) error { got = c; return nil }, log)
	if got == nil || len(got.PoPs) != 3 {
		t.Fatalf("the built-in configuration was not applied: %+v", got)
	}
	if s := logs.String(); !strings.Contains(s, `msg="configuration reloaded" source="built-in deploy/dev.yaml"`) ||
		!strings.Contains(s, "run with --config FILE") || strings.Contains(s, `file=""`) {
		t.Fatalf("reload of the built-in configuration logged:\n%s", s)
	}

	logs.Reset()
	reload("", func(*config.Config) error {
		return errors.New("pops us-east-1: http and admin addresses cannot change live")
	}, log)
	if s := logs.String(); !strings.Contains(s, `msg="reload refused; keeping the running configuration" source="built-in deploy/dev.yaml"`) ||
		!strings.Contains(s, "cannot change live") {
		t.Fatalf("refused reload logged:\n%s", s)
	}

	logs.Reset()
	missing := filepath.Join(t.TempDir(), "gone.yaml")
	applied := false
	reload(missing, func(*config.Config) error { applied = true; return nil }, log)
	if s := logs.String(); applied || !strings.Contains(s, "reload refused") || !strings.Contains(s, "source="+missing) {
		t.Fatalf("reload of a missing file (applied %v) logged:\n%s", applied, s)
	}
}

// TestDevCommand runs the real binary as a user would: `meridian dev`, reads
// the banner, runs the printed dig and curl commands (with Go clients) and
// stops it with Ctrl-C. The binary is built and run as the Dockerfile's
// image does, so the image's command is tested too.
func TestDevCommand(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "meridian")
	buildAsImage(t, bin)
	data, _ := deploy.File("dev.yaml")
	text := string(data)
	for _, host := range []string{"127.0.0.11", "127.0.0.12", "127.0.0.13"} {
		free := testutil.FreeAddrs(t, host, 3)
		text = strings.Replace(text, host+":8080", free[0], 1)
		text = strings.Replace(text, host+":9090", free[1], 1)
		text = strings.Replace(text, host+":8443", free[2], 1)
	}
	fixed := []string{"127.0.0.1:4222", "127.0.0.1:8081", "127.0.0.1:5353", "127.0.0.1:9153"}
	for i, a := range testutil.FreeAddrs(t, "127.0.0.1", len(fixed)) {
		text = strings.ReplaceAll(text, fixed[i], a)
	}
	cfgPath := filepath.Join(dir, "dev.yaml")
	os.WriteFile(cfgPath, []byte(text), 0o644)

	// As in the image: an empty working directory (data_dir ./.meridian
	// lands there), and no toolchain, source tree or HOME to lean on. The
	// PoP process sets its own collector, so GOGC and GOMEMLIMIT are unset.
	work := filepath.Join(dir, "work")
	os.Mkdir(work, 0o755)
	cmd := exec.Command(bin, "dev", "--config", cfgPath)
	cmd.Dir = work
	cmd.Env = []string{"PATH=/nonexistent", "HOME=/nonexistent"}
	stdout, _ := cmd.StdoutPipe()
	stderr := &testutil.SyncBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()

	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var digLine, curlLine, httpsLine, want, wantPoP, adminURL string
	timeout := time.After(30 * time.Second)
	for curlLine == "" || httpsLine == "" {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("meridian dev exited early:\n%s", stderr.String())
			}
			switch l = strings.TrimSpace(l); {
			case strings.HasPrefix(l, "dig "):
				digLine = l
			case strings.HasPrefix(l, "PoP ") && adminURL == "":
				// PoP ID http://HOST:PORT admin http://HOST:PORT [https://...]
				if f := strings.Fields(l); len(f) >= 5 && f[3] == "admin" {
					adminURL = f[4]
				}
			case strings.HasPrefix(l, "-> "):
				want = strings.Fields(l)[1]
				wantPoP = strings.Trim(strings.Fields(l)[2], "(,")
			case strings.HasPrefix(l, "curl --cacert"):
				httpsLine = l
			case strings.HasPrefix(l, "curl "):
				curlLine = l
			}
		case <-timeout:
			t.Fatalf("no banner within 30s:\n%s", stderr.String())
		}
	}
	// Three PoPs of 256MiB of L1: GC percentage for 768MiB, L1 reserved.
	// (Info lines reach stderr in batches, every 200ms.)
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(stderr.String(), `msg="memory tuned for the L1 budget" l1_bytes=805306368 gogc=4`); {
		if time.Now().After(deadline) {
			t.Fatalf("no memory tuning for the three PoPs' L1 in the log:\n%s", stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}

	// dig @HOST -p PORT NAME A +subnet=CIDR +short
	m := regexp.MustCompile(`^dig @(\S+) -p (\d+) (\S+) A \+subnet=(\S+) \+short$`).FindStringSubmatch(digLine)
	if m == nil {
		t.Fatalf("unexpected dig line %q", digLine)
	}
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(m[3]), dns.TypeA)
	ip, ipnet, _ := net.ParseCIDR(m[4])
	ones, _ := ipnet.Mask.Size()
	o := &dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT}}
	o.Option = append(o.Option, &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 1, SourceNetmask: uint8(ones), Address: ip.To4()})
	q.Extra = append(q.Extra, o)
	r, _, err := (&dns.Client{Timeout: 2 * time.Second}).Exchange(q, net.JoinHostPort(m[1], m[2]))
	if err != nil {
		t.Fatalf("%s: %v", digLine, err)
	}
	if len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != want {
		t.Fatalf("%s: answer %v, banner promised %s", digLine, r.Answer, want)
	}

	// curl -i --resolve NAME:PORT:IP http://NAME:PORT/
	c := regexp.MustCompile(`^curl -i --resolve ([^:]+):(\d+):(\S+) (http://\S+)$`).FindStringSubmatch(curlLine)
	if c == nil {
		t.Fatalf("unexpected curl line %q", curlLine)
	}
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, net.JoinHostPort(c[3], c[2]))
	}}}
	resp, err := client.Get(c[4])
	if err != nil {
		t.Fatalf("%s: %v", curlLine, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "Hello from the Meridian demo origin") {
		t.Fatalf("%s: %d %q", curlLine, resp.StatusCode, body)
	}

	// The dev site compresses at the edge: the demo origin's stylesheet,
	// sent plain, reaches a browser (which accepts brotli) in brotli, as
	// the README shows.
	plain := &http.Client{Transport: &http.Transport{DisableCompression: true, DialContext: client.Transport.(*http.Transport).DialContext}}
	req, _ := http.NewRequest(http.MethodGet, strings.TrimSuffix(c[4], "/")+"/assets/app.css", nil)
	req.Header.Set("Accept-Encoding", "gzip, deflate, br, zstd")
	if resp, err = plain.Do(req); err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.Header.Get("Content-Encoding") != "br" {
		t.Fatalf("/assets/app.css with a browser's Accept-Encoding: %d, Content-Encoding %q, want br", resp.StatusCode, resp.Header.Get("Content-Encoding"))
	}
	if css, err := io.ReadAll(brotli.NewReader(bytes.NewReader(body))); err != nil || string(css) != demoorigin.Stylesheet() {
		t.Fatalf("/assets/app.css decodes to %d bytes (%v), not the origin's stylesheet", len(css), err)
	}

	// The printed HTTPS line works as printed, with the real curl.
	// From meridian's directory, as the user who started it: the path of
	// the CA is relative to it.
	curl := exec.Command("sh", "-c", httpsLine+" -sS --max-time 10")
	curl.Dir = work
	out, err := curl.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Hello from the Meridian demo origin") {
		t.Fatalf("%s: %v\n%s", httpsLine, err, out)
	}

	// The printed explain line names the same PoP. It runs meridian as
	// it was invoked (this binary, not `go run`), and works as printed.
	var explainLine string
	for explainLine == "" {
		select {
		case l := <-lines:
			if l = strings.TrimSpace(l); strings.Contains(l, " dns explain ") {
				explainLine = l
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no explain line in the banner")
		}
	}
	if want := bin + " dns explain --config " + cfgPath + " --subnet "; !strings.HasPrefix(explainLine, want) {
		t.Fatalf("explain line %q, want it to start with %q", explainLine, want)
	}
	args := strings.Fields(strings.TrimPrefix(explainLine, bin))
	out, err = exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", explainLine, err, out)
	}
	if !strings.Contains(string(out), "chosen: "+wantPoP+"\n") || !strings.Contains(string(out), "ECS scope /24") {
		t.Fatalf("%s printed:\n%s", explainLine, out)
	}
	// A name with static records only: the records every client gets.
	out, err = exec.Command(bin, "dns", "explain", "--config", cfgPath, "--subnet", "198.51.100.0/24", "mail.example.test").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "not geo-routed: every client gets its static records") || !strings.Contains(string(out), "mail.example.test. 3600 IN A 127.0.0.25") {
		t.Fatalf("dns explain of a static name: %v\n%s", err, out)
	}
	// A name the server does not serve: its error, with the prefix once.
	out, err = exec.Command(bin, "dns", "explain", "--config", cfgPath, "--subnet", "198.51.100.0/24", "nope.example.test").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "dns explain: nope.example.test. does not exist in zone example.test. (NXDOMAIN)") || strings.Count(string(out), "dns explain:") != 1 {
		t.Fatalf("dns explain of an unserved name: %v\n%s", err, out)
	}

	// SIGHUP reloads the file: a new served name answers without a restart,
	// and a broken file is refused while the old configuration keeps serving.
	rcode := func(name string) int {
		q := new(dns.Msg)
		q.SetQuestion(name, dns.TypeA)
		r, _, err := (&dns.Client{Timeout: 2 * time.Second}).Exchange(q, net.JoinHostPort(m[1], m[2]))
		if err != nil {
			t.Fatal(err)
		}
		return r.Rcode
	}
	os.WriteFile(cfgPath, []byte(strings.Replace(text, "names: [www]", "names: [www, api]", 1)), 0o644)
	cmd.Process.Signal(syscall.SIGHUP)
	deadline := time.Now().Add(10 * time.Second)
	for rcode("api.example.test.") != dns.RcodeSuccess {
		if time.Now().After(deadline) {
			t.Fatalf("api.example.test not served 10s after SIGHUP:\n%s", stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The reload log names the file (Info lines reach stderr in batches).
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(stderr.String(), `msg="configuration reloaded" source=`+cfgPath); {
		if time.Now().After(deadline) {
			t.Fatalf("no reload log naming %s:\n%s", cfgPath, stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	os.WriteFile(cfgPath, []byte(strings.Replace(text, "names: [www]", "names: [www, api]\n      bogus: 1", 1)), 0o644)
	cmd.Process.Signal(syscall.SIGHUP)
	deadline = time.Now().Add(10 * time.Second)
	for !strings.Contains(stderr.String(), "reload refused") {
		if time.Now().After(deadline) {
			t.Fatalf("no 'reload refused' log for a broken file:\n%s", stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if rcode("api.example.test.") != dns.RcodeSuccess {
		t.Fatal("a refused reload dropped the running configuration")
	}
	// Both reloads are on every PoP's /metrics.
	if resp, err := http.Get(adminURL + "/metrics"); err != nil {
		t.Fatal(err)
	} else {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, want := range []string{`meridian_config_reloads_total{result="applied"} 1`, `meridian_config_reloads_total{result="refused"} 1`, "meridian_config_last_reload_success_timestamp_seconds "} {
			if !strings.Contains(string(b), want) {
				t.Errorf("no %q on a PoP's /metrics", want)
			}
		}
	}

	// With shutdown.drain set (by a reload: it is read when the stop
	// begins), Ctrl-C first drains: /healthz says so and the DNS is told,
	// while the site goes on serving; a second Ctrl-C ends the drain, and
	// everything stops cleanly.
	os.WriteFile(cfgPath, []byte(strings.Replace(text, "names: [www]", "names: [www, api]", 1)+"\nshutdown:\n  drain: 60s\n"), 0o644)
	reloads := strings.Count(stderr.String(), `msg="configuration reloaded"`)
	cmd.Process.Signal(syscall.SIGHUP)
	for deadline := time.Now().Add(10 * time.Second); strings.Count(stderr.String(), `msg="configuration reloaded"`) == reloads; {
		if time.Now().After(deadline) {
			t.Fatalf("no reload of the shutdown settings:\n%s", stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if adminURL == "" {
		t.Fatal("no PoP admin address in the banner")
	}
	health := func() int {
		resp, err := http.Get(adminURL + "/healthz")
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := health(); code != http.StatusOK {
		t.Fatalf("/healthz before the stop: %d", code)
	}
	cmd.Process.Signal(syscall.SIGINT)
	for deadline := time.Now().Add(10 * time.Second); health() != http.StatusServiceUnavailable; {
		if time.Now().After(deadline) {
			t.Fatalf("/healthz not draining 10s after Ctrl-C:\n%s", stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if resp, err := client.Get(c[4]); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("the site while draining: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	// The DNS goes on answering through the drain, over UDP and TCP:
	// steering clients away from the draining PoPs is what the drain is
	// for. (It used to stop at the signal.)
	for i := 0; i < 20; i++ {
		for _, netw := range []string{"udp", "tcp"} {
			q := new(dns.Msg)
			q.SetQuestion("www.example.test.", dns.TypeA)
			r, _, err := (&dns.Client{Net: netw, Timeout: 2 * time.Second}).Exchange(q, net.JoinHostPort(m[1], m[2]))
			if err != nil || r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
				t.Fatalf("DNS over %s during the drain (check %d): %v %v\n%s", netw, i, r, err, stderr.String())
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGINT)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after Ctrl-C: %v\n%s", err, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("still running 20s after the second Ctrl-C (the drain is 60s)")
	}
	// ... and stops with the rest at the end.
	if c, err := net.DialTimeout("tcp", net.JoinHostPort(m[1], m[2]), 2*time.Second); err == nil {
		c.Close()
		t.Fatal("the DNS still accepts TCP after the stop")
	}
	for _, want := range []string{"draining before the stop", "drain cut short", "shutting down", `msg=stopped`} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("no %q in the log:\n%s", want, stderr.String())
		}
	}
}

// buildAsImage builds the binary with the Dockerfile's own build command
// (read from the Dockerfile, so the two cannot drift): a static binary,
// stripped, without cgo.
func buildAsImage(t *testing.T, bin string) {
	t.Helper()
	df, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^RUN (.*go build .*) -o /out/meridian (\./cmd/meridian)`).FindSubmatch(df)
	if m == nil {
		t.Fatal("no `RUN ... go build ... -o /out/meridian ./cmd/meridian` line in the Dockerfile")
	}
	build := exec.Command("sh", "-c", string(m[1])+` -o "$BIN" `+string(m[2]))
	build.Dir = "../.."
	build.Env = append(os.Environ(), "BIN="+bin)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("the Dockerfile's build (%s): %v\n%s", build.Args[2], err, out)
	}
	// distroless/static has no C library: the binary must not need one.
	if out, err := exec.Command("ldd", bin).CombinedOutput(); err == nil {
		t.Fatalf("the image's binary is dynamically linked; distroless/static cannot run it:\n%s", out)
	}
}
