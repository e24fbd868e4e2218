package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/cimdeploy/cimdeploy/deploy"
)

// generationsOptions configure `cimdeploy generations`.
type generationsOptions struct {
	cfg  deploy.Config
	node string
	json bool
}

func newGenerationsCommand(g *globalOptions) *cobra.Command {
	var opts generationsOptions
	var envErr error
	opts.cfg, envErr = deploy.Load(context.Background(), nil)
	cmd := &cobra.Command{
		Use:   "generations --node NAME [--json]",
		Short: "List a node's system generations: number, date, current, running, the commit each came from",
		Long: `List the generations of a node's system profile over SSH: the number, when it was made, whether it is the
profile's current one (the boot default) and whether the node runs it, and the commit it was built from:
the system's configuration revision (system.configurationRevision) or, when the system names none (a
build of a dirty tree), the deployment the state store recorded for that system.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := bindFlags(cmd, &opts.cfg, envErr); err != nil {
				return err
			}
			return runGenerations(cmd.Context(), g, opts)
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.node, "node", "", "the node")
	f.BoolVar(&opts.json, "json", false, "print the generations as JSON")
	addClusterFlags(f, &opts.cfg)
	return cmd
}

// addClusterFlags are the flags of commands that act on the deployed cluster without building: the
// repository (for the topology), the state store, SSH, the lab.
func addClusterFlags(f *pflag.FlagSet, c *deploy.Config) {
	addRepoFlags(f, c, "repository whose events describe the cluster", "the revision whose events describe the cluster")
	addStoreFlags(f, &c.Store)
	addSSHFlags(f, &c.Remote)
	addLabFlags(f, c, "act on the local lab (its repository, nodes and Proxmox host)")
	addSystemNkeyFlag(f, &c.Rollout)
}

func runGenerations(ctx context.Context, g *globalOptions, opts generationsOptions) error {
	if opts.node == "" {
		return usageError(fmt.Errorf("--node is required"))
	}
	c, err := openCluster(ctx, g, &opts.cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := clusterNodes(c.Topology, []string{opts.node}, false); err != nil {
		return err
	}
	gens, err := c.Generations(ctx, opts.node)
	if err != nil {
		return &exitError{code: exitInfra, err: err}
	}
	if opts.json {
		enc := json.NewEncoder(g.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(gens)
	}
	tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "GENERATION\tDATE\tCURRENT\tRUNNING\tCOMMIT\tSYSTEM")
	for _, gen := range gens {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", gen.Number, gen.Date.Local().Format("2006-01-02 15:04:05"),
			mark(gen.Current), mark(gen.Running), orNone(short(cmp.Or(gen.Commit, gen.Revision))), storeName(gen.Toplevel))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	return printTestActivation(ctx, g.stdout, c, opts.node, gens)
}

func mark(b bool) string {
	if b {
		return "*"
	}
	return ""
}
