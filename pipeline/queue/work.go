package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cimdeploy/cimdeploy/pipeline"
	"github.com/cimdeploy/cimdeploy/pipeline/store"
)

// Handler runs the jobs Work takes.
type Handler interface {
	// Run runs j. Its ctx ends when Work's ctx ends (shutdown) or, for a deploy, when the deploy lock
	// is lost. Once Run returns the job is done, whatever it returned, and never runs again; the one
	// exception is a Run that returns an error after Work's ctx ended: that job was interrupted by
	// the shutdown and is handed back to the queue, to run again in this or another process.
	Run(ctx context.Context, j Job) error
	// Superseded is told that old was not run because by, a newer job of the same kind and key, is
	// queued or already ran (latest wins): it gives old's commit a final status naming by.
	Superseded(ctx context.Context, old, by Job)
}

// fetchWait bounds one pull request, so that a loop notices the end of its ctx and a pause.
const fetchWait = 5 * time.Second

// Work takes jobs and runs them with h until ctx ends, then waits for the runs in progress (their
// ctx ends too) and returns nil; a lost connection is logged and retried, never returned. Several Work loops, in one process or many sharing
// the NATS, share the jobs:
//   - latest wins per kind and key: a job taken while a newer one of its key is queued, or after a
//     newer one started, is not run: h.Superseded is told and the job is done. A running job is
//     never interrupted by a newer one; the newer waits.
//   - one deploy at a time for everything sharing the NATS (the deploy lock); while Config.Paused
//     says true, deploys stay queued.
//   - validations run in parallel, at most Config.MaxValidations in this process.
//   - a running job stays unacknowledged, kept alive every AckWait/3: if the process dies, the job
//     is delivered again after AckWait. A job is acknowledged only after Run returned and its
//     delivery was recorded done, so a job whose ack was lost is recognised and skipped.
func (q *Queue) Work(ctx context.Context, h Handler) error {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); q.deployLoop(ctx, h) }()
	go func() { defer wg.Done(); q.validateLoop(ctx, h) }()
	wg.Wait()
	return nil
}

// deployLoop takes one deploy at a time: unpaused, then a job, then the lock.
func (q *Queue) deployLoop(ctx context.Context, h Handler) {
	logger := q.logger.With("kind", pipeline.KindDeploy)
	for {
		if !q.waitUnpaused(ctx) {
			return
		}
		msg, err := q.next(ctx, q.deploys, logger)
		if err != nil {
			return
		}
		if msg == nil {
			continue
		}
		stopAlive := q.keepAlive(msg, logger)
		runCtx, cancel := context.WithCancelCause(ctx)
		lock, err := q.lockDeploy(ctx, cancel)
		if err != nil { // ctx ended while waiting
			stopAlive()
			cancel(nil)
			q.handBack(msg, logger)
			return
		}
		if paused := q.paused(ctx); paused {
			lock.release()
			stopAlive()
			cancel(nil)
			q.handBack(msg, logger)
			continue
		}
		q.handle(ctx, runCtx, h, msg, logger)
		lock.release()
		stopAlive()
		cancel(nil)
	}
}

// validateLoop runs up to MaxValidations validations at once.
func (q *Queue) validateLoop(ctx context.Context, h Handler) {
	logger := q.logger.With("kind", pipeline.KindValidate)
	slots := make(chan struct{}, q.cfg.MaxValidations)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return
		}
		msg, err := q.next(ctx, q.validates, logger)
		if err != nil {
			return
		}
		if msg == nil {
			<-slots
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			stopAlive := q.keepAlive(msg, logger)
			defer stopAlive()
			q.handle(ctx, ctx, h, msg, logger)
		}()
	}
}

// next takes the next job of consumer c, waiting up to fetchWait; nil, nil when none came. It
// returns an error only when ctx ended; other failures (a lost connection) are logged and retried
// after a pause.
func (q *Queue) next(ctx context.Context, c jetstream.Consumer, logger *slog.Logger) (jetstream.Msg, error) {
	fctx, cancel := context.WithTimeout(ctx, fetchWait)
	defer cancel()
	msg, err := c.Next(jetstream.FetchContext(fctx))
	switch {
	case err == nil:
		return msg, nil
	case ctx.Err() != nil:
		return nil, ctx.Err()
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout), errors.Is(err, jetstream.ErrNoMessages):
		return nil, nil
	}
	logger.Warn("take a job", "stream", store.StreamJobs, "err", err)
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(time.Second):
		return nil, nil
	}
}

// keepAlive tells JetStream every AckWait/3 that msg is still being worked on, until the returned
// function is called.
func (q *Queue) keepAlive(msg jetstream.Msg, logger *slog.Logger) (stop func()) {
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		tick := time.NewTicker(q.cfg.AckWait / 3)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				if err := msg.InProgress(); err != nil {
					logger.Warn("keep a job", "err", err)
				}
			}
		}
	}()
	return sync.OnceFunc(func() { close(done); <-stopped })
}

// handBack returns a job not run to the queue, for this or another process to take.
func (q *Queue) handBack(msg jetstream.Msg, logger *slog.Logger) {
	if err := msg.Nak(); err != nil {
		logger.Warn("hand a job back", "err", err)
	}
}

// waitUnpaused returns true once deploys are not paused, false when ctx ended first.
func (q *Queue) waitUnpaused(ctx context.Context) bool {
	said := false
	for q.paused(ctx) {
		if !said {
			q.logger.Info("deploys paused: deploy jobs stay queued")
			said = true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(q.cfg.PausePoll):
		}
	}
	if said {
		q.logger.Info("deploys resumed")
	}
	return ctx.Err() == nil
}

// paused asks Config.Paused; an error counts as paused.
func (q *Queue) paused(ctx context.Context) bool {
	if q.cfg.Paused == nil || ctx.Err() != nil {
		return false
	}
	p, err := q.cfg.Paused(ctx)
	if err != nil {
		if ctx.Err() == nil {
			q.logger.Warn("pause state unknown: deploys held", "err", err)
		}
		return true
	}
	return p
}

// handle decides what to do with one taken job and does it: skip it (already done), supersede it
// (a newer one of its key), or run it. ctx is Work's; runCtx is what Run gets.
func (q *Queue) handle(ctx, runCtx context.Context, h Handler, msg jetstream.Msg, logger *slog.Logger) {
	// The bookkeeping before and after the run uses a context of its own, bounded by AckWait, so a
	// shutdown during it does not leave a job run but not recorded.
	cleanup, cancel := context.WithTimeout(context.WithoutCancel(ctx), q.cfg.AckWait)
	defer cancel()
	md, err := msg.Metadata()
	if err != nil {
		logger.Error("job without metadata: dropped", "subject", msg.Subject(), "err", err)
		_ = msg.Term()
		return
	}
	seq := md.Sequence.Stream
	var j Job
	if err := json.Unmarshal(msg.Data(), &j); err == nil {
		err = j.Validate()
	}
	if err != nil {
		logger.Error("unreadable job: dropped", "subject", msg.Subject(), "seq", seq, "err", err)
		_ = msg.Term()
		return
	}
	logger = logger.With("delivery", j.Delivery, "key", j.Key(), "commit", j.Commit, "seq", seq)

	if done, err := q.done(cleanup, j); err != nil {
		logger.Warn("job state unknown: handed back", "err", err)
		q.handBack(msg, logger)
		return
	} else if done {
		logger.Info("job already done: skipped")
		q.jobs.WithLabelValues(string(j.Kind), "skipped").Inc()
		q.ack(cleanup, msg, logger)
		return
	}
	newer, err := q.newer(cleanup, j, seq)
	if err != nil {
		logger.Warn("latest job unknown: handed back", "err", err)
		q.handBack(msg, logger)
		return
	}
	if newer != nil {
		logger.Info("job superseded", "by_delivery", newer.Delivery, "by_commit", newer.Commit)
		h.Superseded(ctx, j, *newer)
		after, cancelAfter := context.WithTimeout(context.WithoutCancel(ctx), q.cfg.AckWait) // Superseded took its time
		defer cancelAfter()
		q.finish(after, msg, j, "superseded", logger)
		return
	}
	logger.Info("job started")
	err = h.Run(runCtx, j)
	if err != nil && ctx.Err() != nil {
		logger.Info("job interrupted by shutdown: handed back", "err", err)
		q.jobs.WithLabelValues(string(j.Kind), "interrupted").Inc()
		q.handBack(msg, logger)
		return
	}
	outcome := "succeeded"
	if err != nil {
		outcome = "failed"
		logger.Info("job failed", "err", err)
	} else {
		logger.Info("job succeeded")
	}
	after, cancelAfter := context.WithTimeout(context.WithoutCancel(ctx), q.cfg.AckWait) // the run took its time
	defer cancelAfter()
	q.finish(after, msg, j, outcome, logger)
}

// finish records j done, then acknowledges its message: a lost ack leaves a redelivery that done
// recognises.
func (q *Queue) finish(ctx context.Context, msg jetstream.Msg, j Job, outcome string, logger *slog.Logger) {
	q.jobs.WithLabelValues(string(j.Kind), outcome).Inc()
	data, _ := json.Marshal(deliveryState{State: stateDone, Outcome: outcome})
	if _, err := q.deliveries.Put(ctx, j.Delivery, data); err != nil {
		logger.Warn("record the job done", "bucket", store.BucketDeliveries, "err", err)
	}
	q.ack(ctx, msg, logger)
}

func (q *Queue) ack(ctx context.Context, msg jetstream.Msg, logger *slog.Logger) {
	if err := msg.DoubleAck(ctx); err != nil {
		logger.Warn("acknowledge a job", "err", err)
	}
}

// done reports whether the deliveries bucket records j done.
func (q *Queue) done(ctx context.Context, j Job) (bool, error) {
	entry, err := q.deliveries.Get(ctx, j.Delivery)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("delivery %s: bucket %s: %w", j.Delivery, store.BucketDeliveries, err)
	}
	var st deliveryState
	if err := json.Unmarshal(entry.Value(), &st); err != nil {
		return false, fmt.Errorf("delivery %s: decode: %w", j.Delivery, err)
	}
	return st.State == stateDone, nil
}

// started is the value of a key in cimdeploy_job_keys: the latest job started for it.
type started struct {
	Seq uint64 `json:"seq"`
	Job Job    `json:"job"`
}

// newer returns the job that supersedes j (stream sequence seq), or nil when j is the latest of its
// key: a newer job of the key still queued wins, and so does one that already started (a job
// delivered again after its process died, while a newer one ran). When j is the latest, it is
// recorded as started.
func (q *Queue) newer(ctx context.Context, j Job, seq uint64) (*Job, error) {
	last, err := q.stream.GetLastMsgForSubject(ctx, j.Subject())
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
	case err != nil:
		return nil, fmt.Errorf("stream %s: last job of %s: %w", store.StreamJobs, j.Subject(), err)
	case last.Sequence > seq:
		var n Job
		if err := json.Unmarshal(last.Data, &n); err != nil {
			return nil, fmt.Errorf("stream %s: job %d: decode: %w", store.StreamJobs, last.Sequence, err)
		}
		return &n, nil
	}
	key := string(j.Kind) + "." + j.Key()
	data, err := json.Marshal(started{Seq: seq, Job: j})
	if err != nil {
		return nil, err
	}
	for range 10 { // compare-and-set; only concurrent starts of one key retry
		entry, err := q.keys.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			if _, err = q.keys.Create(ctx, key, data); err == nil {
				return nil, nil
			}
		case err != nil:
		default:
			var st started
			if err := json.Unmarshal(entry.Value(), &st); err != nil {
				return nil, fmt.Errorf("bucket %s: key %s: decode: %w", store.BucketJobKeys, key, err)
			}
			if st.Seq > seq {
				return &st.Job, nil
			}
			if _, err = q.keys.Update(ctx, key, data, entry.Revision()); err == nil {
				return nil, nil
			}
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return nil, fmt.Errorf("bucket %s: key %s: %w", store.BucketJobKeys, key, err)
		}
	}
	return nil, fmt.Errorf("bucket %s: key %s: changed 10 times in a row", store.BucketJobKeys, key)
}
