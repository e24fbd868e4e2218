package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"

	"github.com/sethvargo/go-envconfig"
	"github.com/spf13/cobra"

	"github.com/cimdeploy/cimdeploy/daemon"
	"github.com/cimdeploy/cimdeploy/deploy"
	"github.com/cimdeploy/cimdeploy/pipeline"
	"github.com/cimdeploy/cimdeploy/pipeline/store"
)

// labRepository is the GitHub name serve --lab accepts deliveries for, unless told another.
const labRepository = "cimdeploy-lab/infra"

// serveOptions configure `cimdeploy serve`: the runs' configuration and the daemon's.
type serveOptions struct {
	cfg    deploy.Config
	daemon daemon.Config
}

func newServeCommand(g *globalOptions) *cobra.Command {
	var opts serveOptions
	var envErr error
	opts.cfg, envErr = deploy.Load(context.Background(), nil)
	if err := envconfig.Process(context.Background(), &opts.daemon); err != nil && envErr == nil {
		envErr = err
	}
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Receive GitHub webhooks: deploy pushes to the deploy branch, validate pull requests",
		Long: `Serve GitHub's webhook deliveries on --listen (POST /webhooks/github, signed with the secret in
CIMDEPLOY_GITHUB_WEBHOOK_SECRET_FILE). A push to the deploy branch deploys its head; a pull request
(opened, synchronize, reopened) is validated, and the result shows as a commit status
(cimdeploy/validate, cimdeploy/deploy) and, for deploys, a GitHub deployment. Deliveries are stored in
the queue (NATS JetStream) before they are answered; latest wins per branch; one deploy at a time per
cluster. Run pages at /runs, health at /healthz and /readyz, Prometheus metrics at /metrics.

See docs/webhooks.md. SIGTERM or Ctrl-C stops serve: a run in progress is cancelled between nodes and
its job goes back to the queue.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := bindFlags(cmd, &opts.cfg, envErr); err != nil {
				return err
			}
			if err := checkPositive(cmd, &opts.daemon); err != nil {
				return usageError(err)
			}
			// A daemon logs what it does: info unless told otherwise.
			if !cmd.Flags().Changed("log-level") && !g.verbose && os.Getenv("CIMDEPLOY_LOG_LEVEL") == "" {
				g.logger = slog.New(slog.NewTextHandler(g.stderr, &slog.HandlerOptions{Level: slog.LevelInfo, ReplaceAttr: redactAttr}))
			}
			return runServe(cmd.Context(), g, opts)
		},
	}
	f := cmd.Flags()
	d := &opts.daemon
	f.StringVar(&d.Listen, "listen", d.Listen, "host:port for webhooks, run pages, health and metrics [CIMDEPLOY_LISTEN]")
	f.StringVar(&d.Webhooks.Repository, "github-repository", d.Webhooks.Repository, "OWNER/NAME: deliveries for any other repository are ignored [CIMDEPLOY_GITHUB_REPOSITORY]")
	f.StringVar(&d.Webhooks.DeployBranch, "deploy-branch", d.Webhooks.DeployBranch, "the branch whose pushes deploy [CIMDEPLOY_DEPLOY_BRANCH]")
	f.StringVar(&d.WebhookSecretFile, "webhook-secret-file", d.WebhookSecretFile, "file holding the webhook's secret (required) [CIMDEPLOY_GITHUB_WEBHOOK_SECRET_FILE]")
	f.StringVar(&d.GitHub.TokenFile, "github-token-file", d.GitHub.TokenFile, "token for commit statuses and deployments [CIMDEPLOY_GITHUB_TOKEN_FILE]")
	f.StringVar(&d.GitHub.APIURL, "github-api-url", d.GitHub.APIURL, "GitHub's REST API (Enterprise: https://HOST/api/v3/) [CIMDEPLOY_GITHUB_API_URL]")
	f.StringVar(&d.GitHub.Environment, "github-environment", d.GitHub.Environment, "the deployments' environment [CIMDEPLOY_GITHUB_ENVIRONMENT]")
	f.StringVar(&d.GitHub.PublicURL, "public-url", d.GitHub.PublicURL, "where serve is reached: statuses link to its run pages [CIMDEPLOY_PUBLIC_URL]")
	f.IntVar(&d.Queue.MaxValidations, "max-validations", d.Queue.MaxValidations, "validations run at once by this instance [CIMDEPLOY_QUEUE_MAX_VALIDATIONS]")
	f.BoolVar(&opts.cfg.RequireApproval, "require-approval", opts.cfg.RequireApproval, "hold deploys after build and publish until \"cimdeploy approve RUN\" [CIMDEPLOY_REQUIRE_APPROVAL]")
	f.DurationVar(&opts.cfg.ApprovalTimeout, "approval-timeout", opts.cfg.ApprovalTimeout, "how long a deploy waits for approval [CIMDEPLOY_APPROVAL_TIMEOUT]")
	f.StringVar(&opts.cfg.Store.Listen, "nats-listen", opts.cfg.Store.Listen, "host:port where the embedded NATS accepts clients, with a token: commands on the same --data-dir (pause, approve, ...) share serve's store [CIMDEPLOY_NATS_LISTEN]")
	addPipelineFlags(f, &opts.cfg, "", nil)
	addLabFlags(f, &opts.cfg, "serve the local lab: bring it up if needed, deploy its repository to its nodes")
	return cmd
}

func runServe(ctx context.Context, g *globalOptions, opts serveOptions) error {
	cfg, dc := &opts.cfg, &opts.daemon
	if cfg.Lab {
		if err := useLab(ctx, g, cfg); err != nil {
			return err
		}
		if dc.Webhooks.Repository == "" {
			dc.Webhooks.Repository = labRepository
		}
		if cfg.Store.URL == "" && cfg.Store.Listen == "" {
			cfg.Store.Listen = "127.0.0.1:0" // commands on the same data directory share the store
		}
		if dc.WebhookSecretFile == "" {
			secret, err := labSecret(cfg.LabDir)
			if err != nil {
				return &exitError{code: exitInfra, err: err}
			}
			dc.WebhookSecretFile = secret
			fmt.Fprintf(g.stdout, "webhook secret: %s\n", secret)
		}
	}
	dc.GitHub.Repository = dc.Webhooks.Repository // one setting, read by both
	cfg.Rev = dc.Webhooks.DeployBranch            // what the fleet's desired state is read from
	errs := []error{cfg.Validate(pipeline.KindDeploy), dc.Validate()}
	if err := errors.Join(errs...); err != nil {
		return usageError(err)
	}
	st, err := store.Open(ctx, cfg.Store, g.logger)
	if err != nil {
		return &exitError{code: exitInfra, err: err}
	}
	defer st.Close()
	dep, err := deploy.New(ctx, *cfg, st, g.logger)
	if err != nil {
		return deployError(err)
	}
	d, err := daemon.New(ctx, *dc, st, dep, g.logger)
	if err != nil {
		return &exitError{code: exitInfra, err: err}
	}
	ln, err := net.Listen("tcp", dc.Listen)
	if err != nil {
		return &exitError{code: exitInfra, err: fmt.Errorf("--listen: %w", err)}
	}
	fmt.Fprintf(g.stdout, "cimdeploy serve: listening on http://%s (POST /webhooks/github, /runs, /healthz, /readyz, /metrics)\n", ln.Addr())
	if st.ListenURL() != "" {
		fmt.Fprintf(g.stdout, "state store: embedded, shared with the commands given --data-dir %s (pause, approve, runs, ...)\n", cfg.Store.DataDir)
	}
	return d.Serve(ctx, ln)
}

// labSecret is the lab's webhook secret file, made (random, 0600) when it does not exist.
func labSecret(labDir string) (string, error) {
	path := filepath.Join(labDir, "webhook-secret")
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	if err := os.MkdirAll(labDir, 0o755); err != nil {
		return "", err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("lab webhook secret: %w", err)
	}
	if _, err := fmt.Fprintln(f, hex.EncodeToString(b[:])); err != nil {
		f.Close()
		return "", err
	}
	return path, f.Close()
}
