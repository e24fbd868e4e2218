package pipeline

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
)

// Stage is one stage of the plan. Run does the stage's work for the run; work per node goes through
// StageRun.Each, which runs it in parallel and records a result per node. Returning an error fails the
// stage (and skips the stages after it); it is a result, not a crash.
type Stage interface {
	Name() string
	Run(ctx context.Context, s *StageRun) error
}

// AlwaysRunner is implemented by stages that run even after an earlier stage failed or the run was
// cancelled (reporting, cleanup). They get the cleanup context.
type AlwaysRunner interface {
	AlwaysRun() bool
}

type stageFunc struct {
	name   string
	fn     func(ctx context.Context, s *StageRun) error
	always bool
}

func (f stageFunc) Name() string                               { return f.name }
func (f stageFunc) Run(ctx context.Context, s *StageRun) error { return f.fn(ctx, s) }
func (f stageFunc) AlwaysRun() bool                            { return f.always }

// NewStage adapts a function to a Stage.
func NewStage(name string, fn func(ctx context.Context, s *StageRun) error) Stage {
	return stageFunc{name: name, fn: fn}
}

// NewFinalStage adapts a function to a Stage that always runs.
func NewFinalStage(name string, fn func(ctx context.Context, s *StageRun) error) Stage {
	return stageFunc{name: name, fn: fn, always: true}
}

// StageRun is a stage's view of the run while it runs: the run itself, a logger with the run's
// attributes, the command output stream and the per-node steps. It is safe for concurrent use by the
// stage's steps.
type StageRun struct {
	Run    *Run
	Logger *slog.Logger
	// Output receives commands' output (nix, ssh) for the run log; never slog messages.
	Output io.Writer

	name     string
	parallel int
	emit     func(ctx context.Context, typ string, data any)
	now      func() time.Time

	mu    sync.Mutex
	steps map[string]*StepResult
}

// Name is the stage's name.
func (s *StageRun) Name() string { return s.name }

// Parallel is the bound on concurrent steps.
func (s *StageRun) Parallel() int { return s.parallel }

// Each runs fn for every node in parallel, at most Parallel at a time, and records a StepResult per
// node: every node's step runs to its end even when another fails (a failing build does not stop the
// other builds). It returns the failures joined (each a *Error naming stage and node), or nil.
func (s *StageRun) Each(ctx context.Context, nodes []string, fn func(ctx context.Context, step *Step) error) error {
	return s.each(ctx, nodes, s.parallel, fn)
}

// EachLimit is Each with its own bound on concurrent steps (a stage's workers), at most limit at a time.
func (s *StageRun) EachLimit(ctx context.Context, nodes []string, limit int, fn func(ctx context.Context, step *Step) error) error {
	return s.each(ctx, nodes, limit, fn)
}

// Serial runs fn for the nodes one at a time, in order, stopping at the first failure; the nodes not
// reached are recorded as skipped (cancelled when ctx ended). Cancellation is checked between nodes,
// never inside one.
func (s *StageRun) Serial(ctx context.Context, nodes []string, fn func(ctx context.Context, step *Step) error) error {
	for i, node := range nodes {
		if err := ctx.Err(); err != nil {
			s.Skip(nodes[i:], StatusCancelled, "not started: "+err.Error())
			return &Error{Stage: s.name, Node: node, Err: err}
		}
		if err := s.step(ctx, node, fn); err != nil {
			s.Skip(nodes[i+1:], StatusSkipped, "not started: "+node+" failed")
			return err
		}
	}
	return nil
}

// Do runs fn as node's step and records its result, as Serial does for each node: for a stage whose
// own loop decides which node comes next (the rolling switch). A failure is returned as a *Error
// naming stage and node.
func (s *StageRun) Do(ctx context.Context, node string, fn func(ctx context.Context, step *Step) error) error {
	return s.step(ctx, node, fn)
}

func (s *StageRun) each(ctx context.Context, nodes []string, limit int, fn func(ctx context.Context, step *Step) error) error {
	for _, n := range nodes {
		s.record(n, StepResult{Node: n, Status: StatusQueued})
	}
	var g errgroup.Group
	if limit > 0 {
		g.SetLimit(limit)
	}
	var mu sync.Mutex
	var errs []error
	for _, node := range nodes {
		g.Go(func() error {
			if err := s.step(ctx, node, fn); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
			return nil
		})
	}
	g.Wait()
	sort.Slice(errs, func(i, j int) bool { return errs[i].Error() < errs[j].Error() })
	return errors.Join(errs...)
}

// step runs one node's work and records its result.
func (s *StageRun) step(ctx context.Context, node string, fn func(ctx context.Context, step *Step) error) error {
	st := &Step{Node: node, stage: s, tail: newTail(tailLines)}
	st.Output = io.MultiWriter(st.tail, prefixed(s.Output, s.name, node))
	start := s.now()
	if err := ctx.Err(); err != nil {
		s.record(node, StepResult{Node: node, Status: StatusCancelled, Start: start, Error: Truncate("not started: "+err.Error(), MaxErrorBytes)})
		return &Error{Stage: s.name, Node: node, Err: err}
	}
	s.record(node, StepResult{Node: node, Status: StatusRunning, Start: start})
	s.emit(ctx, StepStarted, StepData{Stage: s.name, Step: StepResult{Node: node, Status: StatusRunning, Start: start}})
	err := fn(ctx, st)
	res := StepResult{Node: node, Status: StatusSuccess, Start: start, Duration: s.now().Sub(start), Note: Truncate(st.note, MaxNoteBytes)}
	if err != nil {
		res.Status = StatusFailed
		if ctx.Err() != nil && errors.Is(err, context.Canceled) {
			res.Status = StatusCancelled
		}
		res.Error = Truncate(err.Error(), MaxErrorBytes)
		var lines []string
		res.ExitCode, lines = failureDetails(err)
		if len(lines) == 0 {
			lines = st.tail.lines()
		}
		res.LastLines = truncateLines(lines, MaxLastLines)
		var pe *Error
		if !errors.As(err, &pe) {
			err = &Error{Stage: s.name, Node: node, ExitCode: res.ExitCode, LastLines: res.LastLines, Err: err}
		}
	}
	s.record(node, res)
	s.emit(context.WithoutCancel(ctx), StepFinished, StepData{Stage: s.name, Step: res})
	return err
}

// Skip records nodes whose step did not run (status StatusSkipped or StatusCancelled) and why.
func (s *StageRun) Skip(nodes []string, status Status, why string) {
	for _, n := range nodes {
		s.record(n, StepResult{Node: n, Status: status, Error: Truncate(why, MaxErrorBytes)})
	}
}

func (s *StageRun) record(node string, r StepResult) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.steps == nil {
		s.steps = map[string]*StepResult{}
	}
	s.steps[node] = &r
}

// results returns the steps sorted by node.
func (s *StageRun) results() []StepResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]StepResult, 0, len(s.steps))
	for _, r := range s.steps {
		out = append(out, *r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Node < out[j].Node })
	return out
}

// Built records a node's artifact in the run and announces it (NodeBuilt).
func (s *StageRun) Built(ctx context.Context, node string, a Artifact) {
	s.mu.Lock()
	if s.Run.Artifacts == nil {
		s.Run.Artifacts = map[string]Artifact{}
	}
	s.Run.Artifacts[node] = a
	s.mu.Unlock()
	s.emit(ctx, NodeBuilt, StepData{Stage: s.name, Step: StepResult{Node: node, Status: StatusSuccess}, Artifact: &a})
}

// Step is one node's work inside a stage.
type Step struct {
	Node string
	// Output receives the step's command output; its last lines become the step's LastLines.
	Output io.Writer

	stage *StageRun
	tail  *tail
	note  string
}

// Progress announces how far the step is (StepProgress).
func (st *Step) Progress(ctx context.Context, done, expected int, activity string) {
	st.stage.emit(ctx, StepProgress, ProgressData{Stage: st.stage.name, Node: st.Node, Done: done, Expected: expected, Activity: activity})
}

// Note sets a short remark on the step's result, such as "cached".
func (st *Step) Note(format string, args ...any) { st.note = fmt.Sprintf(format, args...) }

// tail keeps the last n lines written to it.
type tail struct {
	mu      sync.Mutex
	n       int
	buf     []string
	partial []byte
}

func newTail(n int) *tail { return &tail{n: n} }

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	data := append(t.partial, p...)
	for {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			break
		}
		t.push(string(data[:i]))
		data = data[i+1:]
	}
	t.partial = append([]byte(nil), data...)
	if len(t.partial) > 4096 {
		t.push(string(t.partial))
		t.partial = nil
	}
	return len(p), nil
}

func (t *tail) push(line string) {
	t.buf = append(t.buf, Truncate(strings.TrimRight(line, "\r"), MaxLineBytes))
	if len(t.buf) > t.n {
		t.buf = t.buf[len(t.buf)-t.n:]
	}
}

func (t *tail) lines() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := append([]string(nil), t.buf...)
	if len(t.partial) > 0 {
		out = append(out, string(t.partial))
	}
	return out
}

// prefixed writes whole lines to w, each prefixed with "stage node | ".
func prefixed(w io.Writer, stage, node string) io.Writer {
	if w == nil {
		return io.Discard
	}
	return &linePrefixer{w: w, prefix: stage + " " + node + " | "}
}

type linePrefixer struct {
	mu      sync.Mutex
	w       io.Writer
	prefix  string
	partial []byte
}

func (l *linePrefixer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	data := append(l.partial, p...)
	for {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			break
		}
		if _, err := io.WriteString(l.w, l.prefix+string(data[:i+1])); err != nil {
			return 0, err
		}
		data = data[i+1:]
	}
	l.partial = append([]byte(nil), data...)
	return len(p), nil
}
