package forge

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/sethvargo/go-envconfig"
)

// Config is where and how runs are reported to GitHub. Authenticate with a token (TokenFile) or as a
// GitHub App installation (AppID, AppPrivateKeyFile, InstallationID); only an App may create check
// runs. Secrets are read from files, never from the environment.
type Config struct {
	// APIURL is the REST API's base URL; GitHub Enterprise Server uses https://HOST/api/v3/.
	APIURL string `env:"CIMDEPLOY_GITHUB_API_URL, default=https://api.github.com/"`
	// Repository is owner/name.
	Repository string `env:"CIMDEPLOY_GITHUB_REPOSITORY"`
	// TokenFile holds a token allowed to write commit statuses and deployments.
	TokenFile string `env:"CIMDEPLOY_GITHUB_TOKEN_FILE"`
	// AppID, AppPrivateKeyFile (PEM, PKCS#1 or PKCS#8 RSA) and InstallationID authenticate as a
	// GitHub App installation.
	AppID             int64  `env:"CIMDEPLOY_GITHUB_APP_ID"`
	AppPrivateKeyFile string `env:"CIMDEPLOY_GITHUB_APP_PRIVATE_KEY_FILE"`
	InstallationID    int64  `env:"CIMDEPLOY_GITHUB_APP_INSTALLATION_ID"`
	// Environment is the deployments' environment.
	Environment string `env:"CIMDEPLOY_GITHUB_ENVIRONMENT, default=production"`
	// EnvironmentURL, when set, is the deployment statuses' environment_url.
	EnvironmentURL string `env:"CIMDEPLOY_GITHUB_ENVIRONMENT_URL"`
	// PublicURL is where cimdeploy serves its runs: statuses link to <PublicURL>/runs/<run-id>. Empty:
	// no link.
	PublicURL string `env:"CIMDEPLOY_PUBLIC_URL"`

	// RequestTimeout bounds one API call.
	RequestTimeout time.Duration `env:"CIMDEPLOY_GITHUB_REQUEST_TIMEOUT, default=30s"`
	// RetryMin and RetryMax bound the exponential back-off between tries of a failed call.
	RetryMin time.Duration `env:"CIMDEPLOY_GITHUB_RETRY_MIN, default=1s"`
	RetryMax time.Duration `env:"CIMDEPLOY_GITHUB_RETRY_MAX, default=1m"`
	// SecondaryWait is the wait after a secondary rate limit that names no time: GitHub says to wait
	// at least a minute (docs.github.com/en/rest/using-the-rest-api/best-practices-for-using-the-rest-api#handle-rate-limit-errors-appropriately).
	SecondaryWait time.Duration `env:"CIMDEPLOY_GITHUB_SECONDARY_WAIT, default=1m"`
	// GiveUpAfter bounds the time spent on one call, waits included; then it is dropped and logged.
	GiveUpAfter time.Duration `env:"CIMDEPLOY_GITHUB_GIVE_UP_AFTER, default=15m"`
	// QueueSize bounds the calls waiting to be sent, over all commits; past it the oldest is dropped.
	QueueSize int `env:"CIMDEPLOY_GITHUB_QUEUE_SIZE, default=1024"`
}

// LoadConfig reads Config from the environment (lookup nil: the process environment) and validates it.
func LoadConfig(ctx context.Context, lookup envconfig.Lookuper) (Config, error) {
	if lookup == nil {
		lookup = envconfig.OsLookuper()
	}
	var c Config
	if err := envconfig.ProcessWith(ctx, &envconfig.Config{Target: &c, Lookuper: lookup}); err != nil {
		return c, fmt.Errorf("github config: %w", err)
	}
	return c, c.Validate()
}

// withDefaults fills the zero fields of a Config built in code with the environment's defaults.
func (c Config) withDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if c.APIURL == "" {
		c.APIURL = "https://api.github.com/"
	}
	if !strings.HasSuffix(c.APIURL, "/") {
		c.APIURL += "/"
	}
	if c.Environment == "" {
		c.Environment = "production"
	}
	def(&c.RequestTimeout, 30*time.Second)
	def(&c.RetryMin, time.Second)
	def(&c.RetryMax, time.Minute)
	def(&c.SecondaryWait, time.Minute)
	def(&c.GiveUpAfter, 15*time.Minute)
	if c.QueueSize == 0 {
		c.QueueSize = 1024
	}
	return c
}

// Validate reports every problem of c (after defaults) at once.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if u, err := url.Parse(c.APIURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		bad("CIMDEPLOY_GITHUB_API_URL %q: want an http(s) URL", c.APIURL)
	}
	if owner, name, ok := strings.Cut(c.Repository, "/"); !ok || owner == "" || name == "" || strings.Contains(name, "/") {
		bad("CIMDEPLOY_GITHUB_REPOSITORY %q: want owner/name", c.Repository)
	}
	app := c.AppID != 0 || c.AppPrivateKeyFile != "" || c.InstallationID != 0
	switch {
	case app && c.TokenFile != "":
		bad("CIMDEPLOY_GITHUB_TOKEN_FILE and CIMDEPLOY_GITHUB_APP_*: set one way to authenticate, not both")
	case app && (c.AppID <= 0 || c.AppPrivateKeyFile == "" || c.InstallationID <= 0):
		bad("GitHub App authentication needs CIMDEPLOY_GITHUB_APP_ID, CIMDEPLOY_GITHUB_APP_PRIVATE_KEY_FILE and CIMDEPLOY_GITHUB_APP_INSTALLATION_ID")
	case !app && c.TokenFile == "":
		bad("no GitHub credentials: set CIMDEPLOY_GITHUB_TOKEN_FILE or the CIMDEPLOY_GITHUB_APP_* variables")
	}
	if c.PublicURL != "" {
		if u, err := url.Parse(c.PublicURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			bad("CIMDEPLOY_PUBLIC_URL %q: want an http(s) URL", c.PublicURL)
		}
	}
	if strings.TrimSpace(c.Environment) == "" {
		bad("CIMDEPLOY_GITHUB_ENVIRONMENT is empty")
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"CIMDEPLOY_GITHUB_REQUEST_TIMEOUT", c.RequestTimeout},
		{"CIMDEPLOY_GITHUB_RETRY_MIN", c.RetryMin},
		{"CIMDEPLOY_GITHUB_RETRY_MAX", c.RetryMax},
		{"CIMDEPLOY_GITHUB_SECONDARY_WAIT", c.SecondaryWait},
		{"CIMDEPLOY_GITHUB_GIVE_UP_AFTER", c.GiveUpAfter},
	} {
		if d.v < 0 {
			bad("%s %s: must not be negative", d.name, d.v)
		}
	}
	if c.RetryMin > c.RetryMax {
		bad("CIMDEPLOY_GITHUB_RETRY_MIN %s exceeds CIMDEPLOY_GITHUB_RETRY_MAX %s", c.RetryMin, c.RetryMax)
	}
	if c.QueueSize < 0 {
		bad("CIMDEPLOY_GITHUB_QUEUE_SIZE %d: must be positive", c.QueueSize)
	}
	return errors.Join(errs...)
}

func (c Config) ownerRepo() (string, string) {
	owner, name, _ := strings.Cut(c.Repository, "/")
	return owner, name
}
