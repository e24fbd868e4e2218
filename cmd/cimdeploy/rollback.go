package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/spf13/cobra"

	"github.com/cimdeploy/cimdeploy/deploy"
	"github.com/cimdeploy/cimdeploy/pipeline"
	"github.com/cimdeploy/cimdeploy/rollout"
)

// rollbackOptions configure `cimdeploy rollback`.
type rollbackOptions struct {
	cfg          deploy.Config
	force        bool
	nodes        []string
	all          bool
	toGeneration int
	toRev        string
	noWait       bool
	confirm
}

func newRollbackCommand(g *globalOptions) *cobra.Command {
	var opts rollbackOptions
	var envErr error
	opts.cfg, envErr = deploy.Load(context.Background(), nil)
	cmd := &cobra.Command{
		Use:   "rollback (--node NAME... | --all) [--to-generation N | --to-rev SHA]",
		Short: "Switch nodes back to an earlier generation, node by node, behind the same health gates",
		Long: `Switch nodes back to an earlier generation of their system profile: the one before the generation they
run (default), generation N (--to-generation), or the newest generation built from a commit (--to-rev,
a prefix of at least 7 hex digits; the commit comes from the system's configuration revision or the
deployments the state store recorded). Nothing is built or copied: the generation is on the node.

It goes like a rollout (see cimdeploy rollout --help): pre-flight, one node at a time with the meta leader
last, a dead-man timer, activation in a transient unit, the health gate; a node that fails is returned to
the generation it ran. The topology comes from the repository's events at --rev.

Exit codes: 0 success, 1 failed or refused, 2 usage or configuration error, 3 infrastructure error,
130 interrupted.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := bindFlags(cmd, &opts.cfg, envErr); err != nil {
				return err
			}
			return runRollback(cmd.Context(), g, opts)
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&opts.nodes, "node", nil, "a node to roll back (repeatable, or comma-separated)")
	f.BoolVar(&opts.all, "all", false, "roll back every node")
	f.IntVar(&opts.toGeneration, "to-generation", 0, "the generation to switch to (default: the one before the running one)")
	f.StringVar(&opts.toRev, "to-rev", "", "switch to the newest generation built from this commit")
	f.BoolVarP(&opts.yes, "yes", "y", false, "do not ask for confirmation")
	f.BoolVar(&opts.dryRun, "dry-run", false, "print the plan and stop: change nothing")
	f.BoolVar(&opts.json, "json", false, "print the plan and the result as JSON")
	f.BoolVar(&opts.noWait, "no-wait", false, "refuse to switch while a deploy (serve's or a command's) is in progress, instead of waiting for it")
	addClusterFlags(f, &opts.cfg)
	addNixFlags(f, &opts.cfg.Nix) // the closure diffs of the plan
	addRolloutFlags(f, &opts.cfg, &opts.force)
	return cmd
}

func runRollback(ctx context.Context, g *globalOptions, opts rollbackOptions) error {
	switch {
	case opts.toGeneration != 0 && opts.toRev != "":
		return usageError(errors.New("--to-generation and --to-rev: pass one"))
	case opts.toGeneration < 0:
		return usageError(fmt.Errorf("--to-generation %d: want a generation number", opts.toGeneration))
	case opts.toRev != "" && !commitID.MatchString(strings.ToLower(opts.toRev)):
		return usageError(fmt.Errorf("--to-rev %q: want a commit id (at least 7 hex digits)", opts.toRev))
	case !opts.yes && !opts.dryRun && !isTerminal(g.stdin):
		return usageError(errors.New("standard input is not a terminal, so the plan cannot be confirmed: pass --yes (or --dry-run)"))
	}
	c, err := openCluster(ctx, g, &opts.cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	nodes, err := clusterNodes(c.Topology, opts.nodes, opts.all)
	if err != nil {
		return err
	}
	var targets []rollout.Target
	for _, node := range nodes {
		t, err := rollbackTarget(ctx, c, node, opts.toGeneration, strings.ToLower(opts.toRev))
		if err != nil {
			return err
		}
		targets = append(targets, t)
	}
	plan, err := c.Rollout.Plan(ctx, rollout.Request{RunID: pipeline.NewRunID(), Targets: targets, Force: opts.force, RevertAll: opts.cfg.RevertAll})
	if err != nil {
		return &exitError{code: exitInfra, err: err}
	}
	ok, err := confirmPlan(ctx, g, opts.cfg.Nix, opts.confirm, plan)
	if err != nil || !ok {
		return err
	}
	// A rollback switches nodes like a deploy: one at a time per cluster, serve's deploys included.
	release, ctx, err := holdDeployLock(ctx, g, c.Store(), opts.noWait)
	if err != nil {
		return err
	}
	defer release()
	res := c.Rollout.Run(ctx, plan, &lineTracker{w: g.stderr})
	return rolloutExit(g, res, opts.json)
}

// commitID is a commit id or a prefix of one (at least 7 hex digits).
var commitID = regexp.MustCompile(`^[0-9a-f]{7,64}$`)

// rollbackTarget is the generation node goes back to.
func rollbackTarget(ctx context.Context, c *deploy.Cluster, node string, toGen int, toRev string) (rollout.Target, error) {
	gens, err := c.Generations(ctx, node)
	if err != nil {
		return rollout.Target{}, &exitError{code: exitInfra, err: err}
	}
	running := 0
	var have []string
	for _, g := range gens {
		if g.Running {
			running = g.Number
		}
		have = append(have, fmt.Sprint(g.Number))
	}
	var found *deploy.NodeGeneration
	for i := range gens {
		g := &gens[i]
		switch {
		case toGen != 0 && g.Number == toGen,
			toRev != "" && strings.HasPrefix(g.Commit, toRev),
			toGen == 0 && toRev == "" && g.Number < running:
			found = g // the newest that fits: generations are oldest first
		}
	}
	if found == nil {
		why := fmt.Sprintf("no generation before the running one (%d)", running)
		switch {
		case toGen != 0:
			why = fmt.Sprintf("no generation %d", toGen)
		case toRev != "":
			why = "no generation built from commit " + toRev
		}
		return rollout.Target{}, &exitError{code: exitFailed, err: fmt.Errorf("%s has %s (it has %s)", node, why, strings.Join(have, ", "))}
	}
	return rollout.Target{Node: node, Toplevel: found.Toplevel, Generation: found.Number, Commit: found.Commit}, nil
}

// rolloutExit prints a rollout's result and turns it into the exit code: anything but success,
// a rollback included, is a failure.
func rolloutExit(g *globalOptions, res *rollout.Result, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(g.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(res); err != nil {
			return err
		}
	} else {
		printRolloutResult(g, res)
	}
	switch res.Status {
	case rollout.StatusSuccess:
		return nil
	case rollout.StatusCancelled:
		return &exitError{code: exitCanceled, err: errors.New(res.Error)}
	}
	return &exitError{code: exitFailed, err: fmt.Errorf("%s: %s", res.Status, res.Error)}
}

func printRolloutResult(g *globalOptions, res *rollout.Result) {
	fmt.Fprintf(g.stdout, "%-10s %-10s %-10s %-12s %-11s %-9s %s\n", "NODE", "ACTION", "STATUS", "GENERATION", "ACTIVATION", "REJOIN", "DETAIL")
	for _, n := range res.Nodes {
		detail := n.Error
		if n.RolledBack {
			detail = "rolled back: " + detail
		}
		fmt.Fprintf(g.stdout, "%-10s %-10s %-10s %-12s %-11s %-9s %s\n", n.Node, n.Action, n.Status, genLabel(n),
			n.Activation.Round(1e6), n.Rejoin.Round(1e6), firstLine(detail))
	}
	for _, n := range res.Reverted {
		fmt.Fprintf(g.stdout, "%-10s %-10s %-10s %-12s %-11s %-9s %s\n", n.Node, "revert", n.Status, genLabel(n),
			n.Activation.Round(1e6), n.Rejoin.Round(1e6), firstLine(n.Error))
	}
	fmt.Fprintf(g.stdout, "\nrollout %s %s in %s\n", res.RunID, res.Status, res.Duration.Round(1e6))
}

func genLabel(n rollout.NodeResult) string {
	if n.Generation == 0 {
		return "-"
	}
	if n.FromGeneration != 0 && n.FromGeneration != n.Generation {
		return fmt.Sprintf("%d -> %d", n.FromGeneration, n.Generation)
	}
	return fmt.Sprint(n.Generation)
}
