package main

import (
	"context"
	"fmt"

	"github.com/cimdeploy/cimdeploy/deploy"
	"github.com/cimdeploy/cimdeploy/fixtures/lab"
)

// useLab points a command at the local lab: it brings the lab up when it is not (idempotent), brings
// the lab's infrastructure repository up to date, and gives cfg what `cimdeploy lab env` would: the
// repository, offline Nix and, for settings the user has not set, the lab's SSH identity, known_hosts
// and Proxmox host (deploy.Config.UseLab).
func useLab(ctx context.Context, g *globalOptions, cfg *deploy.Config) error {
	l, err := lab.Open(cfg.LabDir, g.logger)
	if err != nil {
		if l, err = lab.New(lab.Options{Dir: cfg.LabDir, Logger: g.logger}); err != nil {
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
	env := map[string]string{}
	for _, e := range l.Env() {
		env[e.Name] = e.Value
	}
	if err := cfg.UseLab(ctx, deploy.LabEnv{RepoDir: l.RepoDir(), Env: env}); err != nil {
		return usageError(err)
	}
	return nil
}
