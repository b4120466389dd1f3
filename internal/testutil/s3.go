package testutil

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// S3Server is a real S3-compatible server (versitygw with its POSIX
// backend) running as a separate process on loopback for a test.
type S3Server struct {
	// Endpoint is the base URL, e.g. "http://127.0.0.1:40123".
	Endpoint string
	// AccessKey and SecretKey are the root credentials.
	AccessKey, SecretKey string
	// Dir is the server's storage directory (buckets are subdirectories).
	Dir string

	bin  string
	addr string
	cmd  *exec.Cmd
	exit chan struct{}
	t    testing.TB
}

// VersityGWPath returns where the versitygw binary is looked for: the
// MERIDIAN_VERSITYGW environment variable, else
// $HOME/.cache/meridian/bin/versitygw (where scripts/s3-server.sh installs
// it), else versitygw on PATH.
func VersityGWPath() string {
	if p := os.Getenv("MERIDIAN_VERSITYGW"); p != "" {
		return p
	}
	if home, err := os.UserHomeDir(); err == nil {
		p := filepath.Join(home, ".cache", "meridian", "bin", "versitygw")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p
	}
	return ""
}

// StartS3 starts versitygw on a free loopback port with a temporary
// directory and stops it at the end of the test. The test fails (it does not
// skip) when the binary is missing: run scripts/s3-server.sh once to build
// it into $HOME/.cache/meridian/bin.
func StartS3(t testing.TB) *S3Server {
	t.Helper()
	bin := VersityGWPath()
	if bin == "" {
		t.Fatalf("versitygw (the S3 server the L3 tests run against) is not installed: run scripts/s3-server.sh --install-only once " +
			"(it builds github.com/versity/versitygw into $HOME/.cache/meridian/bin), or set MERIDIAN_VERSITYGW to its path")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	s := &S3Server{
		Endpoint: "http://" + addr, AccessKey: "meridian-test", SecretKey: "meridian-test-secret",
		Dir: t.TempDir(), bin: bin, addr: addr, t: t,
	}
	s.Start()
	t.Cleanup(s.Stop)
	return s
}

// Start (re)starts the server process on the same address and directory
// and waits until it answers.
func (s *S3Server) Start() {
	s.t.Helper()
	if s.cmd != nil {
		return
	}
	cmd := exec.Command(s.bin, "--port", s.addr, "--access", s.AccessKey, "--secret", s.SecretKey,
		"--health", "/health", "--quiet", "posix", s.Dir)
	out := &SyncBuffer{}
	cmd.Stdout = out
	cmd.Stderr = out
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("start versitygw %s: %v", s.bin, err)
	}
	s.cmd = cmd
	s.exit = make(chan struct{})
	go func() { _ = cmd.Wait(); close(s.exit) }()
	deadline := time.Now().Add(15 * time.Second)
	client := &http.Client{Timeout: time.Second}
	for {
		resp, err := client.Get(s.Endpoint + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-s.exit:
			s.cmd = nil
			s.t.Fatalf("versitygw exited at start; command: %v\noutput:\n%s", cmd.Args, out.String())
		default:
		}
		if time.Now().After(deadline) {
			s.Stop()
			s.t.Fatalf("versitygw did not answer on %s within 15s: %v\noutput:\n%s", s.Endpoint, err, out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop kills the server process (SIGKILL, as a crash would) and waits for
// it to exit. The data directory is kept for Start.
func (s *S3Server) Stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.exit
	s.cmd = nil
}

// String describes the server for test logs.
func (s *S3Server) String() string { return fmt.Sprintf("versitygw at %s (dir %s)", s.Endpoint, s.Dir) }
