package store

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cimdeploy/cimdeploy/pipeline"
)

// A run can outlive the process that runs it only in the history: a crash, a kill or a power cut
// leaves its summary "running" with no RunFinished to come. Leases tell such runs from live ones.
//
// The process that reports a run holds a lease on it: a key <run-id> in the bucket cimdeploy_leases,
// put before the run's first summary is written and put again every LeaseTTL/3 while the run goes on,
// deleted after its RunFinished. The bucket's TTL is LeaseTTL, so the server itself drops the lease of a
// process that stopped putting it, whatever the clocks of the machines say.
//
// MarkInterrupted (run by Open) fails the runs whose owner is gone: with an external NATS, a run that
// is not final and has no lease; with the embedded server, every run that is not final, because the
// data directory's lock proves that no other process reports to it and this one has not started any.
// A run whose owner only lost its connection for longer than LeaseTTL is marked too; if it comes back,
// its later events are still recorded and its RunFinished gives the summary its real end.

// DefaultLeaseTTL is how long a run's lease lives without being renewed.
const DefaultLeaseTTL = time.Minute

// Interrupted is the start of the error of a run marked failed because its owner is gone.
const Interrupted = "interrupted: the process that ran it ended without a report"

// holdLease puts the lease of run (once per run) and keeps it renewed until releaseLease or Close.
func (s *Store) holdLease(ctx context.Context, runID string) error {
	s.leaseMu.Lock()
	defer s.leaseMu.Unlock()
	if _, ok := s.held[runID]; ok {
		return nil
	}
	if _, err := s.leases.Put(ctx, runID, s.owner); err != nil {
		return fmt.Errorf("lease: %w", err)
	}
	s.held[runID] = struct{}{}
	if s.stopRenew == nil {
		s.stopRenew, s.renewDone = make(chan struct{}), make(chan struct{})
		go s.renewLeases(s.stopRenew, s.renewDone)
	}
	return nil
}

// releaseLease deletes the lease of a finished run; a failure only delays nothing (the run is final).
func (s *Store) releaseLease(ctx context.Context, runID string) {
	s.leaseMu.Lock()
	delete(s.held, runID)
	s.leaseMu.Unlock()
	if err := s.leases.Delete(ctx, runID); err != nil {
		s.logger.Debug("release lease", "run_id", runID, "err", err)
	}
}

// renewLeases puts every held lease again every LeaseTTL/3 until stop closes.
func (s *Store) renewLeases(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	tick := time.NewTicker(s.cfg.lease() / 3)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		s.leaseMu.Lock()
		ids := make([]string, 0, len(s.held))
		for id := range s.held {
			ids = append(ids, id)
		}
		s.leaseMu.Unlock()
		for _, id := range ids {
			ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Timeout)
			if _, err := s.leases.Put(ctx, id, s.owner); err != nil {
				s.logger.Warn("renew run lease", "run_id", id, "err", err)
			}
			cancel()
		}
	}
}

// stopLeases stops renewing and deletes the leases still held: the runs they guard will not report
// again from this process.
func (s *Store) stopLeases() {
	s.leaseMu.Lock()
	stop, done := s.stopRenew, s.renewDone
	s.stopRenew = nil
	ids := make([]string, 0, len(s.held))
	for id := range s.held {
		ids = append(ids, id)
	}
	clear(s.held)
	s.leaseMu.Unlock()
	if stop != nil {
		close(stop)
		<-done
	}
	for _, id := range ids {
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Timeout)
		if err := s.leases.Delete(ctx, id); err != nil {
			s.logger.Debug("release lease", "run_id", id, "err", err)
		}
		cancel()
	}
}

// MarkInterrupted marks failed every run the history shows queued or running whose owner is gone (see
// the lease above), with the error Interrupted and what the run's last events say it was doing, and
// returns their new summaries. Each is a RunFinished event, recorded like any other; two processes
// marking the same run at once record it once. Open runs it; a long-lived process may run it again.
func (s *Store) MarkInterrupted(ctx context.Context) ([]RunSummary, error) {
	runs, err := s.Runs(ctx, 0)
	if err != nil {
		return nil, err
	}
	var marked []RunSummary
	var errs []error
	for _, r := range runs {
		if r.Status.Final() || s.owns(r.ID) {
			continue
		}
		if s.srv == nil { // external: a lease says the owner lives
			_, err := s.leases.Get(ctx, r.ID)
			if err == nil {
				continue
			}
			if !errors.Is(err, jetstream.ErrKeyNotFound) {
				errs = append(errs, fmt.Errorf("lease of run %s: %w", r.ID, err))
				continue
			}
		}
		sum, changed, err := s.markInterrupted(ctx, r)
		if err != nil {
			errs = append(errs, fmt.Errorf("mark run %s interrupted: %w", r.ID, err))
			continue
		}
		if changed {
			s.logger.Warn("run marked failed: the process that ran it is gone", "run_id", r.ID, "err", sum.Error)
			marked = append(marked, sum)
		}
		if s.srv != nil {
			if err := s.leases.Delete(ctx, r.ID); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
				s.logger.Debug("delete stale lease", "run_id", r.ID, "err", err)
			}
		}
	}
	return marked, errors.Join(errs...)
}

// Interrupted returns the runs that Open marked interrupted: the ones this process found cut off, for it
// to report. Two processes opening the store at once never both get a run.
func (s *Store) Interrupted() []RunSummary { return slices.Clone(s.interrupted) }

// owns reports whether this Store holds the lease of run.
func (s *Store) owns(runID string) bool {
	s.leaseMu.Lock()
	defer s.leaseMu.Unlock()
	_, ok := s.held[runID]
	return ok
}

// markInterrupted records the RunFinished of a run whose owner is gone: folded into the summary first
// (compare-and-set: nothing happens when the run ended meanwhile), then published.
func (s *Store) markInterrupted(ctx context.Context, r RunSummary) (RunSummary, bool, error) {
	events, err := s.Events(ctx, r.ID)
	if err != nil {
		return r, false, err
	}
	ev, err := interruptedEvent(r, events)
	if err != nil {
		return r, false, err
	}
	changed, err := s.foldSummary(ctx, ev)
	if err != nil || !changed {
		return r, false, err
	}
	subject, err := RunSubject(ev.AggregateID, ev.Type)
	if err != nil {
		return r, false, err
	}
	data, err := json.Marshal(ev)
	if err != nil {
		return r, false, err
	}
	if _, err := s.js.Publish(ctx, subject, data, jetstream.WithMsgID(ev.EventID), jetstream.WithExpectStream(StreamRuns)); err != nil {
		return r, false, fmt.Errorf("publish: %w", err)
	}
	sum, _, err := s.Run(ctx, r.ID)
	return sum, true, err
}

// interruptedEvent is the RunFinished of an interrupted run: status failed, the stages and steps still
// open failed, the error Interrupted with the last stage and steps the events recorded.
func interruptedEvent(r RunSummary, events []pipeline.Event) (pipeline.Event, error) {
	var (
		seq        = r.Sequence
		last       = pipeline.Event{Timestamp: r.Updated}
		run        = pipeline.Run{ID: r.ID, Repo: r.Repo, Ref: r.Ref, Commit: r.Commit, Trigger: r.Trigger, Kind: r.Kind}
		openStage  string
		openSteps  []string
		stageOrder []string
		stages     = map[string]pipeline.StageResult{}
	)
	for _, ev := range events {
		seq = max(seq, ev.Sequence)
		if ev.Timestamp.After(last.Timestamp) || last.EventID == "" {
			last = ev
		}
		switch ev.Type {
		case pipeline.RunQueued, pipeline.RunStarted:
			var d pipeline.RunData
			if json.Unmarshal(ev.Data, &d) == nil && d.Run.Commit != "" {
				run.Commit = d.Run.Commit
			}
		case pipeline.StageStarted:
			var d pipeline.StageData
			if json.Unmarshal(ev.Data, &d) == nil {
				openStage, openSteps = d.Stage, nil
				if _, ok := stages[d.Stage]; !ok {
					stageOrder = append(stageOrder, d.Stage)
				}
				stages[d.Stage] = pipeline.StageResult{Name: d.Stage, Status: pipeline.StatusRunning, Start: ev.Timestamp}
			}
		case pipeline.StageFinished:
			var d pipeline.StageResult
			if json.Unmarshal(ev.Data, &d) == nil {
				if _, ok := stages[d.Name]; !ok {
					stageOrder = append(stageOrder, d.Name)
				}
				stages[d.Name] = d
				if openStage == d.Name {
					openStage, openSteps = "", nil
				}
			}
		case pipeline.StepStarted:
			var d pipeline.StepData
			if json.Unmarshal(ev.Data, &d) == nil && d.Step.Node != "" {
				openSteps = append(openSteps, d.Step.Node)
			}
		case pipeline.StepFinished:
			var d pipeline.StepData
			if json.Unmarshal(ev.Data, &d) == nil {
				openSteps = slices.DeleteFunc(openSteps, func(n string) bool { return n == d.Step.Node })
			}
		}
	}
	why := Interrupted
	switch {
	case openStage != "" && len(openSteps) > 0:
		why += fmt.Sprintf(" (last recorded: stage %s running; %s %s running)", openStage,
			plural(len(openSteps), "step", "steps"), strings.Join(firstN(openSteps, 10), ", "))
	case openStage != "":
		why += fmt.Sprintf(" (last recorded: stage %s running)", openStage)
	case last.Type != "":
		why += fmt.Sprintf(" (last recorded: %s)", last.Type)
	}
	res := pipeline.Result{Run: run, Status: pipeline.StatusFailed, Start: r.Start, Error: pipeline.Truncate(why, pipeline.MaxErrorBytes)}
	if !r.Start.IsZero() && last.Timestamp.After(r.Start) {
		res.Duration = last.Timestamp.Sub(r.Start)
	}
	if len(stageOrder) == 0 { // no events left (past MaxAge): the summary's stages
		for _, st := range r.Stages {
			stageOrder = append(stageOrder, st.Name)
			stages[st.Name] = pipeline.StageResult{Name: st.Name, Status: st.Status, Duration: st.Duration}
		}
	}
	for _, name := range stageOrder {
		st := stages[name]
		if !st.Status.Final() {
			st.Status, st.Error = pipeline.StatusFailed, Interrupted
		}
		res.Stages = append(res.Stages, st)
	}
	data, err := json.Marshal(res)
	if err != nil {
		return pipeline.Event{}, err
	}
	id := sha256.Sum256([]byte("cimdeploy interrupted run " + r.ID))
	return pipeline.Event{
		EventID:       uuid8(id),
		AggregateID:   r.ID,
		Sequence:      seq + 1,
		Timestamp:     time.Now().UTC(),
		CorrelationID: r.ID,
		CausationID:   cmp.Or(last.EventID, uuid8(id)),
		Type:          pipeline.RunFinished,
		Data:          data,
	}, nil
}

// uuid8 formats a hash as a UUID of version 8 (RFC 9562 section 5.8, custom): the same run always gets
// the same event id, so two processes marking it at once are deduplicated by Nats-Msg-Id.
func uuid8(sum [32]byte) string {
	b := sum[:16]
	b[6] = b[6]&0x0f | 0x80
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
