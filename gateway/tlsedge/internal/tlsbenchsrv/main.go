// Command tlsbenchsrv serves HTTPS (h1/h2) and HTTP/3 through tlsedge with a
// dev-CA ECDSA P-256 certificate, for measuring handshakes per CPU-second
// against nginx with external load generators (openssl s_time, h2load). It
// prints its CPU time (user+system) on SIGINT/SIGTERM.
//
//	go run ./gateway/tlsedge/internal/tlsbenchsrv -addr 127.0.0.1:9443 -dir /tmp/tlsbench
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	"github.com/meridian-edge/meridian/gateway/tlsedge"
	"github.com/meridian-edge/meridian/gateway/tlsedge/devca"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:9443", "HTTPS (TCP) and HTTP/3 (UDP) address")
	dir := flag.String("dir", "/tmp/tlsbench", "where the dev CA and certificate are written")
	name := flag.String("name", "bench.example.test", "the certificate's host name")
	flag.Parse()
	files, err := devca.Ensure(*dir, *name, []string{*name})
	if err != nil {
		log.Fatal(err)
	}
	m, err := tlsedge.New(tlsedge.Options{
		Sites:         []tlsedge.SiteCert{{Site: "bench", Names: []string{*name}, CertFile: files.Cert, KeyFile: files.Key}},
		UnknownSNI:    tlsedge.UnknownSNIDefault,
		DefaultSite:   "bench",
		WatchInterval: -1,
	})
	if err != nil {
		log.Fatal(err)
	}
	body := []byte("hello\n")
	srv, err := tlsedge.NewServer(tlsedge.ServerOptions{Addr: *addr, HTTP3Addr: "same", TLSConfig: m.TLSConfig(),
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(body) })})
	if err != nil {
		log.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("serving https://%s/ (ca %s, pid %d)\n", srv.Addr(), files.CACert, os.Getpid())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
	fmt.Println(cpuReport())
	srv.Shutdown(context.Background())
}
