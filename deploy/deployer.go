package deploy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/cimdeploy/cimdeploy/gitops/checkout"
	"github.com/cimdeploy/cimdeploy/gitops/projection"
	"github.com/cimdeploy/cimdeploy/gitops/topology"
	"github.com/cimdeploy/cimdeploy/gitops/trust"
	"github.com/cimdeploy/cimdeploy/nixrunner"
	"github.com/cimdeploy/cimdeploy/pipeline"
	"github.com/cimdeploy/cimdeploy/pipeline/store"
	"github.com/cimdeploy/cimdeploy/remote"
	"github.com/cimdeploy/cimdeploy/rollout"
	"github.com/cimdeploy/cimdeploy/stages"
)

// Deployer assembles and runs the pipeline of one repository over an open state store. It is safe
// for concurrent use: every Run has its own run log, workspace and, for a deploy run, its own SSH
// connections; the clone cache and the store are shared (both lock what they must).
type Deployer struct {
	cfg    Config
	src    checkout.Source
	store  *store.Store
	nix    *nixrunner.Runner
	cache  *checkout.Cache
	logger *slog.Logger
	// signers are the trusted signers of deploy runs; nil: signatures are not checked.
	signers *trust.Signers
}

// New assembles runs of cfg (checked with Validate) over st, which the caller opened and closes after
// the last run. It finds nix: a missing nix is a *nixrunner.Error of KindNotFound. A setting that
// does not work is a *ConfigError.
func New(ctx context.Context, cfg Config, st *store.Store, logger *slog.Logger) (*Deployer, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if st == nil {
		return nil, errors.New("deploy: no state store")
	}
	src, err := cfg.Source()
	if err != nil {
		return nil, err
	}
	nix, err := nixrunner.New(ctx, cfg.Nix, logger)
	if err != nil {
		return nil, err
	}
	d := &Deployer{cfg: cfg, src: src, store: st, nix: nix, logger: logger,
		cache: &checkout.Cache{Dir: cfg.Store.DataDir, Logger: logger}}
	if cfg.TrustedSigners != "" {
		if d.signers, err = trust.Load(cfg.TrustedSigners); err != nil {
			return nil, configError(fmt.Errorf("CIMDEPLOY_TRUSTED_SIGNERS (--trusted-signers): %w", err))
		}
	}
	return d, nil
}

// Source is the repository the runs check out (its String hides credentials).
func (d *Deployer) Source() checkout.Source { return d.src }

// Nix is the nix runner of the runs, without a run log.
func (d *Deployer) Nix() *nixrunner.Runner { return d.nix }

// RunOptions are what a caller adds to a run beyond the configuration.
type RunOptions struct {
	// Nodes limits a deploy run's rollout to these nodes (empty: every node).
	Nodes []string
	// Force switches nodes the pre-flight refuses: switched by hand, a commit that failed before, an
	// unhealthy cluster.
	Force bool
	// DryRun looks at the Proxmox host without changing it (templates are named, not uploaded);
	// pair it with a Confirm that says no.
	DryRun bool
	// DestroyRemoved destroys the containers of the nodes the events removed, once the rollout took
	// them out of the cluster.
	DestroyRemoved bool
	// Recreate recreates the nodes' containers from their templates, keeping their JetStream data with
	// KeepData, wiping it otherwise.
	Recreate, KeepData bool
	// Confirm is asked with the rollout's plan before any node is touched; false ends the rollout
	// with nothing changed. nil goes ahead.
	Confirm func(ctx context.Context, plan *rollout.Plan) (bool, error)
	// Done, when set, receives the rollout's result.
	Done func(*rollout.Result)
	// Reporters receive the run's events after the state store (progress, a forge's status).
	Reporters []pipeline.Reporter
}

// Stages is the plan of a run of kind: checkout, generate, check, build, and for a deploy run publish
// and rollout, then cleanup. The commands' output goes to output. release closes the run's
// connections; call it once the run is over. A setting that does not work (an SSH key that does not
// parse) is a *ConfigError.
func (d *Deployer) Stages(kind pipeline.Kind, opts RunOptions, output io.Writer) (plan []pipeline.Stage, release func(), err error) {
	cfg := &d.cfg
	nix := d.nix.WithLog(output)
	workDir := filepath.Join(cfg.Store.DataDir, "work")
	plan = []pipeline.Stage{
		stages.Checkout{Cache: d.cache, Source: d.src, WorkDir: workDir, Deployed: lastDeployed{d.store}, AllowForcePush: cfg.AllowForcePush},
	}
	if kind == pipeline.KindDeploy && d.signers != nil {
		plan = append(plan, stages.Verify{Signers: d.signers})
	}
	plan = append(plan,
		stages.Generate{Events: cfg.Events, Options: projection.Options{LXCBuilder: cfg.LXCBuilder}},
		stages.Check{Nix: nix, Cache: store.CheckCache{Store: d.store}},
		stages.Build{Nix: nix, Workers: cfg.BuildWorkers, MemoryPerEval: cfg.EvalMemoryMiB << 20},
	)
	release = func() {}
	if kind == pipeline.KindDeploy {
		pool, err := remote.NewPool(cfg.Remote, remote.Options{Logger: d.logger, Output: output, Nix: cfg.Nix.Nix})
		if err != nil {
			return nil, nil, configError(err)
		}
		release = func() { pool.Close() }
		var px remote.Proxmox
		if cfg.Remote.ProxmoxHost != "" {
			host, err := pool.Client(cfg.Remote.ProxmoxSSH(""))
			if err != nil {
				pool.Close()
				return nil, nil, configError(err)
			}
			px = remote.NewPCT(host)
			if opts.DryRun {
				px = dryRunProxmox{Proxmox: px, storage: cfg.Remote.ProxmoxStorage}
			}
		}
		plan = append(plan, stages.Publish{Proxmox: px})
		if cfg.RequireApproval {
			plan = append(plan, stages.Approve{Wait: d.store.WaitDecision, Timeout: cfg.ApprovalTimeout})
		}
		plan = append(plan,
			stages.Rollout{Events: cfg.Events, Nodes: opts.Nodes, Force: opts.Force, RevertAll: cfg.RevertAll,
				DestroyRemoved: opts.DestroyRemoved, Recreate: opts.Recreate, KeepData: opts.KeepData,
				Confirm: opts.Confirm, Done: opts.Done,
				Connect: func(_ context.Context, top *topology.Topology) (*rollout.Rollout, func(), error) {
					r, err := rollout.Connect(pool, top, cfg.Remote, cfg.Rollout, d.store, d.logger)
					return r, func() {}, err
				}})
	}
	plan = append(plan, stages.Cleanup{WorkDir: workDir, Keep: cfg.KeepWorkspace})
	return plan, release, nil
}

// LogFile is where the commands' output of run id goes: <data dir>/logs/<id>.log.
func (d *Deployer) LogFile(id string) string {
	return filepath.Join(d.cfg.Store.DataDir, "logs", id+".log")
}

// Run runs the pipeline over run (its ID, Repo, Ref, Trigger and Kind set by the caller; Repo is
// usually Source().String()) and records it in the state store. The commands' output goes to
// LogFile(run.ID). A failed run is a result, not an error: the error means the runner itself, the
// run log or a setting (*ConfigError) broke.
func (d *Deployer) Run(ctx context.Context, run *pipeline.Run, opts RunOptions) (*pipeline.Result, error) {
	if run.ID == "" {
		run.ID = pipeline.NewRunID()
	}
	runLog, err := openRunLog(d.LogFile(run.ID))
	if err != nil {
		return nil, err
	}
	defer runLog.Close()
	plan, closeRun, err := d.Stages(run.Kind, opts, runLog)
	if err != nil {
		return nil, err
	}
	defer closeRun()
	cfg := &d.cfg
	runner := &pipeline.Runner{
		Logger:    d.logger,
		Output:    runLog,
		Stages:    plan,
		Reporters: append([]pipeline.Reporter{d.store}, opts.Reporters...),
		Timeouts: map[string]time.Duration{
			"checkout": cfg.CheckoutTimeout, "generate": cfg.GenerateTimeout,
			"check": cfg.CheckTimeout, "build": cfg.BuildTimeout,
			"publish": cfg.PublishTimeout, "rollout": cfg.RolloutTimeout,
			// The approval stage ends its own wait; the runner's bound only backs it up.
			"approve": cfg.ApprovalTimeout + time.Minute,
		},
		CleanupTimeout: cfg.CleanupTimeout,
		Parallel:       cfg.BuildWorkers,
	}
	return runner.Run(ctx, run)
}

// openRunLog creates the file the commands' output of a run goes to.
func openRunLog(path string) (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("run log: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("run log: %w", err)
	}
	return f, nil
}

// lastDeployed finds the last deployed commit of a ref in the run history.
type lastDeployed struct{ st *store.Store }

func (l lastDeployed) LastDeployed(ctx context.Context, repo, ref string) (string, error) {
	runs, err := l.st.Runs(ctx, 0)
	if err != nil {
		return "", err
	}
	for _, r := range runs { // newest first
		if r.Kind == pipeline.KindDeploy && r.Status == pipeline.StatusSuccess && r.Repo == repo && r.Ref == ref {
			return r.Commit, nil
		}
	}
	return "", nil
}
