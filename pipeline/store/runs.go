package store

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cimdeploy/cimdeploy/pipeline"
)

// RunSummary is the latest state of one run, folded from its events: what `cimdeploy runs` lists.
type RunSummary struct {
	ID      string           `json:"id"`
	Repo    string           `json:"repo,omitempty"`
	Ref     string           `json:"ref,omitempty"`
	Commit  string           `json:"commit,omitempty"`
	Trigger pipeline.Trigger `json:"trigger,omitempty"`
	Kind    pipeline.Kind    `json:"kind,omitempty"`
	Status  pipeline.Status  `json:"status"`
	// Stage is the stage running now, or once the run is over the first stage that failed or was
	// cancelled (if any).
	Stage  string         `json:"stage,omitempty"`
	Stages []StageSummary `json:"stages,omitempty"`
	Error  string         `json:"error,omitempty"`
	// Created is the timestamp of the run's earliest recorded event; runs are listed by it.
	Created time.Time `json:"created"`
	// Start and Duration come from RunStarted and RunFinished.
	Start    time.Time     `json:"start,omitzero"`
	Duration time.Duration `json:"duration,omitempty"`
	// Sequence is the sequence of the last event folded in, Updated its timestamp.
	Sequence uint64    `json:"sequence"`
	Updated  time.Time `json:"updated"`
}

// StageSummary is one stage of a RunSummary.
type StageSummary struct {
	Name     string          `json:"name"`
	Status   pipeline.Status `json:"status"`
	Duration time.Duration   `json:"duration,omitempty"`
}

// Report records ev: it publishes the event to cimdeploy.runs.<aggregate_id>.<event_type>, waits for
// the stream's ack and, for the events that change it (RunQueued, RunStarted, StageStarted,
// StageFinished, RunFinished), folds it into the run's summary in the runs bucket.
//
// Report is idempotent: the event_id is the Nats-Msg-Id, so a retry within the duplicate window
// (10 minutes) is acked without being stored again, and an event whose sequence the summary already
// holds is not folded twice. It is safe for concurrent use; summary updates are compare-and-set.
// Report implements pipeline.Reporter.
func (s *Store) Report(ctx context.Context, ev pipeline.Event) error {
	if ev.EventID == "" {
		return fmt.Errorf("report %s: event has no event_id", ev.Type)
	}
	subject, err := RunSubject(ev.AggregateID, ev.Type)
	if err != nil {
		return fmt.Errorf("report %s: %w", ev.EventID, err)
	}
	data, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("report %s: encode: %w", ev.EventID, err)
	}
	if limit := s.payloadLimit(); len(data) > limit {
		// Shortened, never dropped: a dropped RunFinished would leave the run running forever.
		if ev, data, err = s.shorten(ev, len(data), limit); err != nil {
			return fmt.Errorf("report %s %s: %w", ev.Type, ev.EventID, err)
		}
	}
	if changesSummary(ev.Type) && ev.Type != pipeline.RunFinished {
		// The lease goes first: a summary that says running always has one while its owner lives.
		if err := s.holdLease(ctx, ev.AggregateID); err != nil {
			return fmt.Errorf("report %s %s: %w", ev.Type, ev.EventID, err)
		}
	}
	msg := &nats.Msg{Subject: subject, Data: data}
	if _, err := s.js.PublishMsg(ctx, msg, jetstream.WithMsgID(ev.EventID), jetstream.WithExpectStream(StreamRuns)); err != nil {
		return fmt.Errorf("report %s %s: publish: %w", ev.Type, ev.EventID, err)
	}
	if !changesSummary(ev.Type) {
		return nil
	}
	if _, err := s.foldSummary(ctx, ev); err != nil {
		return fmt.Errorf("report %s %s: run summary: %w", ev.Type, ev.EventID, err)
	}
	if ev.Type == pipeline.RunFinished {
		s.releaseLease(ctx, ev.AggregateID)
	}
	return nil
}

// payloadLimit is the largest message data the store publishes: the connection's max payload (the
// server's max_payload, 1 MiB by default) less room for headers.
func (s *Store) payloadLimit() int {
	return max(int(s.nc.MaxPayload())-payloadHeadroom, payloadHeadroom)
}

// shorten fits ev into limit bytes (encoded, envelope included) by shortening its payload (fit) and
// logs what was cut.
func (s *Store) shorten(ev pipeline.Event, size, limit int) (pipeline.Event, []byte, error) {
	envelope := ev
	envelope.Data = json.RawMessage("null")
	bare, err := json.Marshal(envelope)
	if err != nil {
		return ev, nil, fmt.Errorf("encode: %w", err)
	}
	payload, cut, err := fit(ev.Data, limit-len(bare)+len("null"))
	if err != nil {
		return ev, nil, err
	}
	ev.Data = payload
	data, err := json.Marshal(ev)
	if err != nil {
		return ev, nil, fmt.Errorf("encode: %w", err)
	}
	s.logger.Warn("event shortened to fit the store's payload limit", "run_id", ev.AggregateID, "event", ev.Type,
		"bytes", size, "now", len(data), "limit", limit, "cut", len(cut), "fields", firstN(cut, 5))
	return ev, data, nil
}

// firstN is at most n elements of list, for logs.
func firstN(list []string, n int) []string {
	if len(list) > n {
		return append(list[:n:n], fmt.Sprintf("and %d more", len(list)-n))
	}
	return list
}

var _ pipeline.Reporter = (*Store)(nil)

func changesSummary(eventType string) bool {
	switch eventType {
	case pipeline.RunQueued, pipeline.RunStarted, pipeline.StageStarted, pipeline.StageFinished, pipeline.RunFinished:
		return true
	}
	return false
}

// casAttempts bounds the compare-and-set loop of a summary update: each retry means another writer
// updated the same run in between, which only a second process reporting the same run does.
const casAttempts = 8

// foldSummary folds ev into the run's summary with compare-and-set and reports whether it changed.
func (s *Store) foldSummary(ctx context.Context, ev pipeline.Event) (bool, error) {
	for range casAttempts {
		sum := RunSummary{ID: ev.AggregateID}
		var rev uint64
		entry, err := s.runKV.Get(ctx, ev.AggregateID)
		switch {
		case err == nil:
			if err := json.Unmarshal(entry.Value(), &sum); err != nil {
				return false, fmt.Errorf("decode: %w", err)
			}
			rev = entry.Revision()
		case !errors.Is(err, jetstream.ErrKeyNotFound):
			return false, err
		}
		changed, err := sum.fold(ev)
		if err != nil || !changed {
			return false, err
		}
		value, err := json.Marshal(sum)
		if err != nil {
			return false, fmt.Errorf("encode: %w", err)
		}
		if value, _, err = fit(value, s.payloadLimit()); err != nil {
			return false, err
		}
		if rev == 0 {
			_, err = s.runKV.Create(ctx, ev.AggregateID, value)
		} else {
			_, err = s.runKV.Update(ctx, ev.AggregateID, value, rev)
		}
		if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue
		}
		return err == nil, err
	}
	return false, fmt.Errorf("%d concurrent updates in a row", casAttempts)
}

// fold applies ev to the summary and reports whether it changed. An event whose sequence is not
// past the last one folded in is a replay and changes nothing.
func (r *RunSummary) fold(ev pipeline.Event) (bool, error) {
	if ev.Sequence != 0 && ev.Sequence <= r.Sequence {
		return false, nil
	}
	switch ev.Type {
	case pipeline.RunQueued, pipeline.RunStarted:
		var d pipeline.RunData
		if err := json.Unmarshal(ev.Data, &d); err != nil {
			return false, fmt.Errorf("decode %s: %w", ev.Type, err)
		}
		r.setRun(d.Run)
		if ev.Type == pipeline.RunQueued {
			r.Status = cmp.Or(r.Status, pipeline.StatusQueued)
		} else {
			r.Status = pipeline.StatusRunning
			r.Start = ev.Timestamp
		}
	case pipeline.StageStarted:
		var d pipeline.StageData
		if err := json.Unmarshal(ev.Data, &d); err != nil {
			return false, fmt.Errorf("decode %s: %w", ev.Type, err)
		}
		r.Stage = d.Stage
		r.setStage(StageSummary{Name: d.Stage, Status: pipeline.StatusRunning})
		if !r.Status.Final() {
			r.Status = pipeline.StatusRunning
		}
	case pipeline.StageFinished:
		// The payload is a pipeline.StageResult; {"stage": name, "status": ...} is read as well.
		var d struct {
			pipeline.StageResult
			Stage string `json:"stage"`
		}
		if err := json.Unmarshal(ev.Data, &d); err != nil {
			return false, fmt.Errorf("decode %s: %w", ev.Type, err)
		}
		r.setStage(StageSummary{Name: cmp.Or(d.Name, d.Stage), Status: d.Status, Duration: d.Duration})
	case pipeline.RunFinished:
		var res pipeline.Result
		if err := json.Unmarshal(ev.Data, &res); err != nil {
			return false, fmt.Errorf("decode %s: %w", ev.Type, err)
		}
		r.setRun(res.Run)
		r.Status, r.Duration, r.Error = res.Status, res.Duration, pipeline.Truncate(res.Error, pipeline.MaxErrorBytes)
		if !res.Start.IsZero() {
			r.Start = res.Start
		}
		r.Stages, r.Stage = nil, ""
		for _, st := range res.Stages {
			r.Stages = append(r.Stages, StageSummary{Name: st.Name, Status: st.Status, Duration: st.Duration})
			if (st.Status == pipeline.StatusFailed || st.Status == pipeline.StatusCancelled) && r.Stage == "" {
				r.Stage = st.Name
			}
		}
	default:
		return false, nil
	}
	if r.Created.IsZero() || (!ev.Timestamp.IsZero() && ev.Timestamp.Before(r.Created)) {
		r.Created = ev.Timestamp
	}
	r.Sequence = max(r.Sequence, ev.Sequence)
	r.Updated = ev.Timestamp
	return true, nil
}

func (r *RunSummary) setRun(run pipeline.Run) {
	r.Repo = cmp.Or(run.Repo, r.Repo)
	r.Ref = cmp.Or(run.Ref, r.Ref)
	r.Commit = cmp.Or(run.Commit, r.Commit)
	r.Trigger = cmp.Or(run.Trigger, r.Trigger)
	r.Kind = cmp.Or(run.Kind, r.Kind)
}

func (r *RunSummary) setStage(st StageSummary) {
	for i := range r.Stages {
		if r.Stages[i].Name == st.Name {
			r.Stages[i] = st
			return
		}
	}
	r.Stages = append(r.Stages, st)
}

// Runs returns the summaries of the recorded runs, newest (by Created, then by id) first; limit <= 0
// returns all of them. It reads the runs bucket, one message per run.
func (s *Store) Runs(ctx context.Context, limit int) ([]RunSummary, error) {
	var runs []RunSummary
	err := s.readAll(ctx, "KV_"+BucketRuns, jetstream.ConsumerConfig{
		FilterSubject: "$KV." + BucketRuns + ".>",
		DeliverPolicy: jetstream.DeliverLastPerSubjectPolicy,
	}, func(msg jetstream.Msg) error {
		if op := msg.Headers().Get("KV-Operation"); op != "" { // DEL or PURGE
			return nil
		}
		var sum RunSummary
		if err := json.Unmarshal(msg.Data(), &sum); err != nil {
			return fmt.Errorf("decode %s: %w", msg.Subject(), err)
		}
		runs = append(runs, sum)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list runs: %w", err)
	}
	slices.SortFunc(runs, func(a, b RunSummary) int {
		return cmp.Or(b.Created.Compare(a.Created), cmp.Compare(b.ID, a.ID))
	})
	if limit > 0 && len(runs) > limit {
		runs = runs[:limit:limit]
	}
	return runs, nil
}

// Run returns the summary of one run; ok is false when the store has none.
func (s *Store) Run(ctx context.Context, runID string) (sum RunSummary, ok bool, err error) {
	if !token.MatchString(runID) {
		return RunSummary{}, false, fmt.Errorf("run %q: invalid run id", runID)
	}
	entry, err := s.runKV.Get(ctx, runID)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return RunSummary{}, false, nil
	}
	if err != nil {
		return RunSummary{}, false, fmt.Errorf("run %s: %w", runID, err)
	}
	if err := json.Unmarshal(entry.Value(), &sum); err != nil {
		return RunSummary{}, false, fmt.Errorf("run %s: decode: %w", runID, err)
	}
	return sum, true, nil
}

// Events returns the recorded events of a run in the order the stream stored them, which is the
// order Report received them (pipeline.Reporter delivers a run's events in order). A run with no
// events, or one past MaxAge, gives none and no error.
func (s *Store) Events(ctx context.Context, runID string) ([]pipeline.Event, error) {
	filter, err := runFilter(runID)
	if err != nil {
		return nil, fmt.Errorf("events: %w", err)
	}
	var events []pipeline.Event
	err = s.readAll(ctx, StreamRuns, jetstream.ConsumerConfig{
		FilterSubject: filter,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}, func(msg jetstream.Msg) error {
		var ev pipeline.Event
		if err := json.Unmarshal(msg.Data(), &ev); err != nil {
			return fmt.Errorf("decode %s: %w", msg.Subject(), err)
		}
		events = append(events, ev)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("events of run %s: %w", runID, err)
	}
	return events, nil
}

// fetchBatch is how many messages readAll asks for at once.
const fetchBatch = 256

// readAll hands fn, in stream order, every message that a new consumer with cfg has pending when it
// is created, and stops there: messages stored after that may or may not be seen. The consumer is
// ephemeral, in memory, and deleted afterwards (or by the server after a minute of inactivity).
func (s *Store) readAll(ctx context.Context, stream string, cfg jetstream.ConsumerConfig, fn func(jetstream.Msg) error) error {
	cfg.AckPolicy = jetstream.AckNonePolicy
	cfg.MemoryStorage = true
	cfg.Replicas = 1
	cfg.InactiveThreshold = time.Minute
	cons, err := s.js.CreateConsumer(ctx, stream, cfg)
	if err != nil {
		return fmt.Errorf("consumer on %s: %w", stream, err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.Timeout)
		defer cancel()
		if err := s.js.DeleteConsumer(ctx, stream, cons.CachedInfo().Name); err != nil {
			s.logger.Debug("delete consumer", "stream", stream, "err", err)
		}
	}()
	pending := cons.CachedInfo().NumPending
	for pending > 0 {
		batch, err := cons.FetchNoWait(int(min(pending, fetchBatch)))
		if err != nil {
			return fmt.Errorf("fetch from %s: %w", stream, err)
		}
		n := 0
		for msg := range batch.Messages() {
			n++
			meta, err := msg.Metadata()
			if err != nil {
				return err
			}
			pending = meta.NumPending
			if err := fn(msg); err != nil {
				return err
			}
		}
		if err := batch.Error(); err != nil {
			return fmt.Errorf("fetch from %s: %w", stream, err)
		}
		if n == 0 {
			return fmt.Errorf("fetch from %s: no message while %d are pending", stream, pending)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return nil
}
