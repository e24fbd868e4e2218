package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/cimdeploy/cimdeploy/pipeline"
)

func event(t *testing.T, typ string, data any) pipeline.Event {
	t.Helper()
	raw, err := json.Marshal(data)
	if err != nil {
		t.Fatal(err)
	}
	return pipeline.Event{Type: typ, Data: raw, Timestamp: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func TestLiveProgressDrawsStagesAndNodes(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	p := &progress{w: &out, mode: progressLive, now: func() time.Time { return time.Date(2026, 1, 2, 3, 4, 9, 0, time.UTC) }}
	ctx := context.Background()
	p.Report(ctx, event(t, pipeline.StageStarted, pipeline.StageData{Stage: "build"}))
	p.Report(ctx, event(t, pipeline.StepStarted, pipeline.StepData{Stage: "build", Step: pipeline.StepResult{Node: "nats-1", Status: pipeline.StatusRunning}}))
	p.Report(ctx, event(t, pipeline.StepProgress, pipeline.ProgressData{Stage: "build", Node: "nats-1", Done: 1, Expected: 4, Activity: "building nixos-system-nats-1"}))
	p.Report(ctx, event(t, pipeline.StepFinished, pipeline.StepData{Stage: "build", Step: pipeline.StepResult{Node: "nats-2", Status: pipeline.StatusFailed}}))
	p.draw()
	first := out.String()
	for _, want := range []string{"build", "nats-1", "[███         ] 1/4 building nixos-system-nats-1", "4s", "nats-2", "✗"} {
		if !strings.Contains(first, want) {
			t.Errorf("live block lacks %q:\n%s", want, first)
		}
	}
	// The next frame moves the cursor back up over the block it drew.
	out.Reset()
	p.draw()
	if !strings.HasPrefix(out.String(), "\x1b[3A") {
		t.Errorf("redraw does not start by moving up 3 lines: %q", out.String()[:min(10, out.Len())])
	}
}

func TestPlainProgressIsOneTimestampedLinePerChange(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	p := newProgress(&out, progressPlain)
	ctx := context.Background()
	p.Report(ctx, event(t, pipeline.StepFinished, pipeline.StepData{Stage: "build", Step: pipeline.StepResult{Node: "nats-3", Status: pipeline.StatusFailed, Duration: 1500 * time.Millisecond, Error: "build nats-3: exit status 1\nmore"}}))
	p.Report(ctx, event(t, pipeline.StepProgress, pipeline.ProgressData{Stage: "build", Node: "nats-3", Done: 1, Expected: 2}))
	got := out.String()
	if strings.Count(got, "\n") != 1 || !strings.Contains(got, "stage build node nats-3 failed in 1.5s: build nats-3: exit status 1") {
		t.Fatalf("%q", got)
	}
}

func TestSummaryShowsFailedStepsLastLines(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	printSummary(&out, &pipeline.Result{Run: pipeline.Run{ID: "r1", Ref: "main", Commit: strings.Repeat("a", 40)}, Status: pipeline.StatusFailed,
		Stages: []pipeline.StageResult{{Name: "build", Status: pipeline.StatusFailed, Steps: []pipeline.StepResult{
			{Node: "nats-1", Status: pipeline.StatusSuccess, Note: "cached"},
			{Node: "nats-2", Status: pipeline.StatusFailed, ExitCode: 100, Error: "build nats-2: failed", LastLines: []string{"error: builder failed"}},
			{Node: "nats-3", Status: pipeline.StatusFailed, ExitCode: 1, Error: "build nats-3: nix build: build failed (exit status 1): nats-conf failed: invalid lame_duck_duration of 20s, minimum is 30 seconds\n  error: builder for …"},
		}}}})
	got := out.String()
	for _, want := range []string{"STAGE", "nats-1  success", "cached", "100", "run r1 failed", "build nats-2, last lines:\n  error: builder failed",
		"nats-3  failed", "nats-conf failed: invalid lame_duck_duration of 20s, minimum is 30 seconds\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("summary lacks %q:\n%s", want, got)
		}
	}
}
