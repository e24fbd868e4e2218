package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"text/tabwriter"
	"time"

	"github.com/sethvargo/go-envconfig"
	"github.com/spf13/cobra"

	"github.com/cimdeploy/cimdeploy/fixtures/lab"
)

// labOptions configure `cimdeploy lab`; Dir is also CIMDEPLOY_LAB_DIR.
type labOptions struct {
	Dir         string `env:"CIMDEPLOY_LAB_DIR, default=.cimdeploy/lab"`
	Nodes       int
	Clusters    int
	ClusterSize int
	Base        string
	SSHPort     int
	Timeout     time.Duration
	JSON        bool
}

func newLabCommand(g *globalOptions) *cobra.Command {
	var opts labOptions
	envErr := envconfig.Process(context.Background(), &opts)
	cmd := &cobra.Command{
		Use:   "lab",
		Short: "Run a lab of real programs on loopback in place of Proxmox and the NATS nodes",
		Long: `The lab stands in for the infrastructure, like kind does for Kubernetes: every node (nats-1..N) is
a real OpenSSH sshd on its own loopback address (127.0.0.11, .12, ...) in a private mount namespace
with its own Nix store, system profile and /run/current-system; its activation starts a real
nats-server clustered with the others. Bigger labs have several clusters (c1-1.., c2-1..) and leaves
(leaf-1..) attached to them: lab up --nodes 30 --clusters 3 --cluster-size 3. The Proxmox host pve (127.0.0.10) is an sshd with the pct shim.
Nodes are built from the flake cimdeploy generates, with real Nix against a stub nixpkgs.

  cimdeploy lab up        start the lab (idempotent) and wait until every node is healthy
  eval "$(cimdeploy lab env)"   point cimdeploy at it
  cimdeploy lab status    sshd, nats-server, health and memory of every host
  cimdeploy lab down      stop every process of the lab

The lab needs root and the Debian packages openssh-server, openssh-client, nats-server and nix-bin.`,
	}
	f := cmd.PersistentFlags()
	f.StringVar(&opts.Dir, "dir", opts.Dir, "lab directory [CIMDEPLOY_LAB_DIR]")
	f.BoolVar(&opts.JSON, "json", false, "print JSON")
	run := func(fn func(context.Context, *globalOptions, labOptions) error) func(*cobra.Command, []string) error {
		return func(cmd *cobra.Command, _ []string) error {
			if envErr != nil {
				return usageError(envErr)
			}
			if err := checkPositive(cmd, &opts); err != nil {
				return usageError(err)
			}
			return fn(cmd.Context(), g, opts)
		}
	}
	up := &cobra.Command{
		Use:   "up",
		Short: "Start the lab and wait until every node is healthy and clustered",
		Long: `Start the lab: host keys, sshd per host, the lab's flake built with real Nix, each node's closure
copied over SSH, its system profile set and activated. Returns when every nats-server answers /healthz
and is wired as its role says: a cluster member routed to the other members of its cluster, a leaf
connected to its hub cluster.

--nodes N alone is one cluster of N nodes (nats-1..N). With --clusters C and --cluster-size S the
lab has C clusters of S members (c1-1..c1-S, c2-1.., or nats-1..S for one cluster) and the nodes
beyond them are leaves (leaf-1..), attached to the clusters in turn; --nodes defaults to C x S.

A lab that is already up with the same layout is left as it is; what is left of a crashed one, or of
a lab of another layout, is stopped first.`,
		Args: noArgs,
		RunE: run(runLabUp),
	}
	uf := up.Flags()
	uf.IntVar(&opts.Nodes, "nodes", 0, "number of NATS nodes: cluster members, then leaves (default clusters x cluster size, 3)")
	uf.IntVar(&opts.Clusters, "clusters", 1, "number of NATS clusters")
	uf.IntVar(&opts.ClusterSize, "cluster-size", 0, "members of each cluster (default every node for one cluster, 3 for several)")
	uf.StringVar(&opts.Base, "base", lab.DefaultBase.String(), "the lab's /24 on loopback: pve at .10, nodes from .11")
	uf.IntVar(&opts.SSHPort, "ssh-port", lab.DefaultSSHPort, "port of every sshd")
	uf.DurationVar(&opts.Timeout, "timeout", 0, "how long lab up may take: boot, build, activate, wait for healthy nodes (default 1m30s, 10s more per node beyond 3)")
	cmd.AddCommand(up,
		&cobra.Command{Use: "status", Short: "Show every host of the lab", Args: noArgs, RunE: run(runLabStatus)},
		&cobra.Command{Use: "env", Short: "Print the settings that point cimdeploy at the lab", Args: noArgs, RunE: run(runLabEnv)},
		&cobra.Command{Use: "down", Short: "Stop every process of the lab", Args: noArgs, RunE: run(runLabDown)},
	)
	return cmd
}

// infraError marks err as an infrastructure error (exit 3).
func infraError(err error) error { return &exitError{code: exitInfra, err: err} }

func runLabUp(ctx context.Context, g *globalOptions, opts labOptions) error {
	base, err := netip.ParseAddr(opts.Base)
	if err != nil {
		return usageError(fmt.Errorf("--base: %w", err))
	}
	l, err := lab.New(lab.Options{Dir: opts.Dir, Nodes: opts.Nodes, Clusters: opts.Clusters, ClusterSize: opts.ClusterSize,
		Base: base, SSHPort: opts.SSHPort, Timeout: opts.Timeout, Logger: g.logger})
	if err != nil {
		return usageError(err)
	}
	rep, err := l.Up(ctx)
	if err != nil {
		return infraError(err)
	}
	if opts.JSON {
		return writeJSON(g.stdout, rep)
	}
	switch {
	case rep.AlreadyUp:
		fmt.Fprintf(g.stdout, "lab %s is already up\n", rep.Dir)
	default:
		if len(rep.Recovered) > 0 {
			fmt.Fprintf(g.stdout, "stopped %d processes left by an earlier lab\n", len(rep.Recovered))
		}
		fmt.Fprintf(g.stdout, "lab %s up in %s: %d nodes healthy and clustered (%s)\n", rep.Dir, rep.Duration.Round(time.Millisecond), len(l.Nodes()), rep.Layout)
		p := rep.Phases
		fmt.Fprintf(g.stdout, "  prepare %s, boot %s, build %s, activate %s, healthy %s\n", p.Prepare.Round(time.Millisecond),
			p.Boot.Round(time.Millisecond), p.Build.Round(time.Millisecond), p.Activate.Round(time.Millisecond), p.Ready.Round(time.Millisecond))
	}
	fmt.Fprintf(g.stdout, "next: eval \"$(cimdeploy lab env --dir %s)\"\n", rep.Dir)
	return nil
}

func runLabStatus(ctx context.Context, g *globalOptions, opts labOptions) error {
	l, err := lab.Open(opts.Dir, g.logger)
	if err != nil {
		return usageError(err)
	}
	st, err := l.Status(ctx)
	if err != nil {
		return infraError(err)
	}
	if opts.JSON {
		if err := writeJSON(g.stdout, st); err != nil {
			return err
		}
	} else {
		printLabStatus(g.stdout, st)
	}
	if !st.Up {
		return &exitError{code: exitFailed, err: fmt.Errorf("lab %s is not healthy", st.Dir)}
	}
	return nil
}

func printLabStatus(w io.Writer, st lab.Status) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tADDRESS\tROLE\tCLUSTER\tSSHD\tNATS\tHEALTHY\tROUTES\tLEAFNODES\tPROBLEM")
	pid := func(p int) string {
		if p == 0 {
			return "-"
		}
		return fmt.Sprint(p)
	}
	fmt.Fprintf(tw, "%s\t%s\tproxmox\t-\t%s\t-\t-\t-\t-\t%s\n", st.PVE.Name, st.PVE.Address, pid(st.PVE.SSHD), st.PVE.Problem)
	for _, n := range st.Nodes {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%t\t%d\t%d\t%s\n", n.Name, n.Address, n.Role, n.Cluster, pid(n.SSHD), pid(n.NATS),
			n.Healthy, n.Remotes, n.Leafnodes, n.Problem)
	}
	tw.Flush()
	fmt.Fprintf(w, "%s; %d processes, %.1f MiB resident\n", st.Layout, len(st.Processes), float64(st.RSSKiB)/1024)
}

func runLabEnv(_ context.Context, g *globalOptions, opts labOptions) error {
	l, err := lab.Open(opts.Dir, g.logger)
	if err != nil {
		return usageError(err)
	}
	if opts.JSON {
		env := map[string]string{}
		for _, e := range l.Env() {
			env[e.Name] = e.Value
		}
		return writeJSON(g.stdout, env)
	}
	_, err = io.WriteString(g.stdout, lab.ShellEnv(l.Env()))
	return err
}

func runLabDown(ctx context.Context, g *globalOptions, opts labOptions) error {
	l, err := lab.Open(opts.Dir, g.logger)
	if errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(g.stdout, "no lab in %s\n", opts.Dir)
		return nil
	}
	if err != nil {
		return usageError(err)
	}
	rep, err := l.Down(ctx)
	if err != nil {
		return infraError(err)
	}
	if opts.JSON {
		return writeJSON(g.stdout, rep)
	}
	fmt.Fprintf(g.stdout, "lab %s down: stopped %d processes\n", rep.Dir, len(rep.Stopped))
	return nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
