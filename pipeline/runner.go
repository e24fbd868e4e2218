package pipeline

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"time"
)

// Runner runs plans: stages in series, the work inside a stage in parallel. It is safe to use for
// several runs at once; each run gets its own emitter and results.
type Runner struct {
	Stages    []Stage
	Reporters []Reporter
	Logger    *slog.Logger
	// Output receives the commands' output of every step, one prefixed line at a time.
	Output io.Writer
	// Parallel bounds the concurrent steps of a stage (default: the number of CPUs).
	Parallel int
	// Timeouts per stage name; stages not named get DefaultTimeout (default 30 minutes).
	Timeouts       map[string]time.Duration
	DefaultTimeout time.Duration
	// CleanupTimeout bounds what runs after cancellation: always-run stages and the final report
	// (default 1 minute).
	CleanupTimeout time.Duration

	// Now is the clock (tests); default time.Now.
	Now func() time.Time
}

func (r *Runner) timeout(stage string) time.Duration {
	if d, ok := r.Timeouts[stage]; ok && d > 0 {
		return d
	}
	if r.DefaultTimeout > 0 {
		return r.DefaultTimeout
	}
	return 30 * time.Minute
}

// Run runs every stage of the plan over run, in order, and returns the result. ctx is the run's
// lifetime: cancelling it (a newer commit, Ctrl-C, a timeout) stops the stage in progress, marks the
// rest cancelled and still runs the always-run stages and the final report on a cleanup context.
// A failed or cancelled run is a Result, not an error; Run returns an error only for a broken plan.
func (r *Runner) Run(ctx context.Context, run *Run) (*Result, error) {
	if run.ID == "" {
		return nil, errors.New("pipeline: run without an id")
	}
	if len(r.Stages) == 0 {
		return nil, errors.New("pipeline: empty plan")
	}
	now := r.Now
	if now == nil {
		now = time.Now
	}
	logger := r.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("run_id", run.ID, "commit", run.Commit)
	output := r.Output
	if output == nil {
		output = io.Discard
	}
	parallel := r.Parallel
	if parallel <= 0 {
		parallel = runtime.NumCPU()
	}
	cleanupTimeout := r.CleanupTimeout
	if cleanupTimeout <= 0 {
		cleanupTimeout = time.Minute
	}
	em := &emitter{runID: run.ID, reporters: r.Reporters, logger: logger, now: now}

	res := &Result{Run: run.record(), Status: StatusRunning, Start: now()}
	em.emit(ctx, RunQueued, RunData{Run: run.record()})
	em.emit(ctx, RunStarted, RunData{Run: run.record()})
	logger.Info("run started", "repo", run.Repo, "ref", run.Ref, "kind", run.Kind, "trigger", run.Trigger)

	var failure error
	for _, stage := range r.Stages {
		name := stage.Name()
		always := false
		if a, ok := stage.(AlwaysRunner); ok {
			always = a.AlwaysRun()
		}
		if (failure != nil || ctx.Err() != nil) && !always {
			status, why := StatusSkipped, "an earlier stage failed"
			if ctx.Err() != nil {
				status, why = StatusCancelled, "run cancelled: "+context.Cause(ctx).Error()
			}
			res.Stages = append(res.Stages, StageResult{Name: name, Status: status, Error: Truncate(why, MaxErrorBytes)})
			continue
		}
		base := ctx
		if ctx.Err() != nil {
			// An always-run stage after cancellation gets the cleanup lifetime.
			var cancel context.CancelFunc
			base, cancel = context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
			defer cancel()
		}
		sr := r.runStage(base, stage, run, logger.With("stage", name), output, em, parallel, now)
		res.Stages = append(res.Stages, sr)
		if sr.Status != StatusSuccess && failure == nil {
			failure = fmt.Errorf("stage %s %s: %s", name, sr.Status, sr.Error)
		}
	}

	res.Run = run.record()
	res.Duration = now().Sub(res.Start)
	switch {
	case failure == nil && ctx.Err() == nil:
		res.Status = StatusSuccess
	case ctx.Err() != nil:
		res.Status = StatusCancelled
		res.Error = Truncate("run cancelled: "+context.Cause(ctx).Error(), MaxErrorBytes)
	default:
		res.Status = StatusFailed
		res.Error = Truncate(failure.Error(), MaxErrorBytes)
	}
	cleanup, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	em.emit(cleanup, RunFinished, res)
	logger.Info("run finished", "status", res.Status, "duration", res.Duration.Round(time.Millisecond))
	return res, nil
}

func (r *Runner) runStage(ctx context.Context, stage Stage, run *Run, logger *slog.Logger, output io.Writer, em *emitter, parallel int, now func() time.Time) StageResult {
	name := stage.Name()
	timeout := r.timeout(name)
	sctx, cancel := context.WithTimeoutCause(ctx, timeout, fmt.Errorf("stage %s timed out after %s", name, timeout))
	defer cancel()
	sr := &StageRun{Run: run, Logger: logger, Output: output, name: name, parallel: parallel, emit: em.emit, now: now}
	start := now()
	em.emit(ctx, StageStarted, StageData{Stage: name})
	logger.Debug("stage started")
	err := runProtected(sctx, stage, sr)
	res := StageResult{Name: name, Status: StatusSuccess, Start: start, Duration: now().Sub(start), Steps: sr.results(), Err: err}
	switch {
	case err == nil:
	case ctx.Err() != nil:
		res.Status = StatusCancelled
		res.Error = Truncate(err.Error(), MaxErrorBytes)
	case sctx.Err() != nil:
		res.Status = StatusFailed
		res.Error = Truncate(context.Cause(sctx).Error(), MaxErrorBytes)
		res.Err = fmt.Errorf("%w: %w", context.Cause(sctx), err)
	default:
		res.Status = StatusFailed
		res.Error = Truncate(err.Error(), MaxErrorBytes)
	}
	em.emit(context.WithoutCancel(ctx), StageFinished, res)
	logger.Info("stage finished", "status", res.Status, "duration", res.Duration.Round(time.Millisecond))
	return res
}

// runProtected turns a panicking stage into a failed one.
func runProtected(ctx context.Context, stage Stage, sr *StageRun) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = &Error{Stage: stage.Name(), Err: fmt.Errorf("panic: %v", p)}
		}
	}()
	return stage.Run(ctx, sr)
}
