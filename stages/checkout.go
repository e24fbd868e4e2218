package stages

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cimdeploy/cimdeploy/gitops/checkout"
	"github.com/cimdeploy/cimdeploy/pipeline"
)

// Deployed tells the commit last deployed from a repository's ref ("" when none); the run history
// knows it.
type Deployed interface {
	LastDeployed(ctx context.Context, repo, ref string) (string, error)
}

// Checkout fetches the run's commit into a fresh workspace under WorkDir and pins run.Commit to the
// commit the ref resolved to. For a deploy run it refuses a head that does not descend from the last
// deployed commit (a force push) unless AllowForcePush.
type Checkout struct {
	Cache          *checkout.Cache
	Source         checkout.Source
	WorkDir        string
	Deployed       Deployed // nil: no force-push check
	AllowForcePush bool
}

// Name implements pipeline.Stage.
func (Checkout) Name() string { return "checkout" }

// Run implements pipeline.Stage.
func (c Checkout) Run(ctx context.Context, s *pipeline.StageRun) error {
	run := s.Run
	rev := run.Commit
	if rev == "" {
		rev = run.Ref
	}
	ws, err := c.Cache.Checkout(ctx, c.Source, rev, c.WorkDir)
	if err != nil {
		return err
	}
	run.Workspace, run.Commit = ws.Dir, ws.Commit
	fmt.Fprintf(s.Output, "checkout | %s at %s: %s (%s)\n", c.Source, ws.Commit, firstLine(ws.Message), ws.Author)
	if run.Kind != pipeline.KindDeploy || c.Deployed == nil {
		return nil
	}
	last, err := c.Deployed.LastDeployed(ctx, run.Repo, run.Ref)
	if err != nil {
		return fmt.Errorf("last deployed commit of %s: %w", run.Ref, err)
	}
	forced, err := checkout.CheckFastForward(ctx, c.Cache, c.Source, last, ws.Commit, c.AllowForcePush)
	if err != nil {
		return err
	}
	if forced {
		s.Logger.Warn("deploying a head that does not descend from the last deployed commit (force push allowed)", "last", last, "new", ws.Commit)
	}
	return nil
}

// Cleanup removes the run's workspace when the run ends, whatever happened. It only removes
// directories under WorkDir.
type Cleanup struct {
	WorkDir string
	Keep    bool // keep workspaces for debugging
}

// Name implements pipeline.Stage.
func (Cleanup) Name() string { return "cleanup" }

// AlwaysRun implements pipeline.AlwaysRunner.
func (Cleanup) AlwaysRun() bool { return true }

// Run implements pipeline.Stage.
func (c Cleanup) Run(_ context.Context, s *pipeline.StageRun) error {
	ws := s.Run.Workspace
	if ws == "" || c.Keep {
		return nil
	}
	root, err := filepath.Abs(c.WorkDir)
	if err != nil {
		return err
	}
	abs, err := filepath.Abs(ws)
	if err != nil {
		return err
	}
	if rel, err := filepath.Rel(root, abs); err != nil || !filepath.IsLocal(rel) {
		return errors.New("workspace " + ws + " is not under " + c.WorkDir + "; not removing it")
	}
	return os.RemoveAll(abs)
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
