package tlsedge_test

import (
	"context"
	"log"
	"net/http"
	"time"

	"github.com/meridian-edge/meridian/gateway/tlsedge"
	"github.com/meridian-edge/meridian/gateway/tlsedge/jsstorage"
	"github.com/nats-io/nats.go"
)

// Example shows how a PoP wires TLS: certificates shared through JetStream,
// the HTTP-01 handler and redirects on the plain-HTTP listener, HSTS and
// HTTPS + HTTP/3 for the same handler.
func Example() {
	ctx := context.Background()
	nc, err := nats.Connect("nats://127.0.0.1:4222")
	if err != nil {
		log.Fatal(err)
	}
	storage, err := jsstorage.New(ctx, nc, jsstorage.Options{Owner: "pop-fra-1", Replicas: 3})
	if err != nil {
		log.Fatal(err)
	}
	defer storage.Close()

	certs, err := tlsedge.New(tlsedge.Options{
		PoP: "pop-fra-1",
		Sites: []tlsedge.SiteCert{
			{Site: "shop", Names: []string{"shop.example.com", "www.shop.example.com"}, ACME: true},
			{Site: "blog", Names: []string{"*.blog.example.com"}, CertFile: "/etc/meridian/blog.pem", KeyFile: "/etc/meridian/blog-key.pem"},
		},
		ACME:     tlsedge.ACME{Email: "ops@example.com"},
		Storage:  storage,
		HTTPPort: 80, TLSPort: 443,
	})
	if err != nil {
		log.Fatal(err) // names the PEM file at fault
	}
	policies, err := tlsedge.NewPolicies([]tlsedge.SitePolicy{
		{Names: []string{"shop.example.com", "www.shop.example.com"}, RedirectHTTP: true, HSTS: tlsedge.HSTS{MaxAge: 365 * 24 * time.Hour}},
	}, 443)
	if err != nil {
		log.Fatal(err)
	}

	var popHandler http.Handler = http.NotFoundHandler() // gateway.PoP.Handler()
	handler := policies.Middleware(popHandler)

	// Plain HTTP (the PoP's HTTPAddr): ACME HTTP-01 first, then redirects.
	go http.ListenAndServe(":80", certs.HTTPChallenge(handler))

	srv, err := tlsedge.NewServer(tlsedge.ServerOptions{Addr: ":443", HTTP3Addr: "same", TLSConfig: certs.TLSConfig(), Handler: handler})
	if err != nil {
		log.Fatal(err)
	}
	if err := srv.Start(ctx); err != nil {
		log.Fatal(err) // names the address that is taken
	}
	if err := certs.Start(ctx); err != nil {
		log.Fatal(err)
	}
	// On SIGHUP: certs.Reload() (PEM files) or certs.SetSites(newSites).
	defer certs.Stop()
	defer srv.Shutdown(ctx)
}
