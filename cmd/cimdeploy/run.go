package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sethvargo/go-envconfig"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/term"

	"github.com/cimdeploy/cimdeploy/gitops/checkout"
	"github.com/cimdeploy/cimdeploy/gitops/projection"
	"github.com/cimdeploy/cimdeploy/gitops/topology"
	"github.com/cimdeploy/cimdeploy/nixrunner"
	"github.com/cimdeploy/cimdeploy/pipeline"
	"github.com/cimdeploy/cimdeploy/pipeline/store"
	"github.com/cimdeploy/cimdeploy/remote"
	"github.com/cimdeploy/cimdeploy/rollout"
	"github.com/cimdeploy/cimdeploy/stages"
)

// runOptions configure `cimdeploy run`; every field is also a CIMDEPLOY_* variable.
type runOptions struct {
	Repo           string `env:"CIMDEPLOY_REPO"`
	Rev            string `env:"CIMDEPLOY_REV, default=main"`
	Events         string `env:"CIMDEPLOY_EVENTS, default=events"`
	LXCBuilder     string `env:"CIMDEPLOY_LXC_BUILDER, default=nixpkgs"`
	GitTokenFile   string `env:"CIMDEPLOY_GIT_TOKEN_FILE"`
	GitSSHKeyFile  string `env:"CIMDEPLOY_GIT_SSH_KEY_FILE"`
	GitKnownHosts  string `env:"CIMDEPLOY_GIT_KNOWN_HOSTS"`
	AllowForcePush bool   `env:"CIMDEPLOY_ALLOW_FORCE_PUSH"`
	KeepWorkspace  bool   `env:"CIMDEPLOY_KEEP_WORKSPACE"`
	BuildWorkers   int    `env:"CIMDEPLOY_BUILD_WORKERS"`
	EvalMemoryMiB  int64  `env:"CIMDEPLOY_BUILD_MEMORY_PER_EVAL_MIB, default=512"`

	CheckoutTimeout time.Duration `env:"CIMDEPLOY_TIMEOUT_CHECKOUT, default=5m"`
	GenerateTimeout time.Duration `env:"CIMDEPLOY_TIMEOUT_GENERATE, default=1m"`
	CheckTimeout    time.Duration `env:"CIMDEPLOY_TIMEOUT_CHECK, default=30m"`
	BuildTimeout    time.Duration `env:"CIMDEPLOY_TIMEOUT_BUILD, default=1h"`
	CleanupTimeout  time.Duration `env:"CIMDEPLOY_TIMEOUT_CLEANUP, default=1m"`

	PublishTimeout time.Duration `env:"CIMDEPLOY_TIMEOUT_PUBLISH, default=30m"`
	RolloutTimeout time.Duration `env:"CIMDEPLOY_TIMEOUT_ROLLOUT, default=2h"`

	Nix     nixrunner.Config
	Store   store.Config
	Remote  remote.Config
	Rollout rollout.Config
	// Force switches nodes the pre-flight refuses (switched by hand, failed commit, unhealthy
	// cluster); a flag only, never the environment.
	Force     bool
	RevertAll bool `env:"CIMDEPLOY_ROLLOUT_REVERT_ALL"`

	Lab    bool
	LabDir string `env:"CIMDEPLOY_LAB_DIR, default=.cimdeploy/lab"`

	ValidateOnly bool
	JSON         bool
}

func newRunCommand(g *globalOptions) *cobra.Command {
	var opts runOptions
	envErr := envconfig.Process(context.Background(), &opts)
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
			if envErr != nil {
				return usageError(envErr)
			}
			if err := checkPositive(cmd, &opts); err != nil {
				return usageError(err)
			}
			return runRun(cmd.Context(), g, opts)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&opts.ValidateOnly, "validate-only", false, "validate: stop after the build, deploy nothing")
	f.BoolVar(&opts.JSON, "json", false, "print the run's events as JSON lines, then the result")
	addPipelineFlags(f, &opts)
	f.BoolVar(&opts.Lab, "lab", false, "run on the local lab: bring it up if needed and use its repository, nodes and Proxmox host")
	f.StringVar(&opts.LabDir, "lab-dir", opts.LabDir, "the lab's directory, with --lab [CIMDEPLOY_LAB_DIR]")
	return cmd
}

// addPipelineFlags adds the flags of everything a pipeline run needs: the repository, the build, the
// stages' timeouts, Nix, the state store, SSH and Proxmox, and the rollout.
func addPipelineFlags(f *pflag.FlagSet, opts *runOptions) {
	f.StringVar(&opts.Repo, "repo", opts.Repo, "repository: a local path or a URL (https, ssh, file) [CIMDEPLOY_REPO]")
	f.StringVar(&opts.Rev, "rev", opts.Rev, "commit SHA (40 hex), branch, tag or refs/pull/N/head [CIMDEPLOY_REV]")
	f.StringVar(&opts.Events, "events", opts.Events, "events directory inside the repository [CIMDEPLOY_EVENTS]")
	f.StringVar(&opts.LXCBuilder, "lxc-builder", opts.LXCBuilder, "nixpkgs or nixos-generators [CIMDEPLOY_LXC_BUILDER]")
	f.StringVar(&opts.GitTokenFile, "git-token-file", opts.GitTokenFile, "file holding an HTTPS token for the repository [CIMDEPLOY_GIT_TOKEN_FILE]")
	f.StringVar(&opts.GitSSHKeyFile, "git-ssh-key-file", opts.GitSSHKeyFile, "SSH key for an ssh:// repository [CIMDEPLOY_GIT_SSH_KEY_FILE]")
	f.StringVar(&opts.GitKnownHosts, "git-known-hosts", opts.GitKnownHosts, "known_hosts for an ssh:// repository [CIMDEPLOY_GIT_KNOWN_HOSTS]")
	f.BoolVar(&opts.AllowForcePush, "allow-force-push", opts.AllowForcePush, "deploy a head that does not descend from the last deployed commit [CIMDEPLOY_ALLOW_FORCE_PUSH]")
	f.BoolVar(&opts.KeepWorkspace, "keep-workspace", opts.KeepWorkspace, "keep the run's workspace for debugging [CIMDEPLOY_KEEP_WORKSPACE]")
	f.IntVar(&opts.BuildWorkers, "build-workers", opts.BuildWorkers, "concurrent builds (unset: the CPUs, bounded by memory) [CIMDEPLOY_BUILD_WORKERS]")
	f.Int64Var(&opts.EvalMemoryMiB, "build-memory-per-eval", opts.EvalMemoryMiB, "MiB one evaluation needs, bounding workers [CIMDEPLOY_BUILD_MEMORY_PER_EVAL_MIB]")
	f.DurationVar(&opts.CheckoutTimeout, "timeout-checkout", opts.CheckoutTimeout, "checkout stage timeout [CIMDEPLOY_TIMEOUT_CHECKOUT]")
	f.DurationVar(&opts.GenerateTimeout, "timeout-generate", opts.GenerateTimeout, "generate stage timeout [CIMDEPLOY_TIMEOUT_GENERATE]")
	f.DurationVar(&opts.CheckTimeout, "timeout-check", opts.CheckTimeout, "check stage timeout [CIMDEPLOY_TIMEOUT_CHECK]")
	f.DurationVar(&opts.BuildTimeout, "timeout-build", opts.BuildTimeout, "build stage timeout [CIMDEPLOY_TIMEOUT_BUILD]")
	f.DurationVar(&opts.CleanupTimeout, "timeout-cleanup", opts.CleanupTimeout, "time for cleanup and final reports after a cancel [CIMDEPLOY_TIMEOUT_CLEANUP]")
	f.DurationVar(&opts.PublishTimeout, "timeout-publish", opts.PublishTimeout, "publish stage timeout [CIMDEPLOY_TIMEOUT_PUBLISH]")
	f.DurationVar(&opts.RolloutTimeout, "timeout-rollout", opts.RolloutTimeout, "rollout stage timeout; a node in flight is finished [CIMDEPLOY_TIMEOUT_ROLLOUT]")
	addNixFlags(f, &opts.Nix)
	addStoreFlags(f, &opts.Store)
	addRemoteFlags(f, &opts.Remote)
	addRolloutFlags(f, opts)
}

func runRun(ctx context.Context, g *globalOptions, opts runOptions) error {
	if opts.Lab {
		if err := applyLab(ctx, g, opts.LabDir, &opts); err != nil {
			return err
		}
	}
	if opts.Repo == "" {
		return usageError(errors.New("--repo is required (a local path or a URL)"))
	}
	return runPipeline(ctx, g, opts, deployHooks{})
}

// deployHooks are what `cimdeploy rollout` adds to a pipeline run.
type deployHooks struct {
	nodes   []string
	confirm func(ctx context.Context, plan *rollout.Plan) (bool, error)
	done    func(*rollout.Result)
	plain   bool // plain progress lines even on a terminal (a prompt follows)
	dryRun  bool // look at Proxmox, change nothing there (the rollout's Confirm says no)
}

// runPipeline validates opts and runs the pipeline: a validate run (checkout to build) or a deploy run
// (also publish and rollout).
func runPipeline(ctx context.Context, g *globalOptions, opts runOptions, hooks deployHooks) error {
	if err := checkout.ValidateRev(opts.Rev); err != nil {
		return usageError(err)
	}
	src, err := repoSource(opts)
	if err != nil {
		return err
	}
	if err := opts.Store.Validate(); err != nil {
		return usageError(err)
	}
	if err := opts.Nix.Validate(); err != nil {
		return usageError(err)
	}
	if opts.LXCBuilder != projection.LXCNixpkgs && opts.LXCBuilder != projection.LXCNixosGenerators {
		return usageError(fmt.Errorf("--lxc-builder %q: want %s or %s", opts.LXCBuilder, projection.LXCNixpkgs, projection.LXCNixosGenerators))
	}
	deploy := !opts.ValidateOnly
	if deploy {
		if err := validateDeploy(ctx, &opts); err != nil {
			return err
		}
	}

	st, err := store.Open(ctx, opts.Store, g.logger)
	if err != nil {
		return &exitError{code: exitInfra, err: err}
	}
	defer st.Close()
	nix, err := nixrunner.New(ctx, opts.Nix, g.logger)
	if err != nil {
		return &exitError{code: exitInfra, err: err}
	}

	runLog, err := openRunLog(opts.Store.DataDir)
	if err != nil {
		return &exitError{code: exitInfra, err: err}
	}
	defer runLog.Close()
	nix = nix.WithLog(runLog)

	dataDir := opts.Store.DataDir
	plan := []pipeline.Stage{
		stages.Checkout{Cache: &checkout.Cache{Dir: dataDir, Logger: g.logger}, Source: src, WorkDir: filepath.Join(dataDir, "work"),
			Deployed: lastDeployed{st}, AllowForcePush: opts.AllowForcePush},
		stages.Generate{Events: opts.Events, Options: projection.Options{LXCBuilder: opts.LXCBuilder}},
		stages.Check{Nix: nix, Cache: store.CheckCache{Store: st}},
		stages.Build{Nix: nix, Workers: opts.BuildWorkers, MemoryPerEval: opts.EvalMemoryMiB << 20},
	}
	if deploy {
		pool, err := remote.NewPool(opts.Remote, remote.Options{Logger: g.logger, Output: runLog, Nix: opts.Nix.Nix})
		if err != nil {
			return usageError(err)
		}
		defer pool.Close()
		var px remote.Proxmox
		if opts.Remote.ProxmoxHost != "" {
			host, err := pool.Client(opts.Remote.ProxmoxSSH(""))
			if err != nil {
				return usageError(err)
			}
			px = remote.NewPCT(host)
			if hooks.dryRun {
				px = dryRunProxmox{Proxmox: px, storage: opts.Remote.ProxmoxStorage}
			}
		}
		plan = append(plan,
			stages.Publish{Proxmox: px},
			stages.Rollout{Events: opts.Events, Nodes: hooks.nodes, Force: opts.Force, RevertAll: opts.RevertAll,
				Confirm: hooks.confirm, Done: hooks.done,
				Connect: func(_ context.Context, top *topology.Topology) (*rollout.Rollout, func(), error) {
					r, err := rollout.Connect(pool, top, opts.Remote, opts.Rollout, st, g.logger)
					return r, func() {}, err
				}})
	}
	plan = append(plan, stages.Cleanup{WorkDir: filepath.Join(dataDir, "work"), Keep: opts.KeepWorkspace})
	runner := &pipeline.Runner{
		Logger: g.logger,
		Output: runLog,
		Stages: plan,
		Timeouts: map[string]time.Duration{
			"checkout": opts.CheckoutTimeout, "generate": opts.GenerateTimeout,
			"check": opts.CheckTimeout, "build": opts.BuildTimeout,
			"publish": opts.PublishTimeout, "rollout": opts.RolloutTimeout,
		},
		CleanupTimeout: opts.CleanupTimeout,
		Parallel:       opts.BuildWorkers,
	}
	mode := progressPlain
	switch {
	case opts.JSON:
		mode = progressJSON
	case isTerminal(g.stdout) && !hooks.plain:
		mode = progressLive
	}
	prog := newProgress(g.stdout, mode)
	runner.Reporters = []pipeline.Reporter{st, prog}

	kind := pipeline.KindDeploy
	if !deploy {
		kind = pipeline.KindValidate
	}
	run := &pipeline.Run{ID: pipeline.NewRunID(), Repo: src.String(), Ref: opts.Rev, Trigger: pipeline.TriggerManual, Kind: kind}
	res, err := runner.Run(ctx, run)
	prog.Close()
	if err != nil {
		return &exitError{code: exitInfra, err: err}
	}
	if !opts.JSON {
		fmt.Fprintln(g.stdout)
		printSummary(g.stdout, res)
		fmt.Fprintf(g.stdout, "command output: %s\n", runLog.Name())
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

// runFailed is a failed run: its message is the run's, its cause the failing stage's error.
type runFailed struct {
	msg   string
	cause error
}

func (e *runFailed) Error() string { return e.msg }
func (e *runFailed) Unwrap() error { return e.cause }

// repoSource is the infrastructure repository of opts, checked.
func repoSource(opts runOptions) (checkout.Source, error) {
	src := checkout.Source{URL: opts.Repo, SSHKeyFile: opts.GitSSHKeyFile, KnownHostsFile: opts.GitKnownHosts}
	if opts.GitTokenFile != "" {
		tok, err := os.ReadFile(opts.GitTokenFile)
		if err != nil {
			return src, usageError(fmt.Errorf("git token: %w", err))
		}
		src.Token = strings.TrimSpace(string(tok))
	}
	if err := src.Validate(); err != nil {
		return src, usageError(err)
	}
	return src, nil
}

// validateDeploy checks what a deploy run needs beyond a validate run: SSH and the rollout's settings.
// Settings the environment gained since the flags were read (--lab sets the lab's) fill the SSH
// settings still empty.
func validateDeploy(ctx context.Context, opts *runOptions) error {
	if err := envconfig.ProcessWith(ctx, &envconfig.Config{Target: &opts.Remote, Lookuper: envconfig.OsLookuper()}); err != nil {
		return usageError(err)
	}
	if err := opts.Remote.Validate(); err != nil {
		return usageError(fmt.Errorf("deploying needs SSH to the nodes: %w", err))
	}
	if err := opts.Rollout.Validate(); err != nil {
		return usageError(err)
	}
	return nil
}

// openRunLog opens the file the commands' output of this run goes to.
func openRunLog(dataDir string) (*os.File, error) {
	dir := filepath.Join(dataDir, "logs")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	return os.CreateTemp(dir, time.Now().UTC().Format("20060102T150405Z")+"-*.log")
}

// isTerminal reports whether a stream (os.Stdin, os.Stdout, ...) is a terminal.
func isTerminal(stream any) bool {
	f, ok := stream.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
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
