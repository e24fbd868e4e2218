package store

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"
)

// Defaults of Config, applied by Open to zero fields.
const (
	DefaultDataDir = ".cimdeploy"
	DefaultTimeout = 10 * time.Second
	DefaultMaxAge  = 90 * 24 * time.Hour
)

// Config says where the store lives. The zero value is valid: an embedded server under .cimdeploy/
// with no TCP listener. Every field is also a CIMDEPLOY_* variable (github.com/sethvargo/go-envconfig).
type Config struct {
	// DataDir holds the embedded server's JetStream files (<DataDir>/nats) and its lock file
	// (<DataDir>/lock). Unused with URL.
	DataDir string `env:"CIMDEPLOY_DATA_DIR, default=.cimdeploy"`
	// URL of an external NATS cluster (with JetStream). Empty runs the embedded server.
	URL string `env:"CIMDEPLOY_NATS_URL"`
	// CredsFile is a NATS credentials file (JWT + nkey seed) for URL; NkeyFile, instead, holds the
	// nkey seed of a user the servers' accounts name by its public key (a cluster of nkey users, as
	// cimdeploy's own projection makes). CAFile is the CA (PEM) the servers' certificates are checked
	// against, for servers that require TLS of their clients.
	CredsFile string `env:"CIMDEPLOY_NATS_CREDS_FILE"`
	NkeyFile  string `env:"CIMDEPLOY_NATS_NKEY_FILE"`
	CAFile    string `env:"CIMDEPLOY_NATS_CA_FILE"`
	// Listen is host:port on which the embedded server accepts NATS clients, port 0 for any free
	// port. Empty opens no TCP port at all. The listener has no authentication: keep it on loopback
	// or a trusted network.
	Listen string `env:"CIMDEPLOY_NATS_LISTEN"`
	// Timeout bounds the start of the embedded server, connecting, and every store call whose
	// context has no deadline.
	Timeout time.Duration `env:"CIMDEPLOY_NATS_TIMEOUT, default=10s"`
	// MaxAge is how long run events and run summaries are kept (default 90 days, 2160h).
	MaxAge time.Duration `env:"CIMDEPLOY_RUNS_MAX_AGE, default=2160h"`
	// Replicas of the streams and buckets on an external cluster (1-5). The embedded server
	// needs 1.
	Replicas int `env:"CIMDEPLOY_NATS_REPLICAS, default=1"`

	// leaseTTL is how long a run's lease lives unrenewed (DefaultLeaseTTL; tests shorten it).
	leaseTTL time.Duration
}

// lease is leaseTTL or its default.
func (c Config) lease() time.Duration {
	if c.leaseTTL > 0 {
		return c.leaseTTL
	}
	return DefaultLeaseTTL
}

// withDefaults returns c with its zero fields set to the defaults.
func (c Config) withDefaults() Config {
	if c.DataDir == "" {
		c.DataDir = DefaultDataDir
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.MaxAge == 0 {
		c.MaxAge = DefaultMaxAge
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	return c
}

// Validate reports every problem of c (after defaults), without touching the disk or the network.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	if c.Timeout < 0 {
		errs = append(errs, fmt.Errorf("CIMDEPLOY_NATS_TIMEOUT %v: want a positive duration", c.Timeout))
	}
	if c.MaxAge < time.Minute {
		errs = append(errs, fmt.Errorf("CIMDEPLOY_RUNS_MAX_AGE %v: want at least 1m", c.MaxAge))
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		errs = append(errs, fmt.Errorf("CIMDEPLOY_NATS_REPLICAS %d: want 1 to 5", c.Replicas))
	}
	if c.CredsFile != "" && c.NkeyFile != "" {
		errs = append(errs, errors.New("CIMDEPLOY_NATS_CREDS_FILE and CIMDEPLOY_NATS_NKEY_FILE are both set: one user at a time"))
	}
	if c.URL == "" {
		for _, f := range []struct{ name, v string }{
			{"CIMDEPLOY_NATS_CREDS_FILE", c.CredsFile}, {"CIMDEPLOY_NATS_NKEY_FILE", c.NkeyFile}, {"CIMDEPLOY_NATS_CA_FILE", c.CAFile},
		} {
			if f.v != "" {
				errs = append(errs, fmt.Errorf("%s is set without CIMDEPLOY_NATS_URL", f.name))
			}
		}
		if c.Replicas != 1 {
			errs = append(errs, fmt.Errorf("CIMDEPLOY_NATS_REPLICAS %d: the embedded server keeps 1 replica", c.Replicas))
		}
		if c.Listen != "" {
			if _, _, err := splitListen(c.Listen); err != nil {
				errs = append(errs, fmt.Errorf("CIMDEPLOY_NATS_LISTEN: %w", err))
			}
		}
	} else if c.Listen != "" {
		errs = append(errs, errors.New("CIMDEPLOY_NATS_LISTEN is for the embedded server, but CIMDEPLOY_NATS_URL is set"))
	}
	return errors.Join(errs...)
}

// splitListen parses host:port; port 0 becomes -1, nats-server's "any free port" (its 0 means 4222).
func splitListen(listen string) (string, int, error) {
	host, p, err := net.SplitHostPort(listen)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("port %q: want 0 to 65535", p)
	}
	if port == 0 {
		port = -1
	}
	return host, port, nil
}
