package pipeline

import (
	"errors"
	"fmt"
	"time"
)

// Status is the state of a run, a stage or a node's step.
type Status string

// Statuses. Queued and running are transient; the others are final.
const (
	StatusQueued    Status = "queued"
	StatusRunning   Status = "running"
	StatusSuccess   Status = "success"
	StatusFailed    Status = "failed"
	StatusSkipped   Status = "skipped"
	StatusCancelled Status = "cancelled"
)

// Final reports whether s is an end state.
func (s Status) Final() bool { return s != StatusQueued && s != StatusRunning }

// StepResult is one node's part of a stage (Node is empty for work that is not per node).
type StepResult struct {
	Node      string        `json:"node,omitempty"`
	Status    Status        `json:"status"`
	Start     time.Time     `json:"start"`
	Duration  time.Duration `json:"duration"`
	ExitCode  int           `json:"exit_code"`
	LastLines []string      `json:"last_lines,omitempty"`
	Error     string        `json:"error,omitempty"`
	// Note is a short human remark, such as "cached".
	Note string `json:"note,omitempty"`
}

// StageResult is the outcome of one stage.
type StageResult struct {
	Name     string        `json:"name"`
	Status   Status        `json:"status"`
	Start    time.Time     `json:"start"`
	Duration time.Duration `json:"duration"`
	Error    string        `json:"error,omitempty"`
	Steps    []StepResult  `json:"steps,omitempty"`
	// Err is the error the stage returned, for the process that ran it (errors.Is and errors.As reach
	// its causes); it is not recorded. Error is its message, bounded (MaxErrorBytes).
	Err error `json:"-"`
}

// Result is the outcome of a run: data, never an error. A failed deployment is a Result with
// Status failed; an error from Runner.Run means the runner itself broke.
type Result struct {
	Run      Run           `json:"run"`
	Status   Status        `json:"status"`
	Start    time.Time     `json:"start"`
	Duration time.Duration `json:"duration"`
	Stages   []StageResult `json:"stages"`
	Error    string        `json:"error,omitempty"`
}

// Stage returns the result of the named stage, or nil.
func (r *Result) Stage(name string) *StageResult {
	for i := range r.Stages {
		if r.Stages[i].Name == name {
			return &r.Stages[i]
		}
	}
	return nil
}

// Failure is the error of the first stage that failed or was cancelled, nil when none did or when the
// result was read back from a record (errors are not recorded).
func (r *Result) Failure() error {
	for _, s := range r.Stages {
		if (s.Status == StatusFailed || s.Status == StatusCancelled) && s.Err != nil {
			return s.Err
		}
	}
	return nil
}

// Error is a failure located at a stage and, when it is about one, a node. It unwraps to its cause, so
// *exec.ExitError and context.Canceled stay reachable with errors.As and errors.Is.
type Error struct {
	Stage    string
	Node     string
	ExitCode int
	// LastLines are the last lines of the failing command's output.
	LastLines []string
	Err       error
}

func (e *Error) Error() string {
	where := e.Stage
	if e.Node != "" {
		where += " " + e.Node
	}
	return fmt.Sprintf("%s: %v", where, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// Failure details a stage or step may attach to an error it returns.
type Failure interface {
	error
	// ExitStatus is the exit code of the failed command (0 when none).
	ExitStatus() int
	// Tail is the last lines of the failed command's output.
	Tail() []string
}

func failureDetails(err error) (int, []string) {
	var f Failure
	if errors.As(err, &f) {
		return f.ExitStatus(), f.Tail()
	}
	var pe *Error
	if errors.As(err, &pe) {
		return pe.ExitCode, pe.LastLines
	}
	return 0, nil
}
