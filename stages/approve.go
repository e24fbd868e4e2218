package stages

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cimdeploy/cimdeploy/pipeline"
	"github.com/cimdeploy/cimdeploy/pipeline/store"
)

// DefaultApprovalTimeout is how long Approve waits when its Timeout is zero.
const DefaultApprovalTimeout = time.Hour

// ApprovalStep is the name of Approve's one step, where the waiting shows.
const ApprovalStep = "approval"

// Approve holds a deploy run until an operator approves it (`cimdeploy approve <run-id>`): placed
// between publish and rollout when the cluster requires approval, so nothing is switched before a
// person said yes. It succeeds on an approval, fails on a rejection naming who and why, and fails
// when no decision came within Timeout. The waiting shows as the step "approval", running, with a
// progress event naming the run id to approve.
//
// The runner's own timeout for the stage (Runner.Timeouts["approve"], default 30 minutes) must be
// longer than Timeout, or it ends the wait first.
type Approve struct {
	// Wait returns the decision on the run once there is one; typically (*store.Store).WaitDecision.
	Wait func(ctx context.Context, runID string) (store.Decision, error)
	// Timeout bounds the wait (default DefaultApprovalTimeout, 1h).
	Timeout time.Duration
}

// Name implements pipeline.Stage.
func (Approve) Name() string { return "approve" }

// Run implements pipeline.Stage.
func (a Approve) Run(ctx context.Context, s *pipeline.StageRun) error {
	if a.Wait == nil {
		return errors.New("approval required, but no approval source is configured")
	}
	timeout := a.Timeout
	if timeout <= 0 {
		timeout = DefaultApprovalTimeout
	}
	runID := s.Run.ID
	return s.Do(ctx, ApprovalStep, func(ctx context.Context, st *pipeline.Step) error {
		st.Progress(ctx, 0, 1, "waiting for approval: cimdeploy approve "+runID)
		s.Logger.Info("waiting for approval", "timeout", timeout)
		noDecision := fmt.Errorf("no approval within %s", shortDuration(timeout))
		wctx, cancel := context.WithTimeoutCause(ctx, timeout, noDecision)
		defer cancel()
		d, err := a.Wait(wctx, runID)
		if err != nil {
			if ctx.Err() == nil && errors.Is(context.Cause(wctx), noDecision) {
				return noDecision
			}
			return fmt.Errorf("wait for approval: %w", err)
		}
		if !d.Approved {
			why := "rejected by " + d.By
			if d.Reason != "" {
				why += ": " + d.Reason
			}
			st.Note("%s", why)
			return errors.New(why)
		}
		st.Note("approved by %s", d.By)
		st.Progress(ctx, 1, 1, "approved by "+d.By)
		s.Logger.Info("approved", "by", d.By)
		return nil
	})
}

// shortDuration writes d as people say it: 1h, 90m, 45s, 1h30m.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
