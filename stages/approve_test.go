package stages_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/cimdeploy/cimdeploy/pipeline"
	"github.com/cimdeploy/cimdeploy/pipeline/store"
	"github.com/cimdeploy/cimdeploy/stages"
)

// waitingReporter records the run in the store and tells when the approval step shows its waiting.
type waitingReporter struct {
	store   *store.Store
	waiting chan string // the activity of the approval step's progress
}

func (r waitingReporter) Report(ctx context.Context, ev pipeline.Event) error {
	if err := r.store.Report(ctx, ev); err != nil {
		return err
	}
	if ev.Type == pipeline.StepProgress {
		var d pipeline.ProgressData
		if json.Unmarshal(ev.Data, &d) == nil && d.Stage == "approve" && d.Done == 0 {
			r.waiting <- d.Activity
		}
	}
	return nil
}

func TestApproveStage(t *testing.T) {
	t.Parallel()
	s, err := store.Open(t.Context(), store.Config{DataDir: t.TempDir()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })

	tests := []struct {
		name    string
		timeout time.Duration
		decide  func(runID string) error // nil: nobody decides
		status  pipeline.Status
		error   string
		note    string
	}{
		{name: "approved", timeout: time.Hour, status: pipeline.StatusSuccess, note: "approved by bob",
			decide: func(id string) error { return s.Approve(t.Context(), id, "bob") }},
		{name: "rejected", timeout: time.Hour, status: pipeline.StatusFailed, error: "rejected by carol: wait for the audit",
			decide: func(id string) error { return s.Reject(t.Context(), id, "carol", "wait for the audit") }},
		{name: "no decision", timeout: 300 * time.Millisecond, status: pipeline.StatusFailed, error: "no approval within 300ms"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rep := waitingReporter{store: s, waiting: make(chan string, 1)}
			runner := &pipeline.Runner{Reporters: []pipeline.Reporter{rep},
				Timeouts: map[string]time.Duration{"approve": 2 * time.Hour},
				Stages:   []pipeline.Stage{stages.Approve{Wait: s.WaitDecision, Timeout: tt.timeout}}}
			run := &pipeline.Run{ID: pipeline.NewRunID(), Repo: "cim/infra", Ref: "refs/heads/main",
				Commit: strings.Repeat("ab", 20), Trigger: pipeline.TriggerPush, Kind: pipeline.KindDeploy}
			done := make(chan *pipeline.Result, 1)
			go func() {
				res, err := runner.Run(t.Context(), run)
				if err != nil {
					t.Error(err)
				}
				done <- res
			}()
			select {
			case activity := <-rep.waiting:
				if !strings.Contains(activity, "cimdeploy approve "+run.ID) {
					t.Errorf("waiting shows %q, want the command naming the run", activity)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("the approval step never showed its waiting")
			}
			if tt.decide != nil {
				if err := tt.decide(run.ID); err != nil {
					t.Fatal(err)
				}
			}
			res := <-done
			st := res.Stage("approve")
			if res.Status != tt.status || st.Status != tt.status || !strings.Contains(st.Error, tt.error) {
				t.Fatalf("run %s, stage %s %q; want %s %q", res.Status, st.Status, st.Error, tt.status, tt.error)
			}
			if len(st.Steps) != 1 || st.Steps[0].Node != stages.ApprovalStep {
				t.Fatalf("steps %+v, want the one approval step", st.Steps)
			}
			if tt.note != "" && st.Steps[0].Note != tt.note {
				t.Errorf("note %q, want %q", st.Steps[0].Note, tt.note)
			}
		})
	}
}

func TestApproveStageWithoutSourceFails(t *testing.T) {
	t.Parallel()
	res, err := (&pipeline.Runner{Stages: []pipeline.Stage{stages.Approve{}}}).Run(t.Context(), &pipeline.Run{ID: "r1"})
	if err != nil {
		t.Fatal(err)
	}
	if st := res.Stage("approve"); st.Status != pipeline.StatusFailed || !strings.Contains(st.Error, "no approval source") {
		t.Errorf("stage %+v", st)
	}
}
