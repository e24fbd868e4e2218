package stages

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"

	"github.com/cimdeploy/cimdeploy/gitops/topology"
	"github.com/cimdeploy/cimdeploy/pipeline"
	"github.com/cimdeploy/cimdeploy/rollout"
)

// Rollout switches the cluster to the run's build, one node at a time behind health gates, with a
// dead-man rollback on every node (package rollout). It reads the topology from the run's workspace,
// connects, observes every node, plans, asks Confirm, and runs the plan; each node is a step of the
// stage. A refused, failed (a rollback is a failure) or cancelled rollout fails the stage. It only
// deploys runs of kind deploy.
type Rollout struct {
	// Events is the events directory in the repository (default "events"), as for Generate.
	Events string
	// Connect returns the rollout of the topology and a function that closes its connections:
	// rollout.Connect with the SSH and rollout settings, or fakes in tests.
	Connect func(ctx context.Context, top *topology.Topology) (*rollout.Rollout, func(), error)
	// Nodes limits the rollout to these nodes (empty: every node); the others are still checked.
	Nodes     []string
	Force     bool
	RevertAll bool
	// DestroyRemoved destroys the containers of the nodes the events removed (rollout.Request).
	DestroyRemoved bool
	// Recreate and KeepData recreate the nodes' containers (rollout.Request).
	Recreate, KeepData bool
	// Targets, when set, decides what each node should run instead of the run's build (a rollback).
	Targets func(ctx context.Context, r *rollout.Rollout, run *pipeline.Run) ([]rollout.Target, error)
	// Confirm is asked with the plan before any node is touched; false ends the stage with nothing
	// changed (a dry run, a "no"). nil goes ahead.
	Confirm func(ctx context.Context, plan *rollout.Plan) (bool, error)
	// Done, when set, receives the result (what the CLI prints and benchmarks measure).
	Done func(*rollout.Result)
}

// Name implements pipeline.Stage.
func (Rollout) Name() string { return "rollout" }

// Run implements pipeline.Stage.
func (ro Rollout) Run(ctx context.Context, s *pipeline.StageRun) error {
	run := s.Run
	if run.Kind != pipeline.KindDeploy {
		s.Logger.Info("not a deploy run: nothing rolled out")
		return nil
	}
	top, err := loadTopology(ctx, run, ro.Events)
	if err != nil {
		return err
	}
	for _, n := range ro.Nodes {
		if _, ok := top.Nodes[n]; !ok {
			return fmt.Errorf("node %s is not in the topology (nodes: %v)", n, top.NodeNames())
		}
	}
	r, closeFn, err := ro.Connect(ctx, top)
	if err != nil {
		return err
	}
	defer closeFn()
	targets, err := ro.targets(ctx, r, run, top)
	if err != nil {
		return err
	}
	plan, err := r.Plan(ctx, rollout.Request{RunID: run.ID, Commit: run.Commit, Targets: targets, Force: ro.Force, RevertAll: ro.RevertAll, DestroyRemoved: ro.DestroyRemoved,
		Recreate: ro.Recreate, KeepData: ro.KeepData})
	if err != nil {
		return err
	}
	for _, np := range plan.Nodes {
		fmt.Fprintf(s.Output, "rollout | plan %s: %s %s\n", np.Node, np.Action, np.Reason)
	}
	for _, rm := range plan.Removals {
		fmt.Fprintf(s.Output, "rollout | plan %s: %s %s\n", rm.Node, rollout.ActionRemove, cmp.Or(rm.Deferred, strings.Join(rm.Steps, "; ")))
	}
	if ro.Confirm != nil {
		ok, err := ro.Confirm(ctx, plan)
		if err != nil {
			return err
		}
		if !ok {
			s.Logger.Info("rollout not confirmed: nothing changed")
			return nil
		}
	}
	res := r.Run(ctx, plan, tracker{s})
	if ro.Done != nil {
		ro.Done(res)
	}
	switch res.Status {
	case rollout.StatusSuccess:
		return nil
	case rollout.StatusCancelled:
		return fmt.Errorf("%w: %s", context.Canceled, res.Error)
	}
	return fmt.Errorf("rollout %s: %s", res.Status, res.Error)
}

// targets are the run's built systems of the nodes asked for, unless Targets decides.
func (ro Rollout) targets(ctx context.Context, r *rollout.Rollout, run *pipeline.Run, top *topology.Topology) ([]rollout.Target, error) {
	if ro.Targets != nil {
		return ro.Targets(ctx, r, run)
	}
	nodes := ro.Nodes
	if len(nodes) == 0 {
		nodes = top.NodeNames()
	}
	var ts []rollout.Target
	for _, n := range nodes {
		art, ok := run.Artifacts[n]
		if !ok || art.Toplevel == "" {
			return nil, fmt.Errorf("no system was built for %s: the build stage did not run", n)
		}
		ts = append(ts, rollout.Target{Node: n, Toplevel: art.Toplevel, Commit: run.Commit, Template: run.Templates[n]})
	}
	return ts, nil
}

// loadTopology folds the events of the run's workspace: the cluster the build was made from.
func loadTopology(ctx context.Context, run *pipeline.Run, dir string) (*topology.Topology, error) {
	if run.Workspace == "" {
		return nil, errors.New("no workspace: the checkout stage did not run")
	}
	if dir == "" {
		dir = "events"
	}
	top, problems := topology.Load(ctx, filepath.Join(run.Workspace, dir))
	if len(problems) > 0 {
		return nil, problems
	}
	return top, nil
}

// tracker reports the rollout's nodes as the stage's steps.
type tracker struct{ s *pipeline.StageRun }

func (t tracker) Step(ctx context.Context, node string, fn func(ctx context.Context, st rollout.Step) error) error {
	return t.s.Do(ctx, node, func(ctx context.Context, st *pipeline.Step) error { return fn(ctx, step{st}) })
}

func (t tracker) Skip(nodes []string, status rollout.Status, why string) {
	st := pipeline.StatusSkipped
	if status == rollout.StatusCancelled {
		st = pipeline.StatusCancelled
	}
	t.s.Skip(slices.Clone(nodes), st, why)
}

type step struct{ *pipeline.Step }

func (s step) Output() io.Writer { return s.Step.Output }
