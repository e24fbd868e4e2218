package stages

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/cimdeploy/cimdeploy/gitops/projection"
	"github.com/cimdeploy/cimdeploy/gitops/topology"
	"github.com/cimdeploy/cimdeploy/pipeline"
)

// ErrDrift fails a validate run whose committed Nix differs from the projection of its events.
var ErrDrift = errors.New("the committed Nix differs from the projection of the events")

// Generate projects the commit's events into the workspace. When the committed Nix differs from the
// projection, a validate run fails with the diff (a pull request must commit what `cimdeploy generate`
// writes) and a deploy run deploys the projection and says so: the events are the truth.
type Generate struct {
	// Events is the events directory, relative to the repository root (default "events").
	Events string
	// Options shape the flake.
	Options projection.Options
}

// Name implements pipeline.Stage.
func (Generate) Name() string { return "generate" }

// Run implements pipeline.Stage.
func (g Generate) Run(ctx context.Context, s *pipeline.StageRun) error {
	run := s.Run
	if run.Workspace == "" {
		return errors.New("no workspace: the checkout stage did not run")
	}
	dir := g.Events
	if dir == "" {
		dir = "events"
	}
	if !filepath.IsLocal(dir) {
		return fmt.Errorf("events directory %q must be a relative path inside the repository", dir)
	}
	top, problems := topology.Load(ctx, filepath.Join(run.Workspace, dir))
	if len(problems) > 0 {
		for i := range problems {
			if rel, err := filepath.Rel(run.Workspace, problems[i].Source.File); err == nil && filepath.IsLocal(rel) {
				problems[i].Source.File = rel
			}
		}
		fmt.Fprintln(s.Output, problems.Error())
		return problems
	}
	files, err := projection.Render(top, g.Options)
	if err != nil {
		return err
	}
	drift, err := projection.Diff(run.Workspace, files)
	if err != nil {
		return err
	}
	run.Nodes = top.NodeNames()
	run.Drift = drift
	if drift == "" {
		s.Logger.Info("committed Nix matches the projection", "sequence", top.Sequence, "nodes", len(run.Nodes))
		return nil
	}
	if run.Kind == pipeline.KindValidate {
		fmt.Fprint(s.Output, drift)
		return fmt.Errorf("%w (run `cimdeploy generate` and commit the result):\n%s", ErrDrift, drift)
	}
	changed, err := projection.Write(run.Workspace, files)
	if err != nil {
		return err
	}
	s.Logger.Warn("committed Nix differs from the projection; deploying the projection", "files", changed, "sequence", top.Sequence)
	return nil
}
