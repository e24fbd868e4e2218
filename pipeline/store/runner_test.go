package store

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"testing"

	"github.com/cimdeploy/cimdeploy/pipeline"
)

// TestRunnerReportsToStore runs the real pipeline.Runner with the store as its reporter: what a
// restart of the CLI lists and replays is what the run returned.
func TestRunnerReportsToStore(t *testing.T) {
	t.Parallel()
	cfg := Config{DataDir: t.TempDir()}
	s, err := Open(t.Context(), cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	runner := &pipeline.Runner{
		Stages: []pipeline.Stage{
			pipeline.NewStage("check", func(context.Context, *pipeline.StageRun) error { return nil }),
			pipeline.NewStage("build", func(context.Context, *pipeline.StageRun) error { return errors.New("nix build failed") }),
			pipeline.NewStage("switch", func(context.Context, *pipeline.StageRun) error { return nil }),
		},
		Reporters: []pipeline.Reporter{pipeline.ReporterFunc(func(ctx context.Context, ev pipeline.Event) error {
			err := s.Report(ctx, ev)
			if err != nil {
				t.Errorf("Report %s: %v", ev.Type, err)
			}
			return err
		})},
		Logger: testLogger(t),
	}
	run := &pipeline.Run{ID: pipeline.NewRunID(), Repo: "cim/infra", Ref: "refs/heads/main", Commit: "c0ffee", Trigger: pipeline.TriggerPush, Kind: pipeline.KindDeploy}
	res, err := runner.Run(t.Context(), run)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = open(t, cfg)
	runs, err := s.Runs(t.Context(), 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(runs) != 1 {
		t.Fatalf("runs = %+v, want 1", runs)
	}
	got := runs[0]
	if got.ID != run.ID || got.Status != pipeline.StatusFailed || got.Stage != "build" || got.Error != res.Error ||
		got.Duration != res.Duration || !got.Start.Equal(res.Start) || len(got.Stages) != 3 ||
		got.Stages[2] != (StageSummary{Name: "switch", Status: pipeline.StatusSkipped}) {
		t.Errorf("summary %+v does not match the result %+v", got, res)
	}

	events, err := s.Events(t.Context(), run.ID)
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for i, ev := range events {
		types = append(types, ev.Type)
		if ev.Sequence != uint64(i+1) || ev.CorrelationID != run.ID || ev.AggregateID != run.ID {
			t.Errorf("event %d: envelope %+v", i, ev)
		}
		if i > 0 && ev.CausationID != events[i-1].EventID {
			t.Errorf("event %d: causation %s, want the previous event %s", i, ev.CausationID, events[i-1].EventID)
		}
	}
	wantTypes := []string{pipeline.RunQueued, pipeline.RunStarted, pipeline.StageStarted, pipeline.StageFinished,
		pipeline.StageStarted, pipeline.StageFinished, pipeline.RunFinished}
	if !reflect.DeepEqual(types, wantTypes) {
		t.Fatalf("event types %v, want %v", types, wantTypes)
	}
	var replayed pipeline.Result
	if err := json.Unmarshal(events[len(events)-1].Data, &replayed); err != nil {
		t.Fatal(err)
	}
	want, _ := json.Marshal(res)
	have, _ := json.Marshal(replayed)
	if string(have) != string(want) {
		t.Errorf("replayed result:\n%s\nwant\n%s", have, want)
	}
}
