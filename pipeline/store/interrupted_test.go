package store

import (
	"strings"
	"testing"
	"time"

	"github.com/cimdeploy/cimdeploy/pipeline"
)

// crash stops renewing s's leases without deleting them and forgets its runs, as a killed process
// would; Close afterwards releases nothing.
func crash(s *Store) {
	s.leaseMu.Lock()
	stop, done := s.stopRenew, s.renewDone
	s.stopRenew = nil
	clear(s.held)
	s.leaseMu.Unlock()
	if stop != nil {
		close(stop)
		<-done
	}
}

// partial is a run that stopped in its build stage, nats-1 building and nats-2 done.
func partial(t *testing.T, id string) []pipeline.Event {
	r := newRun(id, t0)
	prun := pipeline.Run{ID: id, Repo: "cim/infra", Ref: "main", Commit: "c0ffee", Kind: pipeline.KindValidate}
	return []pipeline.Event{
		r.event(t, pipeline.RunQueued, pipeline.RunData{Run: prun}),
		r.event(t, pipeline.RunStarted, pipeline.RunData{Run: prun}),
		r.event(t, pipeline.StageStarted, pipeline.StageData{Stage: "check"}),
		r.event(t, pipeline.StageFinished, pipeline.StageResult{Name: "check", Status: pipeline.StatusSuccess, Duration: time.Second}),
		r.event(t, pipeline.StageStarted, pipeline.StageData{Stage: "build"}),
		r.event(t, pipeline.StepStarted, pipeline.StepData{Stage: "build", Step: pipeline.StepResult{Node: "nats-1", Status: pipeline.StatusRunning}}),
		r.event(t, pipeline.StepStarted, pipeline.StepData{Stage: "build", Step: pipeline.StepResult{Node: "nats-2", Status: pipeline.StatusRunning}}),
		r.event(t, pipeline.StepFinished, pipeline.StepData{Stage: "build", Step: pipeline.StepResult{Node: "nats-2", Status: pipeline.StatusSuccess}}),
		r.event(t, pipeline.StepProgress, pipeline.ProgressData{Stage: "build", Node: "nats-1", Done: 3, Expected: 9}),
	}
}

func checkInterrupted(t *testing.T, sum RunSummary) {
	t.Helper()
	want := Interrupted + " (last recorded: stage build running; step nats-1 running)"
	if sum.Status != pipeline.StatusFailed || sum.Error != want || sum.Stage != "build" || sum.Commit != "c0ffee" ||
		len(sum.Stages) != 2 || sum.Stages[0].Status != pipeline.StatusSuccess || sum.Stages[1].Status != pipeline.StatusFailed {
		t.Errorf("interrupted run = %+v\nwant failed in build with %q", sum, want)
	}
}

func TestInterruptedRunIsFailedAtTheNextOpen(t *testing.T) {
	t.Parallel()
	cfg := Config{DataDir: t.TempDir()}
	s, err := Open(t.Context(), cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	const id = "20250601T120000Z-dead0001"
	report(t, s, partial(t, id))
	done := newRun("20250601T120000Z-0000d0e1", t0)
	report(t, s, done.history(t, pipeline.StatusSuccess))
	crash(s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = open(t, cfg) // the next command: the embedded server's lock says nobody else runs it
	sum, ok, err := s.Run(t.Context(), id)
	if err != nil || !ok {
		t.Fatalf("Run = %v, %v", ok, err)
	}
	checkInterrupted(t, sum)
	if got := s.Interrupted(); len(got) != 1 || got[0].ID != id || got[0].Status != pipeline.StatusFailed {
		t.Errorf("Interrupted() = %+v, want the one run Open marked", got)
	}
	if sum, _, _ := s.Run(t.Context(), done.id); sum.Status != pipeline.StatusSuccess || sum.Error != "" {
		t.Errorf("a finished run was changed: %+v", sum)
	}
	evs, err := s.Events(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	if last := evs[len(evs)-1]; last.Type != pipeline.RunFinished || last.Sequence != 10 || last.CausationID != evs[len(evs)-2].EventID {
		t.Errorf("the history does not end with the RunFinished that marks it: %+v", last)
	}
	// Marking again changes nothing and records nothing.
	if marked, err := s.MarkInterrupted(t.Context()); err != nil || len(marked) != 0 {
		t.Errorf("MarkInterrupted again = %+v, %v", marked, err)
	}
	if again, _ := s.Events(t.Context(), id); len(again) != len(evs) {
		t.Errorf("%d events after marking again, want %d", len(again), len(evs))
	}
}

func TestLeaseKeepsALiveRunRunning(t *testing.T) {
	t.Parallel()
	url := startServer(t).ClientURL()
	cfg := Config{URL: url, leaseTTL: time.Second}
	owner := open(t, cfg)
	const id = "20250601T120000Z-11fe0001"
	report(t, owner, partial(t, id))

	// Another process on the same cluster: the owner renews its lease, so the run is left alone,
	// past several lease lifetimes.
	other := open(t, cfg)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); <-tick.C {
		marked, err := other.MarkInterrupted(t.Context())
		if err != nil || len(marked) != 0 {
			t.Fatalf("a live run was marked: %+v, %v", marked, err)
		}
	}
	if sum, _, _ := other.Run(t.Context(), id); sum.Status != pipeline.StatusRunning {
		t.Fatalf("live run = %+v", sum)
	}

	// The owner dies: once its lease expires, the next look marks the run.
	crash(owner)
	deadline := time.Now().Add(15 * time.Second)
	for ; ; <-tick.C {
		marked, err := other.MarkInterrupted(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if len(marked) == 1 {
			checkInterrupted(t, marked[0])
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the run of a dead owner is still running after its lease expired")
		}
	}
}

func TestFinishedRunReleasesItsLease(t *testing.T) {
	t.Parallel()
	s := open(t, Config{URL: startServer(t).ClientURL()})
	r := newRun("20250601T120000Z-0000f1e1", t0)
	events := r.history(t, pipeline.StatusFailed)
	report(t, s, events[:2])
	if _, err := s.leases.Get(t.Context(), r.id); err != nil {
		t.Fatalf("no lease while the run goes on: %v", err)
	}
	report(t, s, events[2:])
	if _, err := s.leases.Get(t.Context(), r.id); err == nil || s.owns(r.id) {
		t.Error("the lease of a finished run is still there")
	}
	if !strings.Contains(string(s.owner), " pid ") {
		t.Errorf("lease owner %q", s.owner)
	}
}
