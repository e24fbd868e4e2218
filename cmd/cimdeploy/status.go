package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/cimdeploy/cimdeploy/deploy"
	"github.com/cimdeploy/cimdeploy/fleet"
)

// statusOptions configure `cimdeploy status`.
type statusOptions struct {
	cfg  deploy.Config
	json bool
}

func newStatusCommand(g *globalOptions) *cobra.Command {
	var opts statusOptions
	var envErr error
	opts.cfg, envErr = deploy.Load(context.Background(), nil)
	cmd := &cobra.Command{
		Use:   "status [--json]",
		Short: "Show every node: its generation and commit, the desired commit, NATS health, hand-made changes",
		Long: `Look at every node of the cluster (the topology of the repository's events at --rev), all at once:
the generation it runs and the commit that came from, the desired commit (that of the last successful
deploy run of --rev in the state store, or the commit --rev names when none succeeded yet), the health of
its nats-server as the rollout's gate checks it (/healthz, routed to every other node, a JetStream meta
leader; with --system-creds-file every server answers a ping), and whether it was switched behind
cimdeploy's back (it runs another system than cimdeploy last deployed on it, which the next rollout
refuses without --force). Each node is bounded by --preflight-timeout; one that cannot be reached is
shown as such.

Exit codes: 0 every node healthy, as deployed and at the desired commit; 1 a node is unreachable,
unhealthy, switched by hand or not at the desired commit (each one is named, with why); 2 usage or
configuration error; 3 the repository, the state store or another part of the infrastructure cimdeploy
itself needs failed; 130 interrupted.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := bindFlags(cmd, &opts.cfg, envErr); err != nil {
				return err
			}
			return runStatus(cmd.Context(), g, opts)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&opts.json, "json", false, "print the observation as JSON (the exit code is the same)")
	addClusterFlags(f, &opts.cfg)
	c := &opts.cfg.Rollout
	f.DurationVar(&c.PreflightTimeout, "preflight-timeout", c.PreflightTimeout, "bound on looking at one node [CIMDEPLOY_ROLLOUT_PREFLIGHT_TIMEOUT]")
	f.DurationVar(&c.HTTPTimeout, "nats-http-timeout", c.HTTPTimeout, "bound on one NATS monitoring request [CIMDEPLOY_ROLLOUT_HTTP_TIMEOUT]")
	f.StringVar(&c.SystemCredsFile, "system-creds-file", c.SystemCredsFile, "NATS system account credentials: every server must also answer a ping [CIMDEPLOY_ROLLOUT_SYSTEM_CREDS_FILE]")
	return cmd
}

func runStatus(ctx context.Context, g *globalOptions, opts statusOptions) error {
	c, err := openCluster(ctx, g, &opts.cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	src, err := opts.cfg.Source()
	if err != nil {
		return usageError(err)
	}
	f, err := fleet.Observe(ctx, fleet.FromCluster(c), fleet.Options{Repo: src.String(), Branch: opts.cfg.Rev, Logger: g.logger})
	if err != nil {
		return &exitError{code: exitInfra, err: err}
	}
	if opts.json {
		enc := json.NewEncoder(g.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(f); err != nil {
			return err
		}
	} else if err := printFleet(g, f, opts.cfg.Rev); err != nil {
		return err
	}
	var bad []string
	for _, n := range f.Nodes {
		if !n.OK() {
			bad = append(bad, n.Node)
		}
	}
	if len(bad) > 0 {
		return &exitError{code: exitFailed, err: fmt.Errorf("%d of %d nodes need attention: %s", len(bad), len(f.Nodes), strings.Join(bad, ", "))}
	}
	return nil
}

// printFleet prints the fleet as a table, then what is wrong, node by node.
func printFleet(g *globalOptions, f *fleet.Fleet, rev string) error {
	desired := "the commit " + rev + " names (no successful deploy of it recorded)"
	if f.DesiredRun != "" {
		desired = "the last successful deploy of " + rev + ", run " + f.DesiredRun
	}
	fmt.Fprintf(g.stdout, "desired commit %s: %s\n", short(f.Desired), desired)
	if f.Leader != "" {
		fmt.Fprintf(g.stdout, "JetStream meta leader: %s\n", f.Leader)
	}
	tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tGENERATION\tCOMMIT\tDESIRED\tHEALTH\tDRIFT")
	for _, n := range f.Nodes {
		gen, commit, drift := "-", "-", "-"
		if n.Reachable {
			gen, commit, drift = fmt.Sprint(n.Generation), orNone(short(n.Commit)), "no"
			if n.Drifted {
				drift = "switched by hand"
			}
			drift = testDrift(drift, n.Toplevel, n.Record)
		}
		health := "healthy"
		switch {
		case !n.Healthy && !n.Reachable:
			health = "unreachable"
		case !n.Healthy:
			health = "unhealthy"
		case n.Leader:
			health = "healthy (leader)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", n.Node, gen, commit, short(n.Desired), health, drift)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if problems := f.Problems(); len(problems) > 0 {
		fmt.Fprintln(g.stdout)
		for _, p := range problems {
			fmt.Fprintln(g.stdout, p)
		}
		return nil
	}
	fmt.Fprintf(g.stdout, "\nall %d nodes healthy, as deployed, at %s\n", len(f.Nodes), short(f.Desired))
	return nil
}
