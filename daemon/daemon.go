package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/cimdeploy/cimdeploy/deploy"
	"github.com/cimdeploy/cimdeploy/fleet"
	"github.com/cimdeploy/cimdeploy/gitops/forge"
	"github.com/cimdeploy/cimdeploy/pipeline"
	"github.com/cimdeploy/cimdeploy/pipeline/queue"
	"github.com/cimdeploy/cimdeploy/pipeline/store"
	"github.com/cimdeploy/cimdeploy/rollout"
	"github.com/cimdeploy/cimdeploy/webhooks"
)

// Config is what `cimdeploy serve` adds to a run's configuration (deploy.Config, which also says which
// signers it trusts and whether a person approves deploys): where it listens, the webhook's secret,
// and the settings of the receiver, the queue and the GitHub reporter. Every field with an env tag is a CIMDEPLOY_*
// variable; secrets come from files.
type Config struct {
	// Listen is the HTTP listener: webhooks, run pages, health, metrics.
	Listen string `env:"CIMDEPLOY_LISTEN, default=127.0.0.1:8420"`
	// WebhookSecretFile holds the webhook's shared secret; serve refuses to start without one.
	WebhookSecretFile string `env:"CIMDEPLOY_GITHUB_WEBHOOK_SECRET_FILE"`
	// ShutdownTimeout bounds the end of serve: answering the requests in flight, the last reports.
	ShutdownTimeout time.Duration `env:"CIMDEPLOY_SHUTDOWN_TIMEOUT, default=30s"`

	Webhooks webhooks.Config
	Queue    queue.Config
	GitHub   forge.Config
}

// maxSecretBytes bounds the webhook secret file: GitHub's secrets are short strings.
const maxSecretBytes = 4096

// Validate reports every problem of c that can be seen without opening anything but the secret's file.
func (c *Config) Validate() error {
	var errs []error
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		errs = append(errs, fmt.Errorf("CIMDEPLOY_LISTEN (--listen) %q: %w", c.Listen, err))
	}
	if c.WebhookSecretFile == "" {
		errs = append(errs, errors.New("CIMDEPLOY_GITHUB_WEBHOOK_SECRET_FILE is required: serve accepts only signed deliveries"))
	} else if _, err := readSecret(c.WebhookSecretFile); err != nil {
		errs = append(errs, fmt.Errorf("CIMDEPLOY_GITHUB_WEBHOOK_SECRET_FILE: %w", err))
	}
	if c.Webhooks.Repository == "" {
		errs = append(errs, errors.New("--github-repository (CIMDEPLOY_GITHUB_REPOSITORY) is required: OWNER/NAME of the infrastructure repository"))
	}
	if err := c.Queue.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.reportsToGitHub() {
		if err := c.GitHub.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// reportsToGitHub reports whether GitHub credentials are configured (a token or an App).
func (c *Config) reportsToGitHub() bool {
	return c.GitHub.TokenFile != "" || c.GitHub.AppID != 0 || c.GitHub.AppPrivateKeyFile != ""
}

// readSecret reads the webhook secret: one line, not empty, bounded.
func readSecret(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("webhook secret: %w", err)
	}
	defer f.Close()
	buf := make([]byte, maxSecretBytes+1)
	n, err := f.Read(buf)
	if err != nil && n == 0 {
		return nil, fmt.Errorf("webhook secret %s: empty", path)
	}
	if n > maxSecretBytes {
		return nil, fmt.Errorf("webhook secret %s: longer than %d bytes", path, maxSecretBytes)
	}
	secret := []byte(strings.TrimRight(string(buf[:n]), "\r\n"))
	if len(secret) == 0 {
		return nil, fmt.Errorf("webhook secret %s: empty", path)
	}
	return secret, nil
}

// Daemon is `cimdeploy serve`: it receives GitHub's deliveries, keeps them in the queue, runs each
// job through the pipeline and reports the runs.
type Daemon struct {
	cfg      Config
	logger   *slog.Logger
	store    *store.Store
	deployer *deploy.Deployer
	queue    *queue.Queue
	github   *forge.Reporter // nil: no GitHub credentials, nothing reported there
	fleet    *fleet.Observer // the nodes' state, for /metrics
	metrics  *runMetrics
	gate     *prometheus.HistogramVec
	handler  http.Handler
}

// New assembles the daemon over an open store and a deployer for the repository; it opens the queue
// and the GitHub reporter. Close it when Serve has returned.
func New(ctx context.Context, cfg Config, st *store.Store, dep *deploy.Deployer, logger *slog.Logger) (*Daemon, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	secret, err := readSecret(cfg.WebhookSecretFile)
	if err != nil {
		return nil, err
	}
	d := &Daemon{cfg: cfg, logger: logger, store: st, deployer: dep}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	d.metrics = newRunMetrics(reg)
	d.gate = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "cimdeploy_rollout_gate_seconds",
		Help:    "From a node's activation ending to its health gate passing (healthy, routed, caught up), by node.",
		Buckets: []float64{0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120},
	}, []string{"node"})
	reg.MustRegister(d.gate)

	d.fleet = fleet.NewObserver(dep.OpenCluster, fleet.Options{Repo: dep.Source().String(), Branch: cfg.Webhooks.DeployBranch, Logger: logger})
	if _, err := fleet.NewCollector(d.fleet, reg, fleet.CollectorOptions{Logger: logger}); err != nil {
		return nil, fmt.Errorf("fleet metrics: %w", err)
	}

	qcfg := cfg.Queue
	qcfg.Paused = func(ctx context.Context) (bool, error) {
		_, paused, err := st.Paused(ctx)
		return paused, err
	}
	if d.queue, err = queue.Open(ctx, st.JetStream(), qcfg, logger, reg); err != nil {
		return nil, fmt.Errorf("open the queue: %w", err)
	}
	if cfg.reportsToGitHub() {
		gcfg := cfg.GitHub
		if gcfg.Repository == "" {
			gcfg.Repository = cfg.Webhooks.Repository
		}
		if d.github, err = forge.New(gcfg, logger, reg); err != nil {
			return nil, fmt.Errorf("github reporter: %w", err)
		}
	} else {
		logger.Warn("no GitHub token or App configured: runs are not reported to GitHub (CIMDEPLOY_GITHUB_TOKEN_FILE)")
	}
	wcfg := cfg.Webhooks
	wcfg.Secret = secret
	rcv, err := webhooks.New(wcfg, deliveries{q: d.queue, nc: st.Conn(), logger: logger}, logger, reg)
	if err != nil {
		return nil, err
	}

	mux := http.NewServeMux()
	mux.Handle("POST /webhooks/github", rcv)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", d.ready)
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	dash := pages{runs: st, stream: st.JetStream(), repo: cfg.Webhooks.Repository, reg: reg, logger: logger,
		fleet: d.fleet, nav: []navLink{{Label: "Fleet", Href: "/fleet"}}}
	if dep != nil {
		dash.logFile = dep.LogFile
	}
	dash.register(mux)
	d.handler = mux
	return d, nil
}

// Handler is the daemon's HTTP handler.
func (d *Daemon) Handler() http.Handler { return d.handler }

// ready answers /readyz: 200 when the store's connection is up and the queue answers.
func (d *Daemon) ready(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if st := d.store.Conn().Status(); st != nats.CONNECTED {
		http.Error(w, "state store: "+st.String(), http.StatusServiceUnavailable)
		return
	}
	depth, err := d.queue.Depth(ctx)
	if err != nil {
		d.logger.Warn("readyz: queue depth", "err", err)
		http.Error(w, "queue: not answering", http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintf(w, "ready: %d job(s) queued\n", depth)
}

// Serve answers HTTP on ln and works the queue until ctx ends, then shuts down within
// Config.ShutdownTimeout: requests in flight are answered, a job that was cut off goes back to the
// queue, the reports still queued are sent.
func (d *Daemon) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           d.handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute,
		WriteTimeout:      time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(d.logger.Handler(), slog.LevelWarn),
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	d.logger.Info("serving", "listen", ln.Addr().String())

	d.reportInterrupted(ctx)
	workErr := d.queue.Work(ctx, d)

	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d.cfg.ShutdownTimeout)
	defer cancel()
	errs := []error{}
	if workErr != nil && !errors.Is(workErr, context.Canceled) {
		errs = append(errs, fmt.Errorf("queue: %w", workErr))
	}
	if err := srv.Shutdown(sctx); err != nil {
		errs = append(errs, fmt.Errorf("http shutdown: %w", err))
	}
	if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		errs = append(errs, fmt.Errorf("http: %w", err))
	}
	if d.github != nil {
		if err := d.github.Close(sctx); err != nil {
			errs = append(errs, fmt.Errorf("github reports: %w", err))
		}
	}
	d.fleet.Close()
	return errors.Join(errs...)
}

// Run implements queue.Handler: one job, one run of the pipeline. A deploy job becomes a deploy run
// (with the signature check and the approval when configured); a pull request, a validate run.
func (d *Daemon) Run(ctx context.Context, j queue.Job) error {
	kind := j.Kind
	if j.Fork {
		kind = pipeline.KindValidate // a fork's code is never deployed
	}
	trigger := pipeline.TriggerManual
	switch j.Event {
	case "push":
		trigger = pipeline.TriggerPush
	case "pull_request":
		trigger = pipeline.TriggerPullRequest
	}
	run := &pipeline.Run{ID: pipeline.NewRunID(), Repo: d.deployer.Source().String(), Ref: j.Ref, Commit: j.Commit,
		Trigger: trigger, Kind: kind}
	log := d.logger.With("run_id", run.ID, "delivery", j.Delivery, "commit", j.Commit, "ref", j.Ref, "kind", kind)
	opts := deploy.RunOptions{Reporters: []pipeline.Reporter{d.metrics}, Done: d.observeRollout}
	if d.github != nil {
		opts.Reporters = append(opts.Reporters, d.github)
	}
	log.Info("run started")
	res, err := d.deployer.Run(ctx, run, opts)
	if err != nil {
		log.Error("run broke", "err", err)
		return err
	}
	log.Info("run finished", "status", res.Status, "duration", res.Duration.Round(time.Millisecond), "error", firstLine(res.Error))
	if res.Status == pipeline.StatusCancelled && ctx.Err() != nil {
		return ctx.Err() // cut off by the shutdown: the queue hands the job back
	}
	return nil
}

// Superseded implements queue.Handler: old was not run because by is newer.
func (d *Daemon) Superseded(ctx context.Context, old, by queue.Job) {
	d.logger.Info("superseded", "delivery", old.Delivery, "commit", old.Commit, "by", by.Commit, "ref", old.Ref)
	if d.github != nil {
		if err := d.github.Superseded(ctx, old.Commit, by.Commit); err != nil {
			d.logger.Warn("report superseded", "commit", old.Commit, "err", err)
		}
	}
}

// observeRollout records the gate of every node a rollout switched.
func (d *Daemon) observeRollout(res *rollout.Result) {
	if res == nil {
		return
	}
	for _, n := range res.Nodes {
		if n.Rejoin > 0 {
			d.gate.WithLabelValues(n.Node).Observe(n.Rejoin.Seconds())
		}
	}
}

// reportInterrupted gives the runs this process found interrupted when it opened the store (their
// process died mid-run: kill -9, a crash, a lost machine) their final report on GitHub. Their jobs,
// never acknowledged, run again from the queue.
func (d *Daemon) reportInterrupted(ctx context.Context) {
	for _, r := range d.store.Interrupted() {
		if r.Trigger != pipeline.TriggerPush && r.Trigger != pipeline.TriggerPullRequest {
			continue
		}
		d.logger.Warn("run interrupted: its process ended mid-run", "run_id", r.ID, "commit", r.Commit, "stage", r.Stage)
		if d.github == nil {
			continue
		}
		events, err := d.store.Events(ctx, r.ID)
		if err != nil || len(events) == 0 {
			d.logger.Warn("report interrupted run", "run_id", r.ID, "err", err)
			continue
		}
		if last := events[len(events)-1]; last.Type == pipeline.RunFinished {
			if err := d.github.Report(ctx, last); err != nil {
				d.logger.Warn("report interrupted run", "run_id", r.ID, "err", err)
			}
		}
	}
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
