package pipeline_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cimdeploy/cimdeploy/pipeline"
)

// recorder is a Reporter keeping every event.
type recorder struct {
	mu  sync.Mutex
	evs []pipeline.Event
}

func (r *recorder) Report(_ context.Context, ev pipeline.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.evs = append(r.evs, ev)
	return nil
}

func (r *recorder) types() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, ev := range r.evs {
		out = append(out, ev.Type)
	}
	return out
}

func newRun() *pipeline.Run {
	return &pipeline.Run{ID: pipeline.NewRunID(), Repo: "test", Ref: "main", Commit: strings.Repeat("a", 40), Trigger: pipeline.TriggerManual, Kind: pipeline.KindValidate}
}

func ok(name string) pipeline.Stage {
	return pipeline.NewStage(name, func(context.Context, *pipeline.StageRun) error { return nil })
}

func TestRunSuccessAndEvents(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	r := &pipeline.Runner{Reporters: []pipeline.Reporter{rec}, Stages: []pipeline.Stage{
		ok("checkout"),
		pipeline.NewStage("build", func(ctx context.Context, s *pipeline.StageRun) error {
			return s.Each(ctx, []string{"nats-2", "nats-1"}, func(ctx context.Context, st *pipeline.Step) error {
				fmt.Fprintf(st.Output, "building %s\n", st.Node)
				s.Built(ctx, st.Node, pipeline.Artifact{Toplevel: "/nix/store/x-" + st.Node})
				return nil
			})
		}),
	}}
	run := newRun()
	res, err := r.Run(t.Context(), run)
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != pipeline.StatusSuccess || len(res.Stages) != 2 {
		t.Fatalf("%+v", res)
	}
	build := res.Stage("build")
	if len(build.Steps) != 2 || build.Steps[0].Node != "nats-1" || build.Steps[1].Status != pipeline.StatusSuccess {
		t.Fatalf("steps %+v", build.Steps)
	}
	if res.Run.Artifacts["nats-2"].Toplevel != "/nix/store/x-nats-2" {
		t.Errorf("artifacts %+v", res.Run.Artifacts)
	}
	types := strings.Join(rec.types(), " ")
	if !strings.HasPrefix(types, "RunQueued RunStarted StageStarted StageFinished StageStarted") || !strings.HasSuffix(types, "StageFinished RunFinished") ||
		strings.Count(types, "NodeBuilt") != 2 || strings.Count(types, "StepFinished") != 2 {
		t.Errorf("events: %s", types)
	}
	// The envelope: correlation is the run, causation chains, sequence counts.
	for i, ev := range rec.evs {
		if ev.CorrelationID != run.ID || ev.AggregateID != run.ID || ev.Sequence != uint64(i+1) || ev.EventID == "" {
			t.Fatalf("event %d envelope %+v", i, ev)
		}
		if i > 0 && ev.CausationID != rec.evs[i-1].EventID {
			t.Fatalf("event %d caused by %s, want %s", i, ev.CausationID, rec.evs[i-1].EventID)
		}
	}
}

type exitErr struct{ code int }

func (e exitErr) Error() string   { return fmt.Sprintf("exit status %d", e.code) }
func (e exitErr) ExitStatus() int { return e.code }
func (e exitErr) Tail() []string  { return nil }

func TestFailingNodeLetsOthersFinishAndSkipsLaterStages(t *testing.T) {
	t.Parallel()
	var finished atomic.Int32
	var cleanup atomic.Bool
	r := &pipeline.Runner{Parallel: 2, Stages: []pipeline.Stage{
		pipeline.NewStage("build", func(ctx context.Context, s *pipeline.StageRun) error {
			return s.Each(ctx, []string{"a", "b", "c", "d"}, func(ctx context.Context, st *pipeline.Step) error {
				if st.Node == "b" {
					fmt.Fprintln(st.Output, "error: builder for b failed")
					return exitErr{code: 100}
				}
				finished.Add(1)
				return nil
			})
		}),
		ok("publish"),
		pipeline.NewFinalStage("report", func(context.Context, *pipeline.StageRun) error { cleanup.Store(true); return nil }),
	}}
	res, err := r.Run(t.Context(), newRun())
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != pipeline.StatusFailed || finished.Load() != 3 {
		t.Fatalf("status %s, finished %d", res.Status, finished.Load())
	}
	b := res.Stage("build").Steps[1]
	if b.Node != "b" || b.Status != pipeline.StatusFailed || b.ExitCode != 100 || strings.Join(b.LastLines, "|") != "error: builder for b failed" {
		t.Errorf("step b %+v", b)
	}
	if !strings.Contains(res.Stage("build").Error, "build b: exit status 100") {
		t.Errorf("stage error %q does not name stage and node", res.Stage("build").Error)
	}
	if res.Stage("publish").Status != pipeline.StatusSkipped || res.Stage("report").Status != pipeline.StatusSuccess || !cleanup.Load() {
		t.Errorf("stages %+v", res.Stages)
	}
}

func TestParallelIsBounded(t *testing.T) {
	t.Parallel()
	var running, peak atomic.Int32
	release := make(chan struct{})
	var once sync.Once
	r := &pipeline.Runner{Parallel: 3, Stages: []pipeline.Stage{
		pipeline.NewStage("build", func(ctx context.Context, s *pipeline.StageRun) error {
			nodes := make([]string, 10)
			for i := range nodes {
				nodes[i] = fmt.Sprintf("n%d", i)
			}
			return s.Each(ctx, nodes, func(ctx context.Context, st *pipeline.Step) error {
				n := running.Add(1)
				for {
					p := peak.Load()
					if n <= p || peak.CompareAndSwap(p, n) {
						break
					}
				}
				if n == 3 {
					once.Do(func() { close(release) })
				}
				<-release
				running.Add(-1)
				return nil
			})
		}),
	}}
	if _, err := r.Run(t.Context(), newRun()); err != nil {
		t.Fatal(err)
	}
	if peak.Load() != 3 {
		t.Fatalf("peak concurrency %d, want 3", peak.Load())
	}
}

func TestCancelMarksTheRestCancelledAndRunsCleanup(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancelCause(t.Context())
	started := make(chan struct{})
	var cleanupCtxAlive atomic.Bool
	r := &pipeline.Runner{Stages: []pipeline.Stage{
		pipeline.NewStage("build", func(ctx context.Context, s *pipeline.StageRun) error {
			return s.Each(ctx, []string{"a"}, func(ctx context.Context, st *pipeline.Step) error {
				close(started)
				<-ctx.Done()
				return ctx.Err()
			})
		}),
		ok("publish"),
		pipeline.NewFinalStage("report", func(ctx context.Context, _ *pipeline.StageRun) error {
			cleanupCtxAlive.Store(ctx.Err() == nil)
			return nil
		}),
	}}
	go func() { <-started; cancel(errors.New("newer commit")) }()
	res, err := r.Run(ctx, newRun())
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != pipeline.StatusCancelled || !strings.Contains(res.Error, "newer commit") {
		t.Fatalf("result %s %q", res.Status, res.Error)
	}
	if s := res.Stage("build"); s.Status != pipeline.StatusCancelled || s.Steps[0].Status != pipeline.StatusCancelled {
		t.Errorf("build %+v", s)
	}
	if res.Stage("publish").Status != pipeline.StatusCancelled {
		t.Errorf("publish %+v", res.Stage("publish"))
	}
	if res.Stage("report").Status != pipeline.StatusSuccess || !cleanupCtxAlive.Load() {
		t.Errorf("report must run on a live cleanup context: %+v", res.Stage("report"))
	}
}

func TestStageTimeout(t *testing.T) {
	t.Parallel()
	r := &pipeline.Runner{Timeouts: map[string]time.Duration{"check": 50 * time.Millisecond}, Stages: []pipeline.Stage{
		pipeline.NewStage("check", func(ctx context.Context, _ *pipeline.StageRun) error {
			<-ctx.Done()
			return ctx.Err()
		}),
	}}
	res, err := r.Run(t.Context(), newRun())
	if err != nil {
		t.Fatal(err)
	}
	if s := res.Stage("check"); s.Status != pipeline.StatusFailed || s.Error != "stage check timed out after 50ms" {
		t.Fatalf("%+v", s)
	}
}

func TestSerialStopsAtFirstFailure(t *testing.T) {
	t.Parallel()
	var order []string
	r := &pipeline.Runner{Stages: []pipeline.Stage{
		pipeline.NewStage("rollout", func(ctx context.Context, s *pipeline.StageRun) error {
			return s.Serial(ctx, []string{"nats-1", "nats-2", "nats-3"}, func(ctx context.Context, st *pipeline.Step) error {
				order = append(order, st.Node)
				if st.Node == "nats-2" {
					return errors.New("health gate failed")
				}
				return nil
			})
		}),
	}}
	res, _ := r.Run(t.Context(), newRun())
	steps := res.Stage("rollout").Steps
	if strings.Join(order, ",") != "nats-1,nats-2" || steps[0].Status != pipeline.StatusSuccess || steps[1].Status != pipeline.StatusFailed || steps[2].Status != pipeline.StatusSkipped {
		t.Fatalf("order %v steps %+v", order, steps)
	}
}

func TestDoAndSkipRecordSteps(t *testing.T) {
	t.Parallel()
	r := &pipeline.Runner{Stages: []pipeline.Stage{
		pipeline.NewStage("rollout", func(ctx context.Context, s *pipeline.StageRun) error {
			// The stage's own loop picks the order: the leader last.
			if err := s.Do(ctx, "nats-2", func(ctx context.Context, st *pipeline.Step) error { st.Note("switched"); return nil }); err != nil {
				return err
			}
			err := s.Do(ctx, "nats-3", func(context.Context, *pipeline.Step) error { return errors.New("gate") })
			s.Skip([]string{"nats-1"}, pipeline.StatusSkipped, "not started: nats-3 failed")
			return err
		}),
	}}
	res, _ := r.Run(t.Context(), newRun())
	steps := res.Stage("rollout").Steps
	if len(steps) != 3 || steps[0].Status != pipeline.StatusSkipped || steps[1].Note != "switched" || steps[2].Status != pipeline.StatusFailed ||
		res.Status != pipeline.StatusFailed {
		t.Fatalf("steps %+v", steps)
	}
	if !strings.Contains(res.Stage("rollout").Error, "rollout nats-3: gate") {
		t.Errorf("stage error %q, want it located at the node", res.Stage("rollout").Error)
	}
}

func TestPanickingStageFails(t *testing.T) {
	t.Parallel()
	r := &pipeline.Runner{Stages: []pipeline.Stage{pipeline.NewStage("bad", func(context.Context, *pipeline.StageRun) error { panic("boom") })}}
	res, err := r.Run(t.Context(), newRun())
	if err != nil || res.Status != pipeline.StatusFailed || !strings.Contains(res.Error, "panic: boom") {
		t.Fatalf("%v %+v", err, res)
	}
}

func TestFailingReporterDoesNotFailTheRun(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	bad := pipeline.ReporterFunc(func(context.Context, pipeline.Event) error { calls.Add(1); return errors.New("github is down") })
	r := &pipeline.Runner{Reporters: []pipeline.Reporter{bad}, Stages: []pipeline.Stage{ok("a")}}
	res, err := r.Run(t.Context(), newRun())
	if err != nil || res.Status != pipeline.StatusSuccess || calls.Load() == 0 {
		t.Fatalf("%v %s %d", err, res.Status, calls.Load())
	}
}

func TestErrorUnwraps(t *testing.T) {
	t.Parallel()
	e := &pipeline.Error{Stage: "build", Node: "nats-1", Err: fmt.Errorf("nix: %w", context.Canceled)}
	if !errors.Is(e, context.Canceled) || e.Error() != "build nats-1: nix: context canceled" {
		t.Fatal(e)
	}
}
