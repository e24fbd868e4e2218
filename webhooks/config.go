package webhooks

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/cimdeploy/cimdeploy/gitops/checkout"
)

// Defaults of Config.
const (
	DefaultDeployBranch = "main"
	// DefaultMaxBody is GitHub's own cap on a delivery: payloads above 25 MiB are not sent.
	// https://docs.github.com/en/webhooks/webhook-events-and-payloads#payload-cap
	DefaultMaxBody        int64 = 25 << 20
	DefaultEnqueueTimeout       = 5 * time.Second
)

// Config says which deliveries a Receiver accepts. Every field but Secret and Now is also a
// CIMDEPLOY_* variable (github.com/sethvargo/go-envconfig); the secret is read by the caller, from
// a file, and never logged (Config's LogValue hides it).
type Config struct {
	// Repository is the infrastructure repository, owner/name. Deliveries for any other repository
	// are ignored; the comparison ignores case, as GitHub does.
	Repository string `env:"CIMDEPLOY_GITHUB_REPOSITORY"`
	// DeployBranch is the branch whose pushes deploy (default main).
	DeployBranch string `env:"CIMDEPLOY_DEPLOY_BRANCH, default=main"`
	// Secret is the webhook's shared secret; New refuses an empty one.
	Secret []byte
	// MaxBody is the largest body accepted, in bytes (default 25 MiB); larger ones get 413.
	MaxBody int64 `env:"CIMDEPLOY_WEBHOOK_MAX_BODY, default=26214400"`
	// EnqueueTimeout bounds Queue.Enqueue (default 5s); GitHub itself gives up after 10s.
	EnqueueTimeout time.Duration `env:"CIMDEPLOY_WEBHOOK_ENQUEUE_TIMEOUT, default=5s"`
	// Now is the clock for queue.Job.Received (nil: time.Now).
	Now func() time.Time
}

// withDefaults returns c with its zero fields set to the defaults.
func (c Config) withDefaults() Config {
	if c.DeployBranch == "" {
		c.DeployBranch = DefaultDeployBranch
	}
	if c.MaxBody == 0 {
		c.MaxBody = DefaultMaxBody
	}
	if c.EnqueueTimeout == 0 {
		c.EnqueueTimeout = DefaultEnqueueTimeout
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Validate reports every problem of c (after defaults) at once.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if reason := repositoryProblem(c.Repository); reason != "" {
		bad("CIMDEPLOY_GITHUB_REPOSITORY %q: %s", c.Repository, reason)
	}
	if err := checkout.ValidateRev("refs/heads/" + c.DeployBranch); err != nil {
		bad("CIMDEPLOY_DEPLOY_BRANCH: %w", err)
	}
	if len(c.Secret) == 0 {
		bad("webhook secret: empty; GitHub signs every delivery with it and cimdeploy accepts no unsigned one")
	}
	if c.MaxBody <= 0 {
		bad("CIMDEPLOY_WEBHOOK_MAX_BODY %d: want a positive number of bytes", c.MaxBody)
	}
	if c.EnqueueTimeout <= 0 {
		bad("CIMDEPLOY_WEBHOOK_ENQUEUE_TIMEOUT %s: want a positive duration", c.EnqueueTimeout)
	}
	return errors.Join(errs...)
}

// LogValue shows c without its secret.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("repository", c.Repository),
		slog.String("deploy_branch", c.DeployBranch),
		slog.Int64("max_body", c.MaxBody),
		slog.Duration("enqueue_timeout", c.EnqueueTimeout),
		slog.Bool("secret_set", len(c.Secret) > 0),
	)
}

// repositoryProblem says what is wrong with an owner/name, or "" when nothing is. GitHub owners are
// letters, digits and '-'; repository names also allow '.' and '_'.
func repositoryProblem(s string) string {
	owner, name, ok := strings.Cut(s, "/")
	switch {
	case s == "":
		return "empty; want owner/name"
	case !ok || owner == "" || name == "" || strings.Contains(name, "/"):
		return "want owner/name"
	case len(s) > 140:
		return "longer than 140 bytes"
	case name == "." || name == "..":
		return "not a repository name"
	}
	for _, c := range []byte(s) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-_./", c) >= 0) {
			return fmt.Sprintf("%q is not allowed in a repository name", c)
		}
	}
	return ""
}
