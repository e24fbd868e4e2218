package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"text/tabwriter"

	"github.com/sethvargo/go-envconfig"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// generationsOptions configure `cimdeploy generations`.
type generationsOptions struct {
	runOptions
	Node string
}

func newGenerationsCommand(g *globalOptions) *cobra.Command {
	var opts generationsOptions
	envErr := envconfig.Process(context.Background(), &opts.runOptions)
	cmd := &cobra.Command{
		Use:   "generations --node NAME [--json]",
		Short: "List a node's system generations: number, date, current, running, the commit each came from",
		Long: `List the generations of a node's system profile over SSH: the number, when it was made, whether it is the
profile's current one (the boot default) and whether the node runs it, and the commit it was built from:
the system's configuration revision (system.configurationRevision) or, when the system names none (a
build of a dirty tree), the deployment the state store recorded for that system.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if envErr != nil {
				return usageError(envErr)
			}
			if err := checkPositive(cmd, &opts); err != nil {
				return usageError(err)
			}
			return runGenerations(cmd.Context(), g, opts)
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.Node, "node", "", "the node")
	f.BoolVar(&opts.JSON, "json", false, "print the generations as JSON")
	addClusterFlags(f, &opts.runOptions)
	return cmd
}

// addClusterFlags are the flags of commands that act on the deployed cluster without building: the
// repository (for the topology), the state store, SSH and the rollout's settings, the lab.
func addClusterFlags(f *pflag.FlagSet, opts *runOptions) {
	f.StringVar(&opts.Repo, "repo", opts.Repo, "repository whose events describe the cluster [CIMDEPLOY_REPO]")
	f.StringVar(&opts.Rev, "rev", opts.Rev, "the revision whose events describe the cluster [CIMDEPLOY_REV]")
	f.StringVar(&opts.Events, "events", opts.Events, "events directory inside the repository [CIMDEPLOY_EVENTS]")
	f.StringVar(&opts.GitTokenFile, "git-token-file", opts.GitTokenFile, "file holding an HTTPS token for the repository [CIMDEPLOY_GIT_TOKEN_FILE]")
	f.StringVar(&opts.GitSSHKeyFile, "git-ssh-key-file", opts.GitSSHKeyFile, "SSH key for an ssh:// repository [CIMDEPLOY_GIT_SSH_KEY_FILE]")
	f.StringVar(&opts.GitKnownHosts, "git-known-hosts", opts.GitKnownHosts, "known_hosts for an ssh:// repository [CIMDEPLOY_GIT_KNOWN_HOSTS]")
	addNixFlags(f, &opts.Nix)
	addStoreFlags(f, &opts.Store)
	addRemoteFlags(f, &opts.Remote)
	addRolloutFlags(f, opts)
	f.BoolVar(&opts.Lab, "lab", false, "act on the local lab (its repository, nodes and Proxmox host)")
	f.StringVar(&opts.LabDir, "lab-dir", opts.LabDir, "the lab's directory, with --lab [CIMDEPLOY_LAB_DIR]")
}

func runGenerations(ctx context.Context, g *globalOptions, opts generationsOptions) error {
	if opts.Node == "" {
		return usageError(fmt.Errorf("--node is required"))
	}
	c, err := openCluster(ctx, g, &opts.runOptions)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.nodes([]string{opts.Node}, false); err != nil {
		return err
	}
	gens, err := c.generations(ctx, opts.Node)
	if err != nil {
		return err
	}
	if opts.JSON {
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
	return tw.Flush()
}

func mark(b bool) string {
	if b {
		return "*"
	}
	return ""
}
