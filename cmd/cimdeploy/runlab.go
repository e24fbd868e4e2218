package main

import (
	"context"
	"fmt"
	"os"

	"github.com/cimdeploy/cimdeploy/fixtures/lab"
)

// applyLab points a run at the local lab: it brings the lab up when it is not (idempotent), brings the
// lab's infrastructure repository up to date, and fills in what `cimdeploy lab env` would: the
// repository, offline Nix and, for variables the user has not set, the lab's SSH identity,
// known_hosts and Proxmox host.
func applyLab(ctx context.Context, g *globalOptions, dir string, opts *runOptions) error {
	l, err := lab.Open(dir, g.logger)
	if err != nil {
		if l, err = lab.New(lab.Options{Dir: dir, Logger: g.logger}); err != nil {
			return usageError(err)
		}
	}
	rep, err := l.Up(ctx)
	if err != nil {
		return &exitError{code: exitInfra, err: fmt.Errorf("lab up: %w", err)}
	}
	if !rep.AlreadyUp {
		fmt.Fprintf(g.stdout, "lab %s up in %s\n", l.Dir(), rep.Duration.Round(1e6))
	}
	commit, err := l.Repo(ctx)
	if err != nil {
		return &exitError{code: exitInfra, err: fmt.Errorf("lab repository: %w", err)}
	}
	g.logger.Info("lab repository", "dir", l.RepoDir(), "commit", commit)
	for _, e := range l.Env() {
		if _, set := os.LookupEnv(e.Name); !set {
			os.Setenv(e.Name, e.Value)
		}
	}
	opts.Repo, opts.Rev = l.RepoDir(), "main"
	// The lab repository's flake.lock pins nixpkgs to the lab's stub: no --override-input, so the flake
	// keeps its revision and every generation names its commit.
	opts.Nix.Offline = true
	opts.Nix.OverrideInputs = nil
	return nil
}
