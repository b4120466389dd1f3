package testutil

import (
	"fmt"
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
	s := &S3Server{
		AccessKey: "meridian-test", SecretKey: "meridian-test-secret",
		Dir: t.TempDir(), bin: bin, t: t,
	}
	t.Cleanup(s.Stop)
	// The port is free when chosen but versitygw binds it later, and any
	// other process may take it in between (CI runs many test binaries at
	// once): a server that exits at once gets a fresh port.
	var err error
	for range 3 {
		s.addr = FreeAddrs(t, "127.0.0.1", 1)[0]
		s.Endpoint = "http://" + s.addr
		var exited bool
		if exited, err = s.start(); err == nil || !exited {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Start (re)starts the server process on the same address and directory
// and waits until it answers.
func (s *S3Server) Start() {
	s.t.Helper()
	if _, err := s.start(); err != nil {
		s.t.Fatal(err)
	}
}

// start runs the server unless it runs, and waits until it answers.
// exited tells a server that stopped by itself (as when its port is taken)
// from one that runs but does not answer.
func (s *S3Server) start() (exited bool, err error) {
	if s.cmd != nil {
		return false, nil
	}
	cmd := exec.Command(s.bin, "--port", s.addr, "--access", s.AccessKey, "--secret", s.SecretKey,
		"--health", "/health", "--quiet", "posix", s.Dir)
	out := &SyncBuffer{}
	cmd.Stdout = out
	cmd.Stderr = out
	if err := cmd.Start(); err != nil {
		return false, fmt.Errorf("start versitygw %s: %v", s.bin, err)
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
				return false, nil
			}
		}
		select {
		case <-s.exit:
			s.cmd = nil
			return true, fmt.Errorf("versitygw exited at start; command: %v\noutput:\n%s", cmd.Args, out.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.Stop()
			return false, fmt.Errorf("versitygw did not answer on %s within 15s: %v\noutput:\n%s", s.Endpoint, err, out.String())
		}
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
