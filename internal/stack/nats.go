package stack

import (
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/meridian-edge/meridian/internal/config"
	"github.com/nats-io/nats.go"
)

// Connect opens a NATS connection as the configuration says (the embedded
// server when there is one), for tools such as `meridian state`.
func Connect(cfg *config.Config, name string) (*nats.Conn, error) {
	if err := oneNATS(cfg.NATS); err != nil {
		return nil, err
	}
	s := &Stack{cfg: cfg, log: slog.New(slog.DiscardHandler)}
	if e := cfg.NATS.Embedded; e != nil {
		s.cfg = &config.Config{NATS: config.NATS{URLs: []string{"nats://" + e.Listen}, Credentials: cfg.NATS.Credentials}}
	}
	return s.connect(name)
}

// oneNATS refuses a configuration with both an embedded server and
// external URLs (config validation does too; this guards configurations
// built in code): the embedded server would win and cut the process off
// from the cluster without a word.
func oneNATS(n config.NATS) error {
	if n.Embedded != nil && len(n.URLs) > 0 {
		return fmt.Errorf("nats: set either nats.embedded or nats.urls, not both")
	}
	return nil
}

func (s *Stack) connect(name string) (*nats.Conn, error) {
	if err := oneNATS(s.cfg.NATS); err != nil {
		return nil, err
	}
	urls := s.cfg.NATS.URLs
	if s.nats != nil {
		urls = []string{s.nats.ClientURL()}
	}
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500 * time.Millisecond),
		nats.RetryOnFailedConnect(true),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				s.log.Warn("NATS connection lost; serving on, reconnecting", "client", name, "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { s.log.Info("NATS reconnected", "client", name, "url", c.ConnectedUrlRedacted()) }),
	}
	if s.cfg.NATS.Credentials != "" {
		opts = append(opts, nats.UserCredentials(s.cfg.NATS.Credentials))
	}
	if t := s.cfg.NATS.TLS; t.CAFile != "" {
		opts = append(opts, nats.RootCAs(t.CAFile))
	}
	if t := s.cfg.NATS.TLS; t.CertFile != "" {
		opts = append(opts, nats.ClientCert(t.CertFile, t.KeyFile))
	}
	nc, err := nats.Connect(strings.Join(urls, ","), opts...)
	if err != nil {
		redacted := make([]string, len(urls))
		for i, u := range urls {
			redacted[i] = config.RedactURL(u)
		}
		return nil, fmt.Errorf("nats: connect %s as %s: %w", strings.Join(redacted, ","), name, err)
	}
	if nc.ConnectedUrl() != "" {
		s.log.Debug("NATS connected", "client", name, "url", nc.ConnectedUrlRedacted())
	}
	s.conns = append(s.conns, nc)
	return nc, nil
}

func (s *Stack) beaconInterval() time.Duration {
	if s.cfg.DNS != nil {
		return s.cfg.DNS.Health.BeaconInterval
	}
	return config.DefaultBeaconInterval
}
