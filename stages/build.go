package stages

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"

	"github.com/cimdeploy/cimdeploy/nixrunner"
	"github.com/cimdeploy/cimdeploy/pipeline"
)

// Build builds every node's toplevel and LXC tarball in parallel workers. A node whose outputs are
// already in the store is not rebuilt: nix evaluates it once and finds nothing to build (the step says
// "cached"). A failing node fails the stage; the other nodes' builds finish.
type Build struct {
	Nix Nix
	// Workers bounds concurrent builds; 0 picks min(CPUs, available memory / MemoryPerEval).
	Workers int
	// MemoryPerEval is the memory one evaluation needs (default 512 MiB).
	MemoryPerEval int64
	// System is the packages' system (default x86_64-linux).
	System string
}

// Name implements pipeline.Stage.
func (Build) Name() string { return "build" }

// Attributes of a node's outputs in the generated flake.
func toplevelAttr(node string) string {
	return "nixosConfigurations." + node + ".config.system.build.toplevel"
}
func tarballAttr(system, node string) string { return "packages." + system + "." + node + "-lxc" }

// Run implements pipeline.Stage.
func (b Build) Run(ctx context.Context, s *pipeline.StageRun) error {
	run := s.Run
	if len(run.Nodes) == 0 {
		return errors.New("no nodes to build: the generate stage did not run")
	}
	system := b.System
	if system == "" {
		system = "x86_64-linux"
	}
	workers := b.workers()
	s.Logger.Info("building", "nodes", len(run.Nodes), "workers", workers)
	return s.EachLimit(ctx, run.Nodes, workers, func(ctx context.Context, st *pipeline.Step) error {
		attrs := []string{toplevelAttr(st.Node), tarballAttr(system, st.Node)}
		// One Build per node (a nix call per output, nixrunner.Build): nix builds only the outputs
		// that are not in the store yet; when it builds nothing, the node was cached.
		builds := 0
		built, err := b.Nix.Build(ctx, run.Workspace, attrs, func(p nixrunner.Progress) {
			if p.Line != "" {
				fmt.Fprintln(st.Output, p.Line)
			}
			// Nix announces the outputs it may build and drops those already valid; what it finished
			// building is what counts.
			builds = max(builds, p.Done)
			if p.Expected > 0 {
				st.Progress(ctx, p.Done, p.Expected, p.Activity)
			}
		})
		if err != nil {
			return located("build", st.Node, err)
		}
		art := pipeline.Artifact{Cached: builds == 0}
		var machines []string // remote builders Nix sent derivations to
		for _, bl := range built {
			for _, m := range bl.Machines {
				if !slices.Contains(machines, m) {
					machines = append(machines, m)
				}
			}
			switch bl.Attr {
			case attrs[0]:
				art.Toplevel = bl.Outputs["out"]
			case attrs[1]:
				art.Tarball = bl.Outputs["out"]
			}
		}
		if art.Toplevel == "" || art.Tarball == "" {
			return located("build", st.Node, fmt.Errorf("nix build returned no output for %v", attrs))
		}
		if art.Cached {
			st.Note("cached")
		} else if len(machines) > 0 {
			st.Note("built %d derivations, on %s", builds, strings.Join(machines, ", "))
		} else {
			st.Note("built %d derivations", builds)
		}
		s.Built(ctx, st.Node, art)
		return nil
	})
}

func (b Build) workers() int {
	if b.Workers > 0 {
		return b.Workers
	}
	per := b.MemoryPerEval
	if per <= 0 {
		per = 512 << 20
	}
	n := runtime.NumCPU()
	if avail, ok := memAvailable(); ok {
		n = min(n, max(1, int(avail/per)))
	}
	return n
}

// memAvailable reads MemAvailable from /proc/meminfo.
func memAvailable() (int64, bool) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "MemAvailable:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10, err == nil
		}
	}
	return 0, false
}
