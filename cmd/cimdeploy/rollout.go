package main

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/cimdeploy/cimdeploy/deploy"
	"github.com/cimdeploy/cimdeploy/nixrunner"
	"github.com/cimdeploy/cimdeploy/pipeline"
	"github.com/cimdeploy/cimdeploy/rollout"
)

// rolloutOptions configure `cimdeploy rollout`: a deploy run of some or all nodes, with a plan to
// confirm.
type rolloutOptions struct {
	cfg    deploy.Config
	force  bool
	nodes  []string
	all    bool
	noWait bool
	// destroyRemoved destroys the containers of the nodes the events removed (after the question).
	destroyRemoved bool
	// recreate recreates the nodes' containers, keeping (keepData) or wiping (wipeData) their data.
	recreate, keepData, wipeData bool
	confirm
}

// confirm is how a plan is confirmed and shown.
type confirm struct {
	yes    bool
	dryRun bool
	json   bool
}

func newRolloutCommand(g *globalOptions) *cobra.Command {
	var opts rolloutOptions
	var envErr error
	opts.cfg, envErr = deploy.Load(context.Background(), nil)
	cmd := &cobra.Command{
		Use:   "rollout (--node NAME... | --all) [--rev REV] [--yes] [--dry-run]",
		Short: "Build a commit and switch the NATS cluster to it, node by node, behind health gates",
		Long: `Build a commit of the infrastructure repository (as cimdeploy run does) and switch nodes to it, one at
a time: followers first, the JetStream meta leader last; new nodes (no container yet) are created from
their template first. Before any node is touched, every node must be healthy and clustered, and each node
to switch must run what cimdeploy last deployed there (--force overrides both).

Nodes the events removed (NodeRemoved) that the cluster still has are taken out after a rollout of every
remaining node (--all): the streams on the node must each have a current copy on another server (an R1
stream on it refuses the removal, naming the stream); then it is stopped (pct stop on its Proxmox host,
or systemctl stop nats.service), removed from the JetStream meta group ($JS.API.SERVER.REMOVE, which
needs the system account: --system-creds-file or CIMDEPLOY_ROLLOUT_SYSTEM_USER), the remaining nodes
are gated without it, and it is recorded as removed. Its container is kept unless --destroy-removed
(pct destroy --purge 1), which is confirmed like the plan.

--recreate --node N destroys N's container and creates it anew from its template (pct stop, pct destroy,
pct create, pct start), then gates it; --keep-data carries its JetStream store over (copied out of the
stopped container's rootfs with pct mount, and into the new one before its first start), --wipe-data
starts it empty (refused while a stream has its only current copy there). One of the two is required.

Per node: copy the closure; arm a dead-man timer on the node (systemd-run --on-active) that switches it
back to its previous generation unless the controller confirms in time (--confirm-timeout); set the
system profile; activate in a transient unit (a dropped SSH connection cannot stop it); gate: /healthz
200, /varz remotes = cluster size - 1, a JetStream meta leader, a ping from every server with
--system-creds-file, and a new SSH connection finding the new system; then disarm. A node that fails is
rolled back to its previous generation, the failed generation is deleted, the commit is recorded as failed
for that node (not retried until a newer commit) and the rollout halts; --revert-all also reverts the nodes
already switched. A rollback is a failure: the exit code is 1.

Several NATS clusters roll in waves: each cluster one member at a time (its meta leader last), different
clusters side by side; a hub cluster's leaf nodes after the hub when both change, in batches of their
role's max_unavailable; nodes of other roles (storage, repository roles) in batches of theirs; at most
--max-parallel nodes at once. A failure halts its group and the groups after it that depend on it; the
other groups finish the node in flight and stop, or go on to their end with --keep-going. The summary says
which commit each node runs, and the rollout's wall time beside its critical path.

The plan (node, current generation and commit, target, action, closure diff, waves) is printed first and,
on a terminal, confirmed; --yes skips the question, --dry-run stops after the plan.

--mode test activates without making the new system the boot default (no generation: a canary, reverted
with switch-to-configuration test); --mode boot sets the boot default and restarts the container (pct
reboot). A node whose switch inhibitors (system.switch.inhibitors) change is booted and restarted even in
switch mode, as the plan says.

Exit codes: 0 success, 1 the rollout failed or was refused, 2 usage or configuration error, 3
infrastructure error, 130 interrupted.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := bindFlags(cmd, &opts.cfg, envErr); err != nil {
				return err
			}
			return runRollout(cmd.Context(), g, opts)
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&opts.nodes, "node", nil, "a node to switch (repeatable, or comma-separated)")
	f.BoolVar(&opts.all, "all", false, "switch every node")
	f.BoolVarP(&opts.yes, "yes", "y", false, "do not ask for confirmation")
	f.BoolVar(&opts.dryRun, "dry-run", false, "print the plan and stop: change nothing")
	f.BoolVar(&opts.json, "json", false, "print the run's events and the plan as JSON lines")
	f.BoolVar(&opts.destroyRemoved, "destroy-removed", false, "destroy the containers of the nodes the events removed (pct destroy --purge), once taken out of the cluster")
	f.BoolVar(&opts.recreate, "recreate", false, "destroy the --node containers and create them anew from their templates (needs --keep-data or --wipe-data)")
	f.BoolVar(&opts.keepData, "keep-data", false, "with --recreate: carry each node's JetStream store over to its new container")
	f.BoolVar(&opts.wipeData, "wipe-data", false, "with --recreate: start each node with an empty JetStream store (refused while a stream has its only copy there)")
	f.BoolVar(&opts.noWait, "no-wait", false, "refuse to switch while another deploy (serve's or a command's) is in progress, instead of waiting for it")
	addPipelineFlags(f, &opts.cfg, pipelineRev, &opts.force)
	addModeFlag(f, &opts.cfg.Rollout)
	addLabFlags(f, &opts.cfg, "roll out on the local lab (its repository, nodes and Proxmox host)")
	return cmd
}

func runRollout(ctx context.Context, g *globalOptions, opts rolloutOptions) error {
	if opts.cfg.Lab {
		if err := useLab(ctx, g, &opts.cfg); err != nil {
			return err
		}
	}
	switch {
	case opts.cfg.Repo == "":
		return usageError(errors.New("--repo is required (a local path or a URL)"))
	case len(opts.nodes) == 0 && !opts.all:
		return usageError(errors.New("name the nodes to switch (--node nats-2) or pass --all"))
	case len(opts.nodes) > 0 && opts.all:
		return usageError(errors.New("--node and --all: pass one"))
	case opts.recreate && (opts.all || len(opts.nodes) == 0):
		return usageError(errors.New("--recreate needs the nodes named (--node nats-2), not --all"))
	case opts.recreate && opts.keepData == opts.wipeData:
		return usageError(errors.New("--recreate: pass --keep-data or --wipe-data (one of them)"))
	case !opts.recreate && (opts.keepData || opts.wipeData):
		return usageError(errors.New("--keep-data and --wipe-data go with --recreate"))
	case !opts.yes && !opts.dryRun && !isTerminal(g.stdin):
		return usageError(errors.New("standard input is not a terminal, so the plan cannot be confirmed: pass --yes (or --dry-run)"))
	}
	var res *rollout.Result
	ropts := deploy.RunOptions{Nodes: opts.nodes, Force: opts.force, DryRun: opts.dryRun, DestroyRemoved: opts.destroyRemoved,
		Recreate: opts.recreate, KeepData: opts.keepData,
		Confirm: func(ctx context.Context, plan *rollout.Plan) (bool, error) {
			return confirmPlan(ctx, g, opts.cfg.Nix, opts.confirm, plan)
		},
		Done: func(r *rollout.Result) { res = r }}
	err := runPipeline(ctx, g, &opts.cfg, pipeline.KindDeploy, ropts, pipelineOutput{json: opts.json, plain: true, noWait: opts.noWait})
	if !opts.json {
		printNodeCommits(g.stdout, res)
	}
	return err
}

// confirmPlan prints the plan with the closure diffs the local store can tell and asks whether to go
// ahead: no with --dry-run, yes with --yes, the answer on a terminal otherwise.
func confirmPlan(ctx context.Context, g *globalOptions, nixCfg nixrunner.Config, c confirm, plan *rollout.Plan) (bool, error) {
	if nix, err := nixrunner.New(ctx, nixCfg, g.logger); err == nil {
		addDiffs(ctx, nix, plan)
	}
	if c.json {
		if err := json.NewEncoder(g.stdout).Encode(map[string]any{"plan": plan}); err != nil {
			return false, err
		}
	} else {
		printPlan(g.stdout, plan)
	}
	switch {
	case c.dryRun:
		fmt.Fprintln(g.stderr, "dry run: nothing changed")
		return false, nil
	case plan.Refused():
		return true, nil // the rollout refuses and says why: nothing to confirm
	case plan.Changes() == 0:
		return true, nil
	case c.yes:
		return true, nil
	}
	return ask(ctx, g, question(plan))
}

// ask asks a yes/no question on the terminal; anything but y or yes is no. An interrupt while it waits
// returns the context's error (the read is left to end with the process).
func ask(ctx context.Context, g *globalOptions, question string) (bool, error) {
	fmt.Fprint(g.stdout, question)
	type answer struct {
		line string
		err  error
	}
	answered := make(chan answer, 1)
	go func() {
		line, err := bufio.NewReader(g.stdin).ReadString('\n')
		answered <- answer{line, err}
	}()
	var line string
	select {
	case <-ctx.Done():
		fmt.Fprintln(g.stdout)
		return false, context.Cause(ctx)
	case a := <-answered:
		if a.err != nil && !errors.Is(a.err, io.EOF) {
			return false, a.err
		}
		line = a.line
	}
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return true, nil
	}
	fmt.Fprintln(g.stdout, "not confirmed: nothing changed")
	return false, nil
}

// addDiffs fills in each node's closure diff from the system it runs to its target, where the local
// store has both (nix store diff-closures).
func addDiffs(ctx context.Context, nix *nixrunner.Runner, plan *rollout.Plan) {
	for i := range plan.Nodes {
		np := &plan.Nodes[i]
		if np.Current == "" || np.Target == "" || np.Current == np.Target || np.Action == rollout.ActionSkip {
			continue
		}
		valid, err := nix.Valid(ctx, np.Current, np.Target)
		if err != nil || !valid[np.Current] || !valid[np.Target] {
			continue
		}
		if d, err := nix.DiffClosures(ctx, np.Current, np.Target); err == nil {
			np.Diff = cmp.Or(d, "no package changes (versions and sizes are the same)")
		}
	}
}

// printPlan writes the plan as a table, the problems that refuse it, and the closure diffs.
func printPlan(w io.Writer, plan *rollout.Plan) {
	what := "commit " + short(plan.Commit)
	if plan.Commit == "" {
		what = "each node's own target"
	}
	fmt.Fprintf(w, "rollout plan %s: %s, JetStream meta leader %s, %d of %d node(s) to change\n",
		plan.RunID, what, orNone(plan.Leader), plan.Changes(), len(plan.Nodes)+len(plan.Removals))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tACTION\tCURRENT\tTARGET\tWHY")
	for _, np := range plan.Nodes {
		node := np.Node
		if np.Leader {
			node += " (leader)"
		}
		cur := "-"
		if np.Current != "" {
			cur = fmt.Sprintf("gen %d, commit %s", np.CurrentGeneration, orNone(short(np.CurrentCommit)))
		}
		target := fmt.Sprintf("%s, commit %s", storeName(np.Target), orNone(short(np.TargetCommit)))
		if np.TargetGeneration != 0 {
			target = fmt.Sprintf("gen %d, commit %s", np.TargetGeneration, orNone(short(np.TargetCommit)))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", node, np.Action, cur, target, np.Reason)
	}
	tw.Flush()
	printWaves(w, plan)
	printMode(w, plan)
	printRemovals(w, plan)
	if len(plan.Problems) > 0 {
		fmt.Fprintln(w, "\npre-flight refuses the rollout (--force overrides):")
		for _, p := range plan.Problems {
			fmt.Fprintf(w, "  - %s\n", p)
		}
	}
	for _, np := range plan.Nodes {
		if np.Diff != "" {
			fmt.Fprintf(w, "\n%s: nix store diff-closures %s %s\n  %s\n", np.Node, storeName(np.Current), storeName(np.Target),
				strings.ReplaceAll(np.Diff, "\n", "\n  "))
		}
	}
	fmt.Fprintln(w)
}

// printWaves writes the plan's waves: what goes side by side (each NATS cluster one member at a
// time, the meta leader last; leaves and other roles in batches), and what waits for what.
func printWaves(w io.Writer, plan *rollout.Plan) {
	if len(plan.Waves) == 0 {
		return
	}
	fmt.Fprintf(w, "\nwaves: %d group(s), at most %d node(s) at once", len(plan.Groups), plan.MaxParallel)
	for _, g := range plan.Groups {
		if len(g.After) > 0 {
			fmt.Fprintf(w, "; %s after %s", g.Name, strings.Join(g.After, ", "))
		}
	}
	fmt.Fprintln(w)
	for _, wave := range plan.Waves {
		steps := make([]string, len(wave.Steps))
		for i, st := range wave.Steps {
			steps[i] = st.Group + ": " + strings.Join(st.Nodes, " ")
		}
		fmt.Fprintf(w, "  %3d  %s\n", wave.Number, strings.Join(steps, "  |  "))
	}
}

// printNodeCommits writes what the rollout left on each node (its commit, how its step ended), the
// groups that did not succeed and why, and the wall time beside the critical path.
func printNodeCommits(w io.Writer, res *rollout.Result) {
	if res == nil || len(res.Nodes) == 0 {
		return
	}
	reverted := map[string]bool{}
	for _, n := range res.Reverted {
		reverted[n.Node] = n.Status == rollout.StatusSuccess
	}
	fmt.Fprintf(w, "\nrollout %s %s in %s, critical path %s", res.RunID, res.Status, res.Duration.Round(time.Millisecond),
		res.CriticalPath.Round(time.Millisecond))
	if res.CriticalPath > 0 {
		fmt.Fprintf(w, " (%.2fx)", float64(res.Duration)/float64(res.CriticalPath))
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tGROUP\tSTATUS\tRUNS COMMIT")
	for _, n := range res.Nodes {
		status := string(n.Status)
		switch {
		case n.RolledBack:
			status += ", rolled back"
		case reverted[n.Node]:
			status += ", reverted"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", n.Node, cmp.Or(n.Group, "-"), status, orNone(short(n.Commit)))
	}
	tw.Flush()
	for _, g := range res.Groups {
		if g.Status != rollout.StatusSuccess {
			fmt.Fprintf(w, "  %s %s: %s\n", g.Name, g.Status, firstLine(g.Why))
		}
	}
}

// storeName is a store path without /nix/store/<hash>-.
func storeName(p string) string {
	const prefix = "/nix/store/"
	if strings.HasPrefix(p, prefix) && len(p) > len(prefix)+33 {
		return p[len(prefix)+33:]
	}
	return p
}

func orNone(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}
