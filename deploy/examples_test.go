package deploy_test

// These tests keep the example deployments under deploy/*/ from rotting: every
// file there is loaded by the program that will read it in production.
//
// Naming convention (documented in each example's README):
//   - *.meridian.yaml      a Meridian config; loaded with config.Load, as
//     `meridian config check` does. A ConfigMap key ending in .meridian.yaml
//     (deploy/k8s) is parsed the same way.
//   - *.conf               a nats-server config; loaded with the server's own
//     ProcessConfigFile. A file that another .conf of its directory includes
//     is a fragment and is checked through its includer. A ConfigMap key
//     ending in .conf is a nats-server config too.
//   - other *.yaml, *.yml  compose, Kubernetes or kustomize files: parsed (every
//     document), and the files they mount or list must exist.
//   - *.service            systemd units: the config files they name must exist.
//
// Paths under /etc/nats/ (TLS certificates) are mapped to a temporary
// directory holding a throwaway CA and server certificate, and the variables
// the configs take from the environment are set from nats.env.example, so
// that the files are checked as they are shipped.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/gateway/tlsedge/jsstorage"
	"github.com/meridian-edge/meridian/internal/beacon"
	"github.com/meridian-edge/meridian/internal/config"
	"github.com/meridian-edge/meridian/internal/statesync"
	"github.com/meridian-edge/meridian/internal/testutil"
	"github.com/meridian-edge/meridian/plugins/rollout"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.yaml.in/yaml/v3"
)

// exampleFiles lists every file below deploy's subfolders (the shipped
// top-level files belong to deploy.go and its own tests).
func exampleFiles(t *testing.T) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.Contains(path, string(filepath.Separator)) {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no example files under deploy/*/")
	}
	return files
}

func isMeridianConfig(name string) bool { return strings.HasSuffix(name, ".meridian.yaml") }

func isYAML(name string) bool {
	return strings.HasSuffix(name, ".yaml") || strings.HasSuffix(name, ".yml")
}

// TestMeridianConfigsLoad loads every Meridian config file of the examples.
func TestMeridianConfigsLoad(t *testing.T) {
	n := 0
	for _, f := range exampleFiles(t) {
		if !isMeridianConfig(f) {
			continue
		}
		n++
		if _, err := config.Load(f); err != nil {
			t.Errorf("%v", err)
		}
	}
	for _, cm := range configMapFiles(t) {
		if !isMeridianConfig(cm.key) {
			continue
		}
		n++
		if _, err := config.Parse(cm.name(), []byte(cm.data)); err != nil {
			t.Errorf("%v", err)
		}
	}
	if n < 10 {
		t.Errorf("found only %d Meridian configs; the examples hold at least 10 (*.meridian.yaml)", n)
	}
}

// yamlDocs decodes every document of a YAML file.
func yamlDocs(t *testing.T, path string) []map[string]any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var docs []map[string]any
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var doc map[string]any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Errorf("%s: %v", path, err)
			return nil
		}
		if doc != nil {
			docs = append(docs, doc)
		}
	}
	if len(docs) == 0 {
		t.Errorf("%s: no YAML document", path)
	}
	return docs
}

// TestOtherYAMLParses parses every YAML file that is not a Meridian config and
// checks what it refers to.
func TestOtherYAMLParses(t *testing.T) {
	for _, f := range exampleFiles(t) {
		if !isYAML(f) || isMeridianConfig(f) {
			continue
		}
		for _, doc := range yamlDocs(t, f) {
			// A Meridian config under another name would escape config.Load.
			if _, pops := doc["pops"]; pops {
				if _, nats := doc["nats"]; nats {
					t.Errorf("%s looks like a Meridian config; name it *.meridian.yaml so that it is checked", f)
				}
			}
			switch {
			case filepath.Base(f) == "docker-compose.yml":
				checkCompose(t, f, doc)
			case filepath.Base(f) == "kustomization.yaml":
				for _, r := range list(doc["resources"]) {
					if _, err := os.Stat(filepath.Join(filepath.Dir(f), fmt.Sprint(r))); err != nil {
						t.Errorf("%s: resource %v: %v", f, r, err)
					}
				}
			case strings.HasPrefix(f, "k8s"+string(filepath.Separator)):
				checkK8sObject(t, f, doc)
			}
		}
	}
}

func list(v any) []any { l, _ := v.([]any); return l }

func mapping(v any) map[string]any { m, _ := v.(map[string]any); return m }

func checkK8sObject(t *testing.T, f string, doc map[string]any) {
	t.Helper()
	kind, _ := doc["kind"].(string)
	meta := mapping(doc["metadata"])
	if doc["apiVersion"] == nil || kind == "" || meta["name"] == nil {
		t.Errorf("%s: a Kubernetes object needs apiVersion, kind and metadata.name: %v", f, doc)
		return
	}
	name := fmt.Sprintf("%s: %s %v", f, kind, meta["name"])
	if kind != "Namespace" && meta["namespace"] != "meridian" {
		t.Errorf("%s: namespace %v, want meridian", name, meta["namespace"])
	}
	spec := mapping(doc["spec"])
	switch kind {
	case "Deployment", "StatefulSet":
		pod := mapping(mapping(spec["template"])["spec"])
		psc := mapping(pod["securityContext"])
		if psc["runAsNonRoot"] != true {
			t.Errorf("%s: pod securityContext.runAsNonRoot is not true", name)
		}
		for _, c := range list(pod["containers"]) {
			c := mapping(c)
			sc := mapping(c["securityContext"])
			if sc["allowPrivilegeEscalation"] != false || sc["readOnlyRootFilesystem"] != true {
				t.Errorf("%s: container %v must set allowPrivilegeEscalation: false and readOnlyRootFilesystem: true", name, c["name"])
			}
			if mapping(mapping(c["resources"])["requests"]) == nil {
				t.Errorf("%s: container %v has no resource requests", name, c["name"])
			}
			if c["readinessProbe"] == nil {
				t.Errorf("%s: container %v has no readiness probe", name, c["name"])
			}
		}
	case "Service":
		if spec["selector"] == nil && spec["clusterIP"] != "None" {
			t.Errorf("%s: no selector", name)
		}
	}
}

var composeConfigArg = regexp.MustCompile(`^/etc/(meridian|nats)/(.+)$`)

func checkCompose(t *testing.T, f string, doc map[string]any) {
	t.Helper()
	dir := filepath.Dir(f)
	services := mapping(doc["services"])
	if len(services) == 0 {
		t.Errorf("%s: no services", f)
	}
	for name, s := range services {
		s := mapping(s)
		if s["image"] == nil && s["build"] == nil {
			t.Errorf("%s: service %s has neither image nor build", f, name)
		}
		if b := mapping(s["build"]); b != nil {
			df := filepath.Join(dir, fmt.Sprint(b["context"]), fmt.Sprint(b["dockerfile"]))
			if _, err := os.Stat(df); err != nil {
				t.Errorf("%s: service %s builds from %s: %v", f, name, df, err)
			}
		}
		mounts := map[string]string{} // container dir -> host dir
		for _, v := range list(s["volumes"]) {
			parts := strings.Split(fmt.Sprint(v), ":")
			if !strings.HasPrefix(parts[0], ".") {
				if _, ok := mapping(doc["volumes"])[parts[0]]; !ok {
					t.Errorf("%s: service %s mounts volume %q, which is not declared", f, name, parts[0])
				}
				continue
			}
			src := filepath.Join(dir, parts[0])
			if _, err := os.Stat(src); err != nil {
				t.Errorf("%s: service %s mounts %s: %v", f, name, parts[0], err)
			}
			mounts[parts[1]] = src
		}
		// Every config named on the command line is mounted from the repository.
		for _, a := range list(s["command"]) {
			m := composeConfigArg.FindStringSubmatch(fmt.Sprint(a))
			if m == nil {
				continue
			}
			found := false
			for ctr, host := range mounts {
				if rest, ok := strings.CutPrefix(fmt.Sprint(a), ctr+"/"); ok {
					_, err := os.Stat(filepath.Join(host, rest))
					found = err == nil
				} else if ctr == fmt.Sprint(a) {
					_, err := os.Stat(host)
					found = err == nil
				}
			}
			if !found {
				t.Errorf("%s: service %s runs with %v, which no volume provides", f, name, a)
			}
		}
	}
}

// configMapFile is one data key of a ConfigMap in deploy/k8s.
type configMapFile struct {
	file, configMap, key, data string
}

func (c configMapFile) name() string { return c.file + ": ConfigMap " + c.configMap + ": " + c.key }

func configMapFiles(t *testing.T) []configMapFile {
	t.Helper()
	var out []configMapFile
	for _, f := range exampleFiles(t) {
		if !isYAML(f) || !strings.HasPrefix(f, "k8s"+string(filepath.Separator)) {
			continue
		}
		for _, doc := range yamlDocs(t, f) {
			if doc["kind"] != "ConfigMap" {
				continue
			}
			for k, v := range mapping(doc["data"]) {
				out = append(out, configMapFile{file: f, configMap: fmt.Sprint(mapping(doc["metadata"])["name"]), key: k, data: fmt.Sprint(v)})
			}
		}
	}
	return out
}

// natsEnv sets the variables the nats-server configs read from the
// environment: per-host values from nats.env.example as shipped, and each
// password made as its comment says.
func natsEnv(t *testing.T) map[string]string {
	t.Helper()
	env := map[string]string{"NATS_SERVER_NAME": "nats-0", "POD_NAME": "nats-0"}
	f, err := os.Open(filepath.Join("multi-region", "nats", "nats.env.example"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		commented := strings.HasPrefix(line, "#")
		k, v, ok := strings.Cut(strings.TrimPrefix(line, "#"), "=")
		if !ok || strings.ContainsAny(k, " \t") {
			continue
		}
		if commented { // a password line: `echo "pop-$(openssl rand -hex 24)"`
			var b [24]byte
			_, _ = rand.Read(b[:])
			prefix, _, _ := strings.Cut(v, "-")
			v = prefix + "-" + hex.EncodeToString(b[:])
		}
		env[k] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
	return env
}

// tlsFiles writes a throwaway CA and a server certificate (for every name
// in the examples, and 127.0.0.1) as dir/tls/{ca,server,server-key}.pem.
func tlsFiles(t *testing.T, dir string) *x509.CertPool {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "meridian test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "nats"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:    []string{"*.use1.example.net", "*.euw2.example.net", "*.apne1.example.net", "localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	if err := os.MkdirAll(filepath.Join(dir, "tls"), 0o700); err != nil {
		t.Fatal(err)
	}
	write := func(name, typ string, b []byte) {
		if err := os.WriteFile(filepath.Join(dir, "tls", name), pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("ca.pem", "CERTIFICATE", caDER)
	write("server.pem", "CERTIFICATE", der)
	write("server-key.pem", "EC PRIVATE KEY", keyDER)
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return pool
}

var includeLine = regexp.MustCompile(`(?m)^\s*include\s+"?([^"\s]+)"?`)

// natsConfigs copies every nats-server config (and its fragments) into a
// temporary tree with /etc/nats/ mapped to it, and returns the top-level ones
// by their path under deploy/.
func natsConfigs(t *testing.T) (map[string]string, *x509.CertPool) {
	t.Helper()
	tmp := t.TempDir()
	pool := tlsFiles(t, tmp)
	fix := func(s string) string { return strings.ReplaceAll(s, "/etc/nats/", tmp+"/") }
	tops := map[string]string{}
	included := map[string]bool{}
	var confs []string
	for _, f := range exampleFiles(t) {
		if !strings.HasSuffix(f, ".conf") {
			continue
		}
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range includeLine.FindAllStringSubmatch(string(data), -1) {
			inc := filepath.Join(filepath.Dir(f), m[1])
			if _, err := os.Stat(inc); err != nil {
				t.Errorf("%s includes %s: %v", f, m[1], err)
			}
			included[inc] = true
		}
		dst := filepath.Join(tmp, "deploy", f)
		if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, []byte(fix(string(data))), 0o600); err != nil {
			t.Fatal(err)
		}
		confs = append(confs, f)
	}
	for _, f := range confs {
		if !included[f] {
			tops[f] = filepath.Join(tmp, "deploy", f)
		}
	}
	for i, cm := range configMapFiles(t) {
		if strings.HasSuffix(cm.key, ".conf") {
			dst := filepath.Join(tmp, fmt.Sprintf("configmap-%d-%s", i, cm.key))
			if err := os.WriteFile(dst, []byte(fix(cm.data)), 0o600); err != nil {
				t.Fatal(err)
			}
			tops[cm.name()] = dst
		}
	}
	return tops, pool
}

// TestNATSConfigsLoad loads every nats-server config with the server's own
// parser and checks the shape of the multi-region supercluster.
func TestNATSConfigsLoad(t *testing.T) {
	env := natsEnv(t)
	tops, _ := natsConfigs(t)
	if len(tops) < 6 {
		t.Errorf("found %d nats-server configs, want at least 6 (single node, 3 regions, compose, k8s)", len(tops))
	}
	regions := []string{"use1", "euw2", "apne1"}
	for name, path := range tops {
		opts, err := server.ProcessConfigFile(path)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if !opts.JetStream {
			t.Errorf("%s: JetStream is off; Meridian's state-sync log needs it", name)
		}
		region := strings.TrimSuffix(filepath.Base(name), ".conf")
		if !strings.HasPrefix(name, filepath.Join("multi-region", "nats")+string(filepath.Separator)) {
			continue
		}
		if !slices.Contains(regions, region) {
			t.Errorf("%s: unexpected region config; update this test's region list", name)
			continue
		}
		if opts.ServerName != env["NATS_SERVER_NAME"] {
			t.Errorf("%s: server_name %q, want it from NATS_SERVER_NAME", name, opts.ServerName)
		}
		if opts.Cluster.Name != region || opts.Gateway.Name != region {
			t.Errorf("%s: cluster %q and gateway %q must both be named %q", name, opts.Cluster.Name, opts.Gateway.Name, region)
		}
		if len(opts.Routes) != 3 {
			t.Errorf("%s: %d routes, want the 3 servers of the region", name, len(opts.Routes))
		}
		for _, r := range opts.Routes {
			if !strings.HasSuffix(r.Hostname(), "."+region+".example.net") {
				t.Errorf("%s: route %s is outside region %s", name, r, region)
			}
		}
		var gws []string
		for _, g := range opts.Gateway.Gateways {
			gws = append(gws, g.Name)
			if len(g.URLs) != 3 {
				t.Errorf("%s: gateway %s lists %d URLs, want 3", name, g.Name, len(g.URLs))
			}
		}
		slices.Sort(gws)
		if want := slices.Sorted(slices.Values(regions)); !slices.Equal(gws, want) {
			t.Errorf("%s: gateways %v, want every region %v", name, gws, want)
		}
		if opts.TLSConfig == nil || opts.Cluster.TLSConfig == nil || opts.Gateway.TLSConfig == nil {
			t.Errorf("%s: clients, routes and gateways must all use TLS", name)
		} else if opts.Cluster.TLSConfig.ClientAuth != tls.RequireAndVerifyClientCert || opts.Gateway.TLSConfig.ClientAuth != tls.RequireAndVerifyClientCert {
			t.Errorf("%s: routes and gateways must verify the peer's certificate (verify: true)", name)
		}
		users := map[string]*server.User{}
		for _, u := range opts.Users {
			users[u.Username] = u
		}
		for _, u := range []string{"pop", "dns", "ops"} {
			if users[u] == nil || users[u].Account == nil || users[u].Account.Name != "MERIDIAN" {
				t.Errorf("%s: user %s must exist in account MERIDIAN", name, u)
			}
		}
		if u := users["pop"]; u != nil && u.Password != env["MERIDIAN_POP_PASSWORD"] {
			t.Errorf("%s: the pop password does not come from MERIDIAN_POP_PASSWORD", name)
		}
	}
}

// TestNATSConfigRefusesMissingPassword shows the failure mode the README
// promises: a server whose environment lacks a password does not start.
func TestNATSConfigRefusesMissingPassword(t *testing.T) {
	natsEnv(t)
	tops, _ := natsConfigs(t)
	os.Unsetenv("MERIDIAN_POP_PASSWORD") // t.Setenv restores it
	_, err := server.ProcessConfigFile(tops[filepath.Join("multi-region", "nats", "use1.conf")])
	if err == nil || !strings.Contains(err.Error(), "MERIDIAN_POP_PASSWORD") {
		t.Fatalf("loading use1.conf without MERIDIAN_POP_PASSWORD: err = %v, want it named", err)
	}
}

// loadAll loads the Meridian configs matching glob.
func loadAll(t *testing.T, glob string) map[string]*config.Config {
	t.Helper()
	paths, _ := filepath.Glob(glob)
	if len(paths) == 0 {
		t.Fatalf("no files match %s", glob)
	}
	out := map[string]*config.Config{}
	for _, p := range paths {
		c, err := config.Load(p)
		if err != nil {
			t.Fatal(err)
		}
		out[p] = c
	}
	return out
}

// TestMultiRegionConsistency checks what no single file can: the PoP files
// and the DNS node files of the multi-region example describe one deployment.
func TestMultiRegionConsistency(t *testing.T) {
	pops := loadAll(t, filepath.Join("multi-region", "pops", "*.meridian.yaml"))
	dnss := loadAll(t, filepath.Join("multi-region", "dns", "*.meridian.yaml"))
	if len(pops) < 3 || len(dnss) < 2 {
		t.Fatalf("%d PoP files and %d DNS files; the example has at least 3 and 2", len(pops), len(dnss))
	}
	natsRegion := regexp.MustCompile(`^nats-[a-c]\.([a-z0-9]+)\.example\.net$`)
	regionOf := func(t *testing.T, f string, c *config.Config, user string) string {
		region := ""
		for _, u := range c.NATS.URLs {
			pu, err := url.Parse(u)
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			m := natsRegion.FindStringSubmatch(pu.Hostname())
			if m == nil || (region != "" && m[1] != region) {
				t.Errorf("%s: nats.urls must all be servers of one region, got %s", f, pu.Hostname())
				continue
			}
			region = m[1]
			if pu.User.Username() != user {
				t.Errorf("%s: connects as %q, want the %s user", f, pu.User.Username(), user)
			}
		}
		if len(c.NATS.URLs) != 3 {
			t.Errorf("%s: %d nats.urls, want the 3 servers of the region", f, len(c.NATS.URLs))
		}
		if c.NATS.StreamReplicas != 3 {
			t.Errorf("%s: stream_replicas %d, want 3", f, c.NATS.StreamReplicas)
		}
		return region
	}
	var first *config.Config
	byID := map[string]config.PoP{}
	for f, c := range pops {
		regionOf(t, f, c, "pop")
		if len(c.PoPs) != 1 {
			t.Errorf("%s: %d PoPs, want one per file", f, len(c.PoPs))
			continue
		}
		p := c.PoPs[0]
		if filepath.Base(f) != p.ID+".meridian.yaml" {
			t.Errorf("%s: holds PoP %s; name the file after it", f, p.ID)
		}
		byID[p.ID] = p
		if first == nil {
			first = c
		} else if !reflect.DeepEqual(c.Sites, first.Sites) || c.Admin != first.Admin || c.TLS != first.TLS {
			t.Errorf("%s: sites, tls or admin differ from the other PoP files; every PoP serves the same sites", f)
		}
	}
	var firstDNS *config.Config
	dnsRegions := map[string]bool{}
	for f, c := range dnss {
		dnsRegions[regionOf(t, f, c, "dns")] = true
		if c.DNS == nil {
			t.Fatalf("%s: no dns section", f)
		}
		if len(c.PoPs) != len(byID) {
			t.Errorf("%s: lists %d PoPs, the pops/ folder has %d", f, len(c.PoPs), len(byID))
		}
		for _, p := range c.PoPs {
			own, ok := byID[p.ID]
			switch {
			case !ok:
				t.Errorf("%s: PoP %s has no file in pops/", f, p.ID)
			case p.Region != own.Region || p.Admin != own.Admin || !slices.Equal(p.Addresses, own.Addresses) || p.Capacity != own.Capacity:
				t.Errorf("%s: PoP %s differs from pops/%s.meridian.yaml (region, admin, addresses, capacity)", f, p.ID, p.ID)
			}
		}
		if firstDNS == nil {
			firstDNS = c
			continue
		}
		a, b := *c.DNS, *firstDNS.DNS
		a.Listen, a.Metrics, b.Listen, b.Metrics = "", "", "", ""
		if !reflect.DeepEqual(a, b) || !reflect.DeepEqual(c.PoPs, firstDNS.PoPs) {
			t.Errorf("%s: zones, geo, health or PoPs differ from the other DNS node; both must answer alike", f)
		}
	}
	if len(dnsRegions) < 2 {
		t.Errorf("the DNS nodes all use one region's NATS; spread them so one region's outage leaves one running")
	}
	// Each DNS node's glue is the address it listens on.
	for f, c := range dnss {
		host, _, _ := net.SplitHostPort(c.DNS.Listen)
		found := false
		for _, ns := range c.DNS.Zones[0].NS {
			found = found || slices.Contains(ns.Addresses, host)
		}
		if !found {
			t.Errorf("%s: listens on %s, which no NS record of the zone names", f, host)
		}
	}
}

var unitConfig = regexp.MustCompile(`--config\s+/etc/(?:meridian|nats)/(\S+)`)

// TestSystemdUnits checks that each unit runs a config the example ships.
func TestSystemdUnits(t *testing.T) {
	n := 0
	for _, f := range exampleFiles(t) {
		if !strings.HasSuffix(f, ".service") {
			continue
		}
		n++
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, sec := range []string{"[Unit]", "[Service]", "[Install]"} {
			if !bytes.Contains(data, []byte("\n"+sec+"\n")) {
				t.Errorf("%s: no %s section", f, sec)
			}
		}
		m := unitConfig.FindSubmatch(data)
		if m == nil {
			t.Errorf("%s: ExecStart names no --config /etc/...", f)
			continue
		}
		// The example's folder (deploy/<example>) must hold such a file; a
		// template unit (%i) matches any file of the same suffix.
		root := strings.Split(f, string(filepath.Separator))[0]
		pattern := "^" + strings.ReplaceAll(regexp.QuoteMeta(string(m[1])), "%i", "[a-z0-9-]+") + "$"
		re := regexp.MustCompile(pattern)
		found := false
		for _, g := range exampleFiles(t) {
			found = found || (strings.HasPrefix(g, root+string(filepath.Separator)) && re.MatchString(filepath.Base(g)))
		}
		if !found {
			t.Errorf("%s: runs /etc/.../%s, but %s/ ships no such file", f, m[1], root)
		}
	}
	if n < 3 {
		t.Errorf("found %d systemd units, want at least 3", n)
	}
}

// violations records the permission violations a NATS server logs.
type violations struct {
	mu    sync.Mutex
	lines []string
}

func (v *violations) record(format string, args ...any) {
	line := fmt.Sprintf(format, args...)
	if strings.Contains(line, "Violation") {
		v.mu.Lock()
		v.lines = append(v.lines, line)
		v.mu.Unlock()
	}
}

func (v *violations) Noticef(format string, args ...any) { v.record(format, args...) }
func (v *violations) Warnf(format string, args ...any)   { v.record(format, args...) }
func (v *violations) Fatalf(format string, args ...any)  { v.record(format, args...) }
func (v *violations) Errorf(format string, args ...any)  { v.record(format, args...) }
func (v *violations) Debugf(format string, args ...any)  {}
func (v *violations) Tracef(format string, args ...any)  {}

func (v *violations) snapshot() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return slices.Clone(v.lines)
}

func (v *violations) waitFor(t *testing.T, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		for _, l := range v.snapshot() {
			if strings.Contains(l, what) {
				return
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Errorf("the server logged no violation for %s; got %q", what, v.snapshot())
}

// TestMultiRegionPermissions starts a real NATS server from
// multi-region/nats/use1.conf (on loopback, without its routes and gateways)
// and runs what Meridian runs with the pop and dns users: state sync with its
// JetStream log, beacons, and the plugin and certificate buckets. Nothing may
// be refused; and what the users must not do is refused.
func TestMultiRegionPermissions(t *testing.T) {
	env := natsEnv(t)
	tops, pool := natsConfigs(t)
	opts, err := server.ProcessConfigFile(tops[filepath.Join("multi-region", "nats", "use1.conf")])
	if err != nil {
		t.Fatal(err)
	}
	opts.Host, opts.Port, opts.HTTPPort = "127.0.0.1", -1, 0
	opts.Cluster, opts.Routes, opts.Gateway = server.ClusterOpts{}, nil, server.GatewayOpts{}
	opts.StoreDir = t.TempDir()
	opts.NoSigs = true
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	seen := &violations{}
	srv.SetLogger(seen, false, false)
	go srv.Start()
	t.Cleanup(srv.Shutdown)
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS server from use1.conf did not start")
	}
	connect := func(user string) *nats.Conn {
		t.Helper()
		nc, err := nats.Connect(srv.ClientURL(),
			nats.UserInfo(user, env["MERIDIAN_"+strings.ToUpper(user)+"_PASSWORD"]),
			nats.Secure(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}),
			nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
		if err != nil {
			t.Fatalf("connect as %s: %v", user, err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	if _, err := nats.Connect(srv.ClientURL(), nats.UserInfo("pop", "REPLACE-WITH-MERIDIAN_POP_PASSWORD"),
		nats.Secure(&tls.Config{RootCAs: pool})); err == nil {
		t.Error("the placeholder password of the PoP files was accepted")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	quiet := slog.New(slog.DiscardHandler)

	// State sync: two PoPs, a purge on one reaches the other; a third PoP
	// opened afterwards replays it from the JetStream log.
	open := func(id string) *statesync.Node {
		t.Helper()
		n, err := statesync.Open(ctx, statesync.Options{
			NodeID: id, Conn: connect("pop"), DataDir: t.TempDir(),
			Stream: "MERIDIAN_SYNC", StreamReplicas: 1, Logger: quiet,
		})
		if err != nil {
			t.Fatalf("statesync.Open as pop user: %v", err)
		}
		t.Cleanup(func() { _ = n.Close() })
		return n
	}
	a, b := open("us-east-1"), open("eu-west-2")
	if _, err := a.Purge(ctx, statesync.PurgeRecord{Site: "www", Kind: statesync.PurgeURL, Value: "/index.html"}); err != nil {
		t.Fatalf("purge: %v", err)
	}
	waitUntil(t, "the purge reaches eu-west-2", func() bool { return len(b.Purges("www")) == 1 })
	c := open("ap-northeast-1")
	waitUntil(t, "ap-northeast-1 replays the purge from MERIDIAN_SYNC", func() bool { return len(c.Purges("www")) == 1 })

	// Beacons: a PoP publishes, the DNS user receives.
	got := make(chan beacon.Beacon, 16)
	dnsConn := connect("dns")
	if _, err := beacon.Subscribe(dnsConn, func(b beacon.Beacon) { got <- b }, func(error) {}); err != nil {
		t.Fatal(err)
	}
	if err := dnsConn.Flush(); err != nil {
		t.Fatal(err)
	}
	bctx, stopBeacons := context.WithCancel(ctx)
	popConn := connect("pop")
	done := make(chan struct{})
	go func() {
		defer close(done)
		beacon.Publish(bctx, popConn, 20*time.Millisecond, quiet, func() beacon.Beacon {
			return beacon.Beacon{PoP: "us-east-1", Region: "us-east-1", Healthy: true}
		})
	}()
	select {
	case bc := <-got:
		if bc.PoP != "us-east-1" {
			t.Errorf("beacon from %q, want us-east-1", bc.PoP)
		}
	case <-ctx.Done():
		t.Error("the dns user received no beacon from the pop user")
	}
	stopBeacons()
	<-done

	// The plugin buckets of plugins/rollout (same names and calls).
	js, err := jetstream.New(popConn)
	if err != nil {
		t.Fatal(err)
	}
	meta, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "MERIDIAN_PLUGIN_META", History: 5})
	if err != nil {
		t.Fatalf("plugin meta bucket: %v", err)
	}
	w, err := meta.Watch(ctx, "chain.>")
	if err != nil {
		t.Fatalf("watch plugin meta: %v", err)
	}
	if _, err := meta.Put(ctx, "chain.www", []byte(`["headers"]`)); err != nil {
		t.Fatalf("put plugin meta: %v", err)
	}
	for e := range w.Updates() {
		if e != nil && e.Key() == "chain.www" {
			break
		}
	}
	_ = w.Stop()
	obs, err := js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: "MERIDIAN_PLUGINS"})
	if err != nil {
		t.Fatalf("plugin blob store: %v", err)
	}
	blob := bytes.Repeat([]byte("wasm"), 100_000) // several chunks
	if _, err := obs.PutBytes(ctx, "www/headers/abc", blob); err != nil {
		t.Fatalf("put plugin blob: %v", err)
	}
	if back, err := obs.GetBytes(ctx, "www/headers/abc"); err != nil || !bytes.Equal(back, blob) {
		t.Fatalf("get plugin blob: %d bytes, %v", len(back), err)
	}
	// gateway/tlsedge keeps ACME accounts, certificates and locks in
	// JetStream: run its storage as the pop user.
	certs, err := jsstorage.New(ctx, popConn, jsstorage.Options{Owner: "us-east-1", Logger: quiet})
	if err != nil {
		t.Fatalf("certificate storage as pop user: %v", err)
	}
	defer certs.Close()
	if err := certs.Lock(ctx, "issue_www.example.com"); err != nil {
		t.Fatalf("certificate lock: %v", err)
	}
	if err := certs.Store(ctx, "certificates/acme/www.example.com/www.example.com.crt", []byte("PEM")); err != nil {
		t.Fatalf("store certificate: %v", err)
	}
	if keys, err := certs.List(ctx, "certificates", true); err != nil || len(keys) != 1 {
		t.Fatalf("list certificates: %v, %v", keys, err)
	}
	if pem, err := certs.Load(ctx, "certificates/acme/www.example.com/www.example.com.crt"); err != nil || string(pem) != "PEM" {
		t.Fatalf("load certificate: %q, %v", pem, err)
	}
	if err := certs.Unlock(ctx, "issue_www.example.com"); err != nil {
		t.Fatalf("certificate unlock: %v", err)
	}
	// Plugin log queries (plugins/rollout/logs.go): the PoP asked publishes
	// a query, every other PoP answers on its reply inbox.
	answerer := connect("pop")
	if _, err := answerer.Subscribe(rollout.LogsSubjectPrefix+"*", func(m *nats.Msg) { _ = m.Respond([]byte(`{"v":1,"pop":"eu-west-2","lines":[]}`)) }); err != nil {
		t.Fatal(err)
	}
	if err := answerer.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := popConn.Request(rollout.LogsSubject("www"), []byte(`{"v":1,"site":"www","limit":100,"from":"us-east-1"}`), 5*time.Second); err != nil {
		t.Errorf("plugin log query from one pop user answered by another: %v", err)
	}
	if v := seen.snapshot(); len(v) > 0 {
		t.Fatalf("Meridian's own traffic was refused; accounts.conf lacks a permission:\n%s", strings.Join(v, "\n"))
	}

	// What the users must not do.
	_ = dnsConn.Publish(beacon.Subject("us-east-1"), []byte(`{}`))
	seen.waitFor(t, `"meridian.beacon.us-east-1"`)
	_ = popConn.Publish("orders.created", []byte("x"))
	seen.waitFor(t, `"orders.created"`)
	short, cancelShort := context.WithTimeout(ctx, 200*time.Millisecond)
	_ = js.DeleteStream(short, "MERIDIAN_SYNC")
	cancelShort()
	seen.waitFor(t, `"$JS.API.STREAM.DELETE.MERIDIAN_SYNC"`)
	ops, err := jetstream.New(connect("ops"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ops.Stream(ctx, "MERIDIAN_SYNC"); err != nil {
		t.Errorf("MERIDIAN_SYNC after the pop user tried to delete it: %v", err)
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	// A bound for a loaded machine, not a performance claim.
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestSuperclusterFromConfigs starts two regions of the multi-region example,
// three servers each, from use1.conf and euw2.conf as shipped except for
// addresses (loopback) and store directories: routes and gateways with mutual
// TLS, JetStream across the supercluster. A PoP in each region runs state
// sync; a purge crosses the gateway both ways, a beacon from us-east-1
// reaches a DNS node connected in euw2, and MERIDIAN_SYNC lives in the
// cluster whose server received its creation, as the README says.
func TestSuperclusterFromConfigs(t *testing.T) {
	natsEnv(t)
	tops, pool := natsConfigs(t)
	regions := []string{"use1", "euw2"}
	routePorts := map[string][]int{}
	gwPorts := map[string]int{}
	free := testutil.FreePorts(t, 4*len(regions))
	for i, r := range regions {
		routePorts[r] = free[4*i : 4*i+3]
		gwPorts[r] = free[4*i+3] // the first server of each region is its gateway seed
	}
	servers := map[string][]*server.Server{}
	seen := &violations{}
	for _, r := range regions {
		for i, letter := range []string{"a", "b", "c"} {
			t.Setenv("NATS_SERVER_NAME", r+"-"+letter)
			opts, err := server.ProcessConfigFile(tops[filepath.Join("multi-region", "nats", r+".conf")])
			if err != nil {
				t.Fatal(err)
			}
			opts.Host, opts.Port, opts.HTTPPort, opts.NoSigs = "127.0.0.1", -1, 0, true
			opts.StoreDir = t.TempDir()
			opts.Cluster.Host, opts.Cluster.Port, opts.Cluster.Advertise = "127.0.0.1", routePorts[r][i], ""
			opts.Routes = nil
			for _, p := range routePorts[r] {
				opts.Routes = append(opts.Routes, &url.URL{Scheme: "nats", Host: fmt.Sprintf("127.0.0.1:%d", p)})
			}
			opts.Gateway.Host, opts.Gateway.Port, opts.Gateway.Advertise = "127.0.0.1", -1, ""
			if i == 0 {
				opts.Gateway.Port = gwPorts[r]
			}
			var gws []*server.RemoteGatewayOpts
			for _, g := range opts.Gateway.Gateways {
				if slices.Contains(regions, g.Name) { // apne1 is not started here
					g.URLs = []*url.URL{{Scheme: "nats", Host: fmt.Sprintf("127.0.0.1:%d", gwPorts[g.Name])}}
					gws = append(gws, g)
				}
			}
			opts.Gateway.Gateways = gws
			srv, err := server.NewServer(opts)
			if err != nil {
				t.Fatalf("%s-%s: %v", r, letter, err)
			}
			srv.SetLogger(seen, false, false)
			go srv.Start()
			t.Cleanup(srv.Shutdown)
			servers[r] = append(servers[r], srv)
		}
	}
	for _, r := range regions {
		for _, s := range servers[r] {
			if !s.ReadyForConnections(10 * time.Second) {
				t.Fatalf("server %s did not start", s.Name())
			}
		}
	}
	waitUntil(t, "both clusters see each other through gateways", func() bool {
		for _, r := range regions {
			for _, s := range servers[r] {
				if s.NumOutboundGateways() < len(regions)-1 {
					return false
				}
			}
		}
		return true
	})
	env := map[string]string{}
	for _, k := range []string{"MERIDIAN_POP_PASSWORD", "MERIDIAN_DNS_PASSWORD", "MERIDIAN_OPS_PASSWORD"} {
		env[k] = os.Getenv(k)
	}
	connect := func(user, region string) *nats.Conn {
		t.Helper()
		nc, err := nats.Connect(servers[region][1].ClientURL(),
			nats.UserInfo(user, env["MERIDIAN_"+strings.ToUpper(user)+"_PASSWORD"]),
			nats.Secure(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}))
		if err != nil {
			t.Fatalf("connect as %s in %s: %v", user, region, err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ops, err := jetstream.New(connect("ops", "use1"))
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "JetStream elects its meta leader across the supercluster", func() bool {
		actx, acancel := context.WithTimeout(ctx, time.Second)
		defer acancel()
		_, err := ops.AccountInfo(actx)
		return err == nil
	})
	quiet := slog.New(slog.DiscardHandler)
	open := func(id, region string) *statesync.Node {
		t.Helper()
		n, err := statesync.Open(ctx, statesync.Options{
			NodeID: id, Conn: connect("pop", region), DataDir: t.TempDir(),
			Stream: "MERIDIAN_SYNC", StreamReplicas: 3, Logger: quiet,
		})
		if err != nil {
			t.Fatalf("statesync.Open %s in %s: %v", id, region, err)
		}
		t.Cleanup(func() { _ = n.Close() })
		return n
	}
	east := open("us-east-1", "use1")
	waitUntil(t, "us-east-1 creates MERIDIAN_SYNC", func() bool {
		_, err := ops.Stream(ctx, "MERIDIAN_SYNC")
		return err == nil
	})
	west := open("eu-west-2", "euw2")
	if _, err := west.Purge(ctx, statesync.PurgeRecord{Site: "www", Kind: statesync.PurgePrefix, Value: "/img/"}); err != nil {
		t.Fatalf("purge in euw2: %v", err)
	}
	if _, err := east.Purge(ctx, statesync.PurgeRecord{Site: "www", Kind: statesync.PurgeURL, Value: "/"}); err != nil {
		t.Fatalf("purge in use1: %v", err)
	}
	waitUntil(t, "both purges reach both regions", func() bool {
		return len(east.Purges("www")) == 2 && len(west.Purges("www")) == 2
	})
	s, err := ops.Stream(ctx, "MERIDIAN_SYNC")
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Cluster == nil || info.Cluster.Name != "use1" || len(info.Cluster.Replicas) != 2 {
		t.Errorf("MERIDIAN_SYNC placement %+v, want cluster use1 with 3 copies", info.Cluster)
	}
	if info.State.Msgs < 2 {
		t.Errorf("MERIDIAN_SYNC holds %d messages, want both purges", info.State.Msgs)
	}

	got := make(chan beacon.Beacon, 16)
	if _, err := beacon.Subscribe(connect("dns", "euw2"), func(b beacon.Beacon) { got <- b }, func(error) {}); err != nil {
		t.Fatal(err)
	}
	bctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		beacon.Publish(bctx, connect("pop", "use1"), 20*time.Millisecond, quiet, func() beacon.Beacon {
			return beacon.Beacon{PoP: "us-east-1", Region: "us-east-1", Healthy: true}
		})
	}()
	select {
	case b := <-got:
		if b.PoP != "us-east-1" {
			t.Errorf("beacon from %q, want us-east-1", b.PoP)
		}
	case <-ctx.Done():
		t.Error("no beacon from use1 reached the DNS user in euw2")
	}
	stop()
	<-done
	if v := seen.snapshot(); len(v) > 0 {
		t.Errorf("the supercluster refused Meridian's traffic:\n%s", strings.Join(v, "\n"))
	}
}
