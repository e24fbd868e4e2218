package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/sethvargo/go-envconfig"
	"github.com/spf13/cobra"

	"github.com/cimdeploy/cimdeploy/gitops/events"
	"github.com/cimdeploy/cimdeploy/gitops/projection"
	"github.com/cimdeploy/cimdeploy/gitops/topology"
	"github.com/cimdeploy/cimdeploy/pipeline"
)

// generateOptions configure `cimdeploy generate`; every field is also a CIMDEPLOY_* variable.
type generateOptions struct {
	Events     string `env:"CIMDEPLOY_EVENTS, default=events"`
	Out        string `env:"CIMDEPLOY_OUT, default=."`
	LXCBuilder string `env:"CIMDEPLOY_LXC_BUILDER, default=nixpkgs"`
	NixpkgsURL string `env:"CIMDEPLOY_NIXPKGS_URL"`
	Graph      string `env:"CIMDEPLOY_GRAPH"`
	Check      bool
	JSON       bool
}

// errDrift is the --check verdict when the files differ from the projection.
var errDrift = errors.New("generated files differ from the projection of the events")

func newGenerateCommand(g *globalOptions) *cobra.Command {
	var opts generateOptions
	envErr := envconfig.Process(context.Background(), &opts)
	cmd := &cobra.Command{
		Use:   "generate",
		Short: "Project the domain events into the cluster's Nix flake",
		Long: `Fold the domain events into a topology and write it as a Nix flake: flake.nix,
topology.nix, nixosModules/common.nix and the modules of the nodes' built-in roles
(nixosModules/nats-cluster.nix, nats-leaf.nix, storage.nix). Files are written atomically and only when
they change. A repository role's module (RoleDefined) is the repository's own file: it must be a regular
file under --out (no symlink, at most 1 MiB) and is never written.

With --check nothing is written: the command exits 1 and prints a unified diff when the files in --out
differ from the projection (the drift check for pull requests). With --json it prints the folded topology.
With --graph FILE the cluster's Mermaid flowchart (see cimdeploy graph) is one more file of the
projection, at FILE under --out (a Markdown document when FILE ends with .md): written with the flake and
compared by --check.
Problems in the events are all found in one run, each naming file, event and field; the first 20 are
printed, then how many more.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if envErr != nil {
				return usageError(envErr)
			}
			return runGenerate(cmd.Context(), g, opts)
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.Events, "events", opts.Events, "directory of event files (*.json, *.ndjson) [CIMDEPLOY_EVENTS]")
	f.StringVar(&opts.Out, "out", opts.Out, "directory the flake is written to [CIMDEPLOY_OUT]")
	f.StringVar(&opts.LXCBuilder, "lxc-builder", opts.LXCBuilder, "how LXC tarballs are built: nixpkgs (proxmox-lxc.nix) or nixos-generators (older pins) [CIMDEPLOY_LXC_BUILDER]")
	f.StringVar(&opts.NixpkgsURL, "nixpkgs-url", opts.NixpkgsURL, "flake URL of the nixpkgs input (default github:NixOS/nixpkgs/nixos-unstable) [CIMDEPLOY_NIXPKGS_URL]")
	f.StringVar(&opts.Graph, "graph", opts.Graph, "also write the Mermaid flowchart of the cluster to this path under --out (.md: Markdown) [CIMDEPLOY_GRAPH]")
	f.BoolVar(&opts.Check, "check", false, "write nothing; exit 1 with a diff when --out differs from the projection")
	f.BoolVar(&opts.JSON, "json", false, "print the folded topology as JSON and write nothing")
	return cmd
}

// project loads and folds the events under dir and renders the flake.
func project(ctx context.Context, dir string, opts projection.Options) (*topology.Topology, []projection.File, error) {
	evs, problems := events.Load(ctx, dir)
	t, more := topology.Fold(evs)
	if problems = append(problems, more...); len(problems) > 0 {
		return nil, nil, problems
	}
	files, err := projection.Render(t, opts)
	if err != nil {
		return nil, nil, err
	}
	return t, files, nil
}

func runGenerate(ctx context.Context, g *globalOptions, opts generateOptions) error {
	if opts.Check && opts.JSON {
		return usageError(errors.New("--check and --json exclude each other"))
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	t, files, err := project(ctx, opts.Events, projection.Options{LXCBuilder: opts.LXCBuilder, NixpkgsURL: opts.NixpkgsURL})
	if cerr := ctx.Err(); cerr != nil { // interrupted while reading: nothing is written
		return cerr
	}
	if err != nil {
		var ps events.Problems
		if errors.As(err, &ps) {
			return problemList{ps}
		}
		if !errors.Is(err, projection.ErrIncomplete) {
			return usageError(err)
		}
		return err
	}
	if opts.Graph != "" {
		f, err := graphFile(t, opts.Graph)
		if err != nil {
			return usageError(err)
		}
		files = append(files, f)
	}
	switch {
	case opts.JSON:
		enc := json.NewEncoder(g.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(t)
	case opts.Check:
		diff, err := projection.Diff(opts.Out, files)
		if err != nil {
			return &exitError{code: exitInfra, err: err}
		}
		if diff != "" {
			io.WriteString(g.stdout, diff)
			return fmt.Errorf("%w (%s); run `cimdeploy generate --events %s --out %s`", errDrift, opts.Out, opts.Events, opts.Out)
		}
		fmt.Fprintf(g.stdout, "%s is up to date with the events (sequence %d)\n", opts.Out, t.Sequence)
		return nil
	default:
		changed, err := projection.Write(opts.Out, files)
		if err != nil {
			return &exitError{code: exitInfra, err: err}
		}
		if len(changed) == 0 {
			fmt.Fprintf(g.stdout, "%s is up to date with the events (sequence %d, %d nodes)\n", opts.Out, t.Sequence, len(t.Nodes))
			return nil
		}
		fmt.Fprintf(g.stdout, "wrote %s in %s (sequence %d, %d nodes)\n", strings.Join(changed, ", "), opts.Out, t.Sequence, len(t.Nodes))
		return nil
	}
}

// problemList is the problems of the events as the command prints them: the first shownProblems,
// then how many more. It unwraps to the whole list.
type problemList struct{ ps events.Problems }

func (p problemList) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d problem(s) in the events:", len(p.ps))
	for _, pr := range p.ps[:min(len(p.ps), shownProblems)] {
		fmt.Fprintf(&b, "\n  %s", pipeline.Truncate(pr.String(), 300))
	}
	if more := len(p.ps) - shownProblems; more > 0 {
		fmt.Fprintf(&b, "\n  and %d more", more)
	}
	return b.String()
}

func (p problemList) Unwrap() error { return p.ps }
