package rollout

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"
)

// Status is how a rollout, or one node of it, ended.
type Status string

// The statuses. A node that was rolled back is failed: a rollback is never a success.
const (
	StatusSuccess   Status = "success"
	StatusFailed    Status = "failed"
	StatusRefused   Status = "refused"   // pre-flight or a guard: no node was touched
	StatusSkipped   Status = "skipped"   // a node: already at the target, or not reached after a failure
	StatusCancelled Status = "cancelled" // the run was cancelled between nodes
)

// Result is what a rollout did: data, also when it failed.
type Result struct {
	RunID    string        `json:"run_id"`
	Commit   string        `json:"commit,omitempty"`
	Status   Status        `json:"status"`
	Error    string        `json:"error,omitempty"`
	Start    time.Time     `json:"start"`
	Duration time.Duration `json:"duration_ns"`
	// Nodes are the nodes in the order the rollout handled them, those it did not reach included.
	Nodes []NodeResult `json:"nodes"`
	// Reverted are the nodes --revert-all switched back after a failure.
	Reverted []NodeResult `json:"reverted,omitempty"`
	// Groups are how the plan's groups ended (waves.go), each with the time of its sequential steps;
	// CriticalPath is the longest chain of those through the groups' dependencies: the shortest the
	// rollout could take with every group side by side, to set beside Duration.
	Groups       []GroupResult `json:"groups,omitempty"`
	CriticalPath time.Duration `json:"critical_path_ns,omitempty"`
}

// Node returns the result of node, or nil.
func (r *Result) Node(name string) *NodeResult {
	for i := range r.Nodes {
		if r.Nodes[i].Node == name {
			return &r.Nodes[i]
		}
	}
	return nil
}

// NodeResult is one node's part of a rollout. The durations are the benchmark's figures: Activation
// is switch-to-configuration in its unit (services restarted), Rejoin the gate from the end of the
// activation until the node was healthy and clustered again.
type NodeResult struct {
	Node   string `json:"node"`
	Action Action `json:"action"`
	Status Status `json:"status"`
	// Group is the plan's group the node went in (waves.go).
	Group string `json:"group,omitempty"`
	// Commit is the commit the node runs after the rollout: the target's when it got there, the one it
	// ran when it was rolled back or not reached; "" when that is unknown (a rollback that failed).
	Commit string `json:"commit,omitempty"`
	// Mode is how a switch activated (mode.go), "" for switch.
	Mode Mode `json:"mode,omitempty"`

	From           string `json:"from,omitempty"`
	FromGeneration int    `json:"from_generation,omitempty"`
	To             string `json:"to,omitempty"`
	// Generation is the generation the switch made current (0 when it did not get that far).
	Generation  int  `json:"generation,omitempty"`
	ExitCode    int  `json:"exit_code,omitempty"` // switch-to-configuration's
	Reconnected bool `json:"reconnected,omitempty"`
	// RolledBack: the node failed and runs From again (by the controller or its dead-man timer).
	RolledBack bool `json:"rolled_back,omitempty"`
	// Destroyed: a removed node's container was destroyed (ActionRemove with DestroyRemoved).
	Destroyed bool `json:"destroyed,omitempty"`
	// Copied is how many store paths the node lacked and got; CopiedFrom the node it fetched them
	// from (Config.FanOut), "" when they came from the controller.
	Copied     int    `json:"copied"`
	CopiedFrom string `json:"copied_from,omitempty"`

	Copy       time.Duration `json:"copy_ns"`
	Activation time.Duration `json:"activation_ns"`
	Rejoin     time.Duration `json:"rejoin_ns"`
	Duration   time.Duration `json:"duration_ns"`
	Error      string        `json:"error,omitempty"`

	err error
}

// Err is the node's failure with its cause (an *ActivationError, a *remote.Error, ...), or nil.
func (n NodeResult) Err() error { return n.err }

// note is the one-line summary of a node's step.
func (n NodeResult) note() string {
	switch {
	case n.Action == ActionSkip:
		return "already at the target"
	case n.RolledBack:
		return fmt.Sprintf("rolled back to generation %d", n.FromGeneration)
	case n.Status != StatusSuccess:
		return ""
	case n.Action == ActionRecreate && n.Status == StatusSuccess:
		return fmt.Sprintf("recreated from its template, generation %d, rejoined in %s", n.Generation, n.Rejoin.Round(time.Millisecond))
	case n.Action == ActionRemove && n.Destroyed:
		return "taken out of the cluster, container destroyed"
	case n.Action == ActionRemove:
		return "taken out of the cluster"
	case n.Action == ActionProvision:
		return fmt.Sprintf("provisioned, generation %d, rejoined in %s", n.Generation, n.Rejoin.Round(time.Millisecond))
	}
	note := fmt.Sprintf("generation %d, activation %s, rejoin %s", n.Generation,
		n.Activation.Round(time.Millisecond), n.Rejoin.Round(time.Millisecond))
	if n.CopiedFrom != "" {
		note += ", closure from " + n.CopiedFrom
	}
	return note
}

// Tracker reports the rollout's work per node. The pipeline's rollout stage reports each node as a
// step of the stage (events StepStarted, StepProgress, StepFinished); LogTracker logs. The groups of
// a plan run side by side: Step and Skip are called from several goroutines at once, so a Tracker
// must be safe for concurrent use (each Step it hands out is used by one goroutine).
type Tracker interface {
	// Step runs fn as node's step: announced when it starts, recorded with its result when it ends.
	Step(ctx context.Context, node string, fn func(ctx context.Context, st Step) error) error
	// Skip records nodes the rollout did not reach, and why.
	Skip(nodes []string, status Status, why string)
}

// Step is one node's step while it runs.
type Step interface {
	Progress(ctx context.Context, done, expected int, activity string)
	Note(format string, args ...any)
	// Output receives the node's command output (the activation's journal).
	Output() io.Writer
}

// LogTracker reports to a logger: a record per node and per phase.
func LogTracker(logger *slog.Logger) Tracker { return logTracker{logger} }

type logTracker struct{ log *slog.Logger }

func (t logTracker) Step(ctx context.Context, node string, fn func(ctx context.Context, st Step) error) error {
	log := t.log.With("node", node)
	start := time.Now()
	log.Info("node started")
	st := &logStep{log: log}
	err := fn(ctx, st)
	if err != nil {
		log.Error("node failed", "err", err, "duration", time.Since(start).Round(time.Millisecond))
	} else {
		log.Info("node done", "note", st.note, "duration", time.Since(start).Round(time.Millisecond))
	}
	return err
}

func (t logTracker) Skip(nodes []string, status Status, why string) {
	for _, n := range nodes {
		t.log.Info("node not started", "node", n, "status", status, "why", why)
	}
}

type logStep struct {
	log  *slog.Logger
	note string
}

func (s *logStep) Progress(_ context.Context, done, expected int, activity string) {
	s.log.Debug(activity, "step", done, "of", expected)
}

func (s *logStep) Note(format string, args ...any) { s.note = fmt.Sprintf(format, args...) }
func (s *logStep) Output() io.Writer               { return io.Discard }
