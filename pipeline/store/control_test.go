package store

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cimdeploy/cimdeploy/pipeline"
)

// startedRun records a run that is queued and started, not finished: one that may wait for approval.
func startedRun(t *testing.T, s *Store, id string) {
	t.Helper()
	r := newRun(id, t0)
	prun := pipeline.Run{ID: id, Repo: "cim/infra", Ref: "refs/heads/main", Commit: "c0ffee", Trigger: pipeline.TriggerPush, Kind: pipeline.KindDeploy}
	report(t, s, []pipeline.Event{
		r.event(t, pipeline.RunQueued, pipeline.RunData{Run: prun}),
		r.event(t, pipeline.RunStarted, pipeline.RunData{Run: prun}),
	})
}

func TestPauseResume(t *testing.T) {
	t.Parallel()
	s := open(t, Config{DataDir: t.TempDir()})
	ctx := t.Context()
	if _, paused, err := s.Paused(ctx); err != nil || paused {
		t.Fatalf("Paused on a new store = %v, %v; want false", paused, err)
	}
	if err := s.Pause(ctx, "alice", "change freeze until Monday"); err != nil {
		t.Fatal(err)
	}
	st, paused, err := s.Paused(ctx)
	if err != nil || !paused || st.By != "alice" || st.Reason != "change freeze until Monday" || st.Since.IsZero() {
		t.Errorf("Paused = %+v, %v, %v", st, paused, err)
	}
	if err := s.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	if _, paused, err := s.Paused(ctx); err != nil || paused {
		t.Errorf("Paused after Resume = %v, %v; want false", paused, err)
	}
	if err := s.Resume(ctx); err != nil {
		t.Errorf("Resume when not paused: %v", err)
	}
	if err := s.Pause(ctx, "", "why"); err == nil || !strings.Contains(err.Error(), "by: empty") {
		t.Errorf("Pause without a name: %v", err)
	}
	if err := s.Pause(ctx, "mallory", "line\nbreak"); err == nil || !strings.Contains(err.Error(), "line break") {
		t.Errorf("Pause with a line break: %v", err)
	}
}

func TestPauseIsSharedAcrossConnections(t *testing.T) {
	t.Parallel()
	a := open(t, Config{DataDir: t.TempDir(), Listen: "127.0.0.1:0"})
	b := open(t, Config{URL: a.ListenURL()})
	if err := a.Pause(t.Context(), "alice", ""); err != nil {
		t.Fatal(err)
	}
	if st, paused, err := b.Paused(t.Context()); err != nil || !paused || st.By != "alice" {
		t.Errorf("Paused seen by another process = %+v, %v, %v", st, paused, err)
	}
}

func TestApprovals(t *testing.T) {
	t.Parallel()
	s := open(t, Config{DataDir: t.TempDir()})

	t.Run("approve wakes the waiting run", func(t *testing.T) {
		t.Parallel()
		startedRun(t, s, "run-approve")
		got := make(chan Decision, 1)
		errs := make(chan error, 1)
		go func() {
			d, err := s.WaitDecision(t.Context(), "run-approve")
			got <- d
			errs <- err
		}()
		if err := s.Approve(t.Context(), "run-approve", "bob"); err != nil {
			t.Fatal(err)
		}
		d := <-got
		if err := <-errs; err != nil || !d.Approved || d.By != "bob" || d.Run != "run-approve" {
			t.Errorf("WaitDecision = %+v, %v; want approved by bob", d, err)
		}
	})
	t.Run("reject names who and why", func(t *testing.T) {
		t.Parallel()
		startedRun(t, s, "run-reject")
		if err := s.Reject(t.Context(), "run-reject", "carol", "not during the audit"); err != nil {
			t.Fatal(err)
		}
		// Recorded before the wait began: returned at once.
		d, err := s.WaitDecision(t.Context(), "run-reject")
		if err != nil || d.Approved || d.By != "carol" || d.Reason != "not during the audit" {
			t.Errorf("WaitDecision = %+v, %v; want rejected by carol", d, err)
		}
	})
	t.Run("second decision does not overwrite the first", func(t *testing.T) {
		t.Parallel()
		startedRun(t, s, "run-twice")
		if err := s.Approve(t.Context(), "run-twice", "bob"); err != nil {
			t.Fatal(err)
		}
		err := s.Reject(t.Context(), "run-twice", "mallory", "too late")
		if err == nil || !strings.Contains(err.Error(), "run-twice") || !strings.Contains(err.Error(), "already approved by bob") {
			t.Errorf("second decision: %v; want an error naming the run and the first decision", err)
		}
		if err := s.Approve(t.Context(), "run-twice", "bob"); err == nil {
			t.Error("the same approval twice: no error")
		}
		d, err := s.WaitDecision(t.Context(), "run-twice")
		if err != nil || !d.Approved || d.By != "bob" {
			t.Errorf("WaitDecision = %+v, %v; want bob's approval", d, err)
		}
	})
	t.Run("unknown run", func(t *testing.T) {
		t.Parallel()
		err := s.Approve(t.Context(), "run-nobody-started", "bob")
		if err == nil || !strings.Contains(err.Error(), "run-nobody-started") || !strings.Contains(err.Error(), "no such run") {
			t.Errorf("Approve of an unknown run: %v", err)
		}
	})
	t.Run("finished run", func(t *testing.T) {
		t.Parallel()
		report(t, s, newRun("run-done", t0).history(t, pipeline.StatusSuccess))
		err := s.Reject(t.Context(), "run-done", "bob", "no")
		if err == nil || !strings.Contains(err.Error(), "run-done") || !strings.Contains(err.Error(), "already success") {
			t.Errorf("Reject of a finished run: %v", err)
		}
	})
	t.Run("invalid run id", func(t *testing.T) {
		t.Parallel()
		if err := s.Approve(t.Context(), "run.*", "bob"); err == nil || !strings.Contains(err.Error(), "invalid run id") {
			t.Errorf("Approve with a wildcard run id: %v", err)
		}
	})
	t.Run("wait ends with its context", func(t *testing.T) {
		t.Parallel()
		startedRun(t, s, "run-timeout")
		cause := errors.New("no approval within 1h")
		ctx, cancel := context.WithTimeoutCause(t.Context(), 200*time.Millisecond, cause)
		defer cancel()
		_, err := s.WaitDecision(ctx, "run-timeout")
		if !errors.Is(err, cause) {
			t.Errorf("WaitDecision after its context ended = %v, want the context's cause", err)
		}
	})
}
