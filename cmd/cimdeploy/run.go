package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/term"

	"github.com/cimdeploy/cimdeploy/deploy"
	"github.com/cimdeploy/cimdeploy/gitops/checkout"
	"github.com/cimdeploy/cimdeploy/pipeline"
	"github.com/cimdeploy/cimdeploy/pipeline/queue"
	"github.com/cimdeploy/cimdeploy/pipeline/store"
	"github.com/cimdeploy/cimdeploy/rollout"
)

// runOptions configure `cimdeploy run`: the configuration (deploy.Config, every setting also a
// CIMDEPLOY_* variable) and what only the command line says.
type runOptions struct {
	cfg          deploy.Config
	force        bool
	validateOnly bool
	json         bool
	noWait       bool
}

func newRunCommand(g *globalOptions) *cobra.Command {
	var opts runOptions
	var envErr error
	opts.cfg, envErr = deploy.Load(context.Background(), nil)
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the pipeline on a commit: checkout, generate, check, build, publish, rollout",
		Long: `Run the pipeline on one commit of the infrastructure repository: check it out, project its
events into Nix (a validate run fails when the committed Nix differs), nix flake check (the verdict is
cached per commit and flake.lock), and build every node's toplevel and LXC tarball in parallel workers.
A deploy run (without --validate-only) then uploads the templates to Proxmox (publish) and switches the
NATS cluster node by node behind health gates, each node guarded by a dead-man rollback (rollout; see
` + "`cimdeploy rollout --help`" + `).

Progress is live on a terminal, timestamped lines otherwise, or a JSON event stream with --json. The run is
recorded in the state store (embedded NATS JetStream under --data-dir, or CIMDEPLOY_NATS_URL).

Exit codes: 0 success, 1 the pipeline failed, 2 usage or configuration error, 3 infrastructure error,
130 interrupted.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := bindFlags(cmd, &opts.cfg, envErr); err != nil {
				return err
			}
			return runRun(cmd.Context(), g, opts)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&opts.validateOnly, "validate-only", false, "validate: stop after the build, deploy nothing")
	f.BoolVar(&opts.json, "json", false, "print the run's events as JSON lines, then the result")
	f.BoolVar(&opts.noWait, "no-wait", false, "refuse to deploy while another deploy (serve's or a command's) is in progress, instead of waiting for it")
	addPipelineFlags(f, &opts.cfg, pipelineRev, &opts.force)
	addModeFlag(f, &opts.cfg.Rollout)
	addLabFlags(f, &opts.cfg, "run on the local lab: bring it up if needed and use its repository, nodes and Proxmox host")
	return cmd
}

// pipelineRev is what --rev says in the commands that run the pipeline on one commit.
const pipelineRev = "commit (40 hex or an abbreviated id of 7+), branch, refs/tags/T, refs/pull/N/head, or what git takes for a commit: HEAD~1, main^, v1.2^{}"

// addPipelineFlags adds the flags of everything a pipeline run needs: the repository (and the
// revision, with rev its help; none when empty), the build, the stages' timeouts, Nix, the state
// store, SSH and Proxmox, and the rollout (--force when force is not nil).
func addPipelineFlags(f *pflag.FlagSet, c *deploy.Config, rev string, force *bool) {
	addRepoFlags(f, c, "repository: a local path or a URL (https, ssh, file)", rev)
	f.StringVar(&c.LXCBuilder, "lxc-builder", c.LXCBuilder, "nixpkgs or nixos-generators [CIMDEPLOY_LXC_BUILDER]")
	f.StringVar(&c.TrustedSigners, "trusted-signers", c.TrustedSigners, "SSH allowed signers and/or OpenPGP public keys: a deploy refuses a commit they did not sign [CIMDEPLOY_TRUSTED_SIGNERS]")
	f.BoolVar(&c.AllowForcePush, "allow-force-push", c.AllowForcePush, "deploy a head that does not descend from the last deployed commit [CIMDEPLOY_ALLOW_FORCE_PUSH]")
	f.BoolVar(&c.KeepWorkspace, "keep-workspace", c.KeepWorkspace, "keep the run's workspace for debugging [CIMDEPLOY_KEEP_WORKSPACE]")
	f.IntVar(&c.BuildWorkers, "build-workers", c.BuildWorkers, "concurrent builds (unset: the CPUs, bounded by memory) [CIMDEPLOY_BUILD_WORKERS]")
	f.Int64Var(&c.EvalMemoryMiB, "build-memory-per-eval", c.EvalMemoryMiB, "MiB one evaluation needs, bounding workers [CIMDEPLOY_BUILD_MEMORY_PER_EVAL_MIB]")
	f.DurationVar(&c.CheckoutTimeout, "timeout-checkout", c.CheckoutTimeout, "checkout stage timeout [CIMDEPLOY_TIMEOUT_CHECKOUT]")
	f.DurationVar(&c.GenerateTimeout, "timeout-generate", c.GenerateTimeout, "generate stage timeout [CIMDEPLOY_TIMEOUT_GENERATE]")
	f.DurationVar(&c.CheckTimeout, "timeout-check", c.CheckTimeout, "check stage timeout [CIMDEPLOY_TIMEOUT_CHECK]")
	f.DurationVar(&c.BuildTimeout, "timeout-build", c.BuildTimeout, "build stage timeout [CIMDEPLOY_TIMEOUT_BUILD]")
	f.DurationVar(&c.CleanupTimeout, "timeout-cleanup", c.CleanupTimeout, "time for cleanup and final reports after a cancel [CIMDEPLOY_TIMEOUT_CLEANUP]")
	f.DurationVar(&c.PublishTimeout, "timeout-publish", c.PublishTimeout, "publish stage timeout [CIMDEPLOY_TIMEOUT_PUBLISH]")
	f.DurationVar(&c.RolloutTimeout, "timeout-rollout", c.RolloutTimeout, "rollout stage timeout; a node in flight is finished [CIMDEPLOY_TIMEOUT_ROLLOUT]")
	addNixFlags(f, &c.Nix)
	addStoreFlags(f, &c.Store)
	addRemoteFlags(f, &c.Remote)
	addRolloutFlags(f, c, force)
}

func runRun(ctx context.Context, g *globalOptions, opts runOptions) error {
	if opts.cfg.Lab {
		if err := useLab(ctx, g, &opts.cfg); err != nil {
			return err
		}
	}
	if opts.cfg.Repo == "" {
		return usageError(errors.New("--repo is required (a local path or a URL)"))
	}
	kind := pipeline.KindDeploy
	if opts.validateOnly {
		kind = pipeline.KindValidate
	}
	var res *rollout.Result
	err := runPipeline(ctx, g, &opts.cfg, kind, deploy.RunOptions{Force: opts.force, Done: func(r *rollout.Result) { res = r }},
		pipelineOutput{json: opts.json, noWait: opts.noWait})
	if !opts.json {
		printNodeCommits(g.stdout, res)
	}
	return err
}

// pipelineOutput is how a pipeline run shows its progress, and whether a deploy waits for another.
type pipelineOutput struct {
	noWait bool // a deploy refuses to start while another holds the deploy lock, instead of waiting
	json   bool // JSON lines
	plain  bool // plain progress lines even on a terminal (a prompt follows)
}

// runPipeline validates cfg and runs the pipeline: a validate run (checkout to build) or a deploy run
// (also publish and rollout).
func runPipeline(ctx context.Context, g *globalOptions, cfg *deploy.Config, kind pipeline.Kind, ropts deploy.RunOptions, out pipelineOutput) error {
	if err := cfg.Validate(kind); err != nil {
		return usageError(err)
	}
	st, err := store.Open(ctx, cfg.Store, g.logger)
	if err != nil {
		return &exitError{code: exitInfra, err: err}
	}
	defer st.Close()
	d, err := deploy.New(ctx, *cfg, st, g.logger)
	if err != nil {
		return deployError(err)
	}
	mode := progressPlain
	switch {
	case out.json:
		mode = progressJSON
	case isTerminal(g.stdout) && !out.plain:
		mode = progressLive
	}
	prog := newProgress(g.stdout, mode)
	ropts.Reporters = append(ropts.Reporters, prog)
	run := &pipeline.Run{ID: pipeline.NewRunID(), Repo: d.Source().String(), Ref: cfg.Rev, Trigger: pipeline.TriggerManual, Kind: kind}
	if checkout.IsExpression(cfg.Rev) { // HEAD~1, main^, 1a2b3c4: resolved once, the run works on the full id
		if run.Commit, err = (&checkout.Cache{Dir: cfg.Store.DataDir, Logger: g.logger}).Resolve(ctx, d.Source(), cfg.Rev); err != nil {
			return err
		}
		w := g.stdout
		if out.json { // stdout is the JSON lines
			w = g.stderr
		}
		fmt.Fprintf(w, "--rev %s is commit %s\n", cfg.Rev, run.Commit)
	}
	if kind == pipeline.KindDeploy && !ropts.DryRun {
		release, lctx, err := holdDeployLock(ctx, g, st, out.noWait)
		if err != nil {
			prog.Close()
			return err
		}
		defer release()
		ctx = lctx
	}
	res, err := d.Run(ctx, run, ropts)
	prog.Close()
	if err != nil {
		return deployError(err)
	}
	if !out.json {
		fmt.Fprintln(g.stdout)
		printSummary(g.stdout, res)
		fmt.Fprintf(g.stdout, "command output: %s\n", d.LogFile(run.ID))
	}
	switch res.Status {
	case pipeline.StatusSuccess:
		return nil
	case pipeline.StatusCancelled:
		return &exitError{code: exitCanceled, err: errors.New(res.Error)}
	default:
		// exitCode tells a broken repository, host or tool (3) from failed work (1) by the cause.
		return &runFailed{msg: fmt.Sprintf("run %s failed: %s", res.Run.ID, firstLine(res.Error)), cause: res.Failure()}
	}
}

// holdDeployLock takes the deploy lock that serve's deploys hold too (one deploy at a time per
// cluster), waiting for a deploy in progress unless noWait; the returned context ends if the lock is
// lost.
func holdDeployLock(ctx context.Context, g *globalOptions, st *store.Store, noWait bool) (func(), context.Context, error) {
	q, err := queue.Open(ctx, st.JetStream(), queue.Config{}, g.logger, nil)
	if err != nil {
		return nil, nil, &exitError{code: exitInfra, err: err}
	}
	ctx, cancel := context.WithCancelCause(ctx)
	wait := time.AfterFunc(time.Second, func() {
		fmt.Fprintln(g.stderr, "waiting for the deploy in progress to end (--no-wait refuses instead)")
	})
	release, err := q.LockDeploy(ctx, !noWait, cancel)
	wait.Stop()
	if err != nil {
		cancel(nil)
		if errors.Is(err, queue.ErrDeployLocked) {
			return nil, nil, &exitError{code: exitFailed, err: err}
		}
		return nil, nil, &exitError{code: exitInfra, err: fmt.Errorf("deploy lock: %w", err)}
	}
	return func() { release(); cancel(nil) }, ctx, nil
}

// deployError gives an error of package deploy its exit code: a setting is a usage error (2), events
// that do not fold are failed work (1), anything else broke in the infrastructure (3).
func deployError(err error) error {
	var (
		ce *deploy.ConfigError
		te *deploy.TopologyError
	)
	switch {
	case errors.As(err, &ce):
		return usageError(err)
	case errors.As(err, &te):
		return &exitError{code: exitFailed, err: fmt.Errorf("the events of %s at %s: %w", te.Source, short(te.Commit), problemList{te.Problems})}
	}
	return &exitError{code: exitInfra, err: err}
}

// runFailed is a failed run: its message is the run's, its cause the failing stage's error.
type runFailed struct {
	msg   string
	cause error
}

func (e *runFailed) Error() string { return e.msg }
func (e *runFailed) Unwrap() error { return e.cause }

// isTerminal reports whether a stream (os.Stdin, os.Stdout, ...) is a terminal.
func isTerminal(stream any) bool {
	f, ok := stream.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
