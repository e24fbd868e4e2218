package rollout_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cimdeploy/cimdeploy/remote"
	"github.com/cimdeploy/cimdeploy/rollout"
	"github.com/cimdeploy/cimdeploy/rollout/rollouttest"
)

func TestFakeCleanRollingDeployFollowersFirstLeaderLast(t *testing.T) {
	t.Parallel()
	w := newFakeWorld(t, 3)
	w.cluster.SetLeader("nats-2")
	plan, res, rec := w.rollout(t.Context(), t, rollout.Request{RunID: "run-b", Commit: "b", Targets: w.targets("b")})
	if res.Status != rollout.StatusSuccess {
		t.Fatalf("rollout %s: %s", res.Status, res.Error)
	}
	if want := []string{"nats-1", "nats-3", "nats-2"}; !slices.Equal(rec.order, want) || !slices.Equal(nodeOrder(res), want) || plan.Leader != "nats-2" {
		t.Errorf("order %v (result %v), want followers first, the leader %s last: %v", rec.order, nodeOrder(res), plan.Leader, want)
	}
	for _, name := range w.top.NodeNames() {
		s, nr := w.systems[name], res.Node(name)
		if s.Running() != built(name, "b") || nr.Status != rollout.StatusSuccess || nr.Generation != 2 || nr.FromGeneration != 1 {
			t.Errorf("%s runs %s, result %+v", name, s.Running(), nr)
		}
		if len(s.Timers()) != 0 {
			t.Errorf("%s has armed timers left: %v", name, s.Timers())
		}
		if want := "cimdeploy-switch-" + name + "-run-b"; !slices.Equal(s.Activations(), []string{want}) {
			t.Errorf("%s activations %v, want [%s]", name, s.Activations(), want)
		}
		st, _, err := rollout.ReadState(t.Context(), w.store, name)
		if err != nil || st.Commit != "b" || st.Toplevel != built(name, "b") || st.Generation != 2 || st.RunID != "run-b" {
			t.Errorf("%s state %+v, %v", name, st, err)
		}
		if !strings.HasPrefix(rec.notes[name], "generation 2, activation ") {
			t.Errorf("%s note %q", name, rec.notes[name])
		}
	}
	// Every node armed its timer before it changed the profile, and disarmed it after the gate.
	log := strings.Join(w.systems["nats-1"].Log(), "\n")
	if i, j, k := strings.Index(log, "arm run-b"), strings.Index(log, "set profile"), strings.Index(log, "disarm run-b"); i < 0 || j < i || k < j {
		t.Errorf("nats-1 steps out of order:\n%s", log)
	}
	w.healthy(t)

	// The same commit again: nothing to do.
	_, again, rec := w.rollout(t.Context(), t, rollout.Request{RunID: "run-b2", Commit: "b", Targets: w.targets("b")})
	for _, nr := range again.Nodes {
		if nr.Status != rollout.StatusSkipped || nr.Action != rollout.ActionSkip {
			t.Errorf("second rollout %s: %+v", nr.Node, nr)
		}
	}
	if again.Status != rollout.StatusSuccess || rec.notes["nats-1"] != "already at the target" {
		t.Errorf("second rollout %s %v", again.Status, rec.notes)
	}
}

func TestFakeActivationFailuresRollBack(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		code int
		says string
	}{
		{name: "bootloader", code: 1, says: "bad action or bootloader"},
		{name: "activation", code: 2, says: "activation failed"},
		{name: "reload", code: 3, says: "daemon-reload or tmpfiles"},
		{name: "units", code: 4, says: "units failed"},
		{name: "reboot", code: 100, says: "reboot is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			w := newFakeWorld(t, 3)
			w.cluster.SetLeader("nats-3")
			w.systems["nats-1"].FailNextActivation(tc.code)
			_, res, rec := w.rollout(t.Context(), t, rollout.Request{RunID: "r", Commit: "b", Targets: w.targets("b")})
			nr := res.Node("nats-1")
			if res.Status != rollout.StatusFailed || nr.Status != rollout.StatusFailed || !nr.RolledBack || nr.ExitCode != tc.code {
				t.Fatalf("result %s, nats-1 %+v", res.Status, nr)
			}
			var ae *rollout.ActivationError
			if !errors.As(nr.Err(), &ae) || ae.Code != tc.code || ae.ExitStatus() != tc.code {
				t.Errorf("error %v: want an *ActivationError with code %d", nr.Err(), tc.code)
			}
			mustContain(t, "error", nr.Error, tc.says, "rolled back to generation 1")
			s := w.systems["nats-1"]
			gens, _ := s.Generations(t.Context())
			if s.Running() != base("nats-1") || !slices.Equal(generationNumbers(gens), []int{1}) || !gens[0].Current {
				t.Errorf("nats-1 runs %s with generations %+v: want generation 1 only, the failed one deleted", s.Running(), gens)
			}
			for _, other := range []string{"nats-2", "nats-3"} {
				if w.systems[other].Running() != base(other) || len(w.systems[other].Activations()) != 0 || rec.skipped[other] != rollout.StatusSkipped {
					t.Errorf("%s was touched after nats-1 failed (skip %q)", other, rec.skipped[other])
				}
			}
			st, _, _ := rollout.ReadState(t.Context(), w.store, "nats-1")
			if st.FailedCommit != "b" || st.Toplevel != base("nats-1") || st.Generation != 1 || !strings.Contains(st.FailedReason, tc.says) {
				t.Errorf("state %+v", st)
			}
			if len(s.Timers()) != 0 {
				t.Errorf("timers left armed: %v", s.Timers())
			}
			w.healthy(t)
		})
	}
}

func TestFakeBrokenCommitFailsGateRollsBackAndIsNotRetried(t *testing.T) {
	t.Parallel()
	w := newFakeWorld(t, 3)
	for _, n := range w.top.NodeNames() {
		w.cluster.Break(built(n, "bad"))
	}
	_, res, _ := w.rollout(t.Context(), t, rollout.Request{RunID: "r1", Commit: "bad", Targets: w.targets("bad")})
	nr := res.Node("nats-2") // nats-1 is the leader: nats-2 goes first
	if res.Status != rollout.StatusFailed || !nr.RolledBack || nr.ExitCode != 0 {
		t.Fatalf("result %s %s, first node %+v", res.Status, res.Error, nr)
	}
	mustContain(t, "error", nr.Error, "health gate", "not healthy within", "503")
	if w.systems["nats-2"].Running() != base("nats-2") {
		t.Error("nats-2 not rolled back")
	}
	w.healthy(t)

	// The same commit again: refused before any node is touched.
	activations := len(w.systems["nats-2"].Activations())
	plan, again, _ := w.rollout(t.Context(), t, rollout.Request{RunID: "r2", Commit: "bad", Targets: w.targets("bad")})
	if again.Status != rollout.StatusRefused || len(w.systems["nats-2"].Activations()) != activations {
		t.Fatalf("retry: %s %s", again.Status, again.Error)
	}
	mustContain(t, "refusal", strings.Join(plan.Problems, "\n"), "nats-2: commit bad failed here", "not retried until a newer commit")
	// A newer commit goes ahead, and a success clears the failure.
	_, fixed, _ := w.rollout(t.Context(), t, rollout.Request{RunID: "r3", Commit: "c", Targets: w.targets("c")})
	if fixed.Status != rollout.StatusSuccess {
		t.Fatalf("newer commit: %s %s", fixed.Status, fixed.Error)
	}
	if st, _, _ := rollout.ReadState(t.Context(), w.store, "nats-2"); st.FailedCommit != "" || st.Commit != "c" {
		t.Errorf("state after success %+v", st)
	}
}

func TestFakeConnectionDropDuringActivation(t *testing.T) {
	t.Parallel()
	w := newFakeWorld(t, 3)
	w.systems["nats-2"].DropNextActivation()
	_, res, _ := w.rollout(t.Context(), t, rollout.Request{RunID: "r", Commit: "b", Targets: w.targets("b", "nats-2")})
	if nr := res.Node("nats-2"); res.Status != rollout.StatusSuccess || !nr.Reconnected {
		t.Fatalf("result %s %s, %+v", res.Status, res.Error, nr)
	}
}

func TestFakeTimerFiringFirstIsAFailure(t *testing.T) {
	t.Parallel()
	w := newFakeWorld(t, 3)
	w.r.Config.ConfirmTimeout = 50 * time.Millisecond // shorter than the gate: the node reverts on its own
	w.systems["nats-2"].FailProbes(rollouttest.ErrUnreachable)
	go func() {
		// The probes work again once the node rolled itself back.
		waitFor(t, 5*time.Second, "timer fired", func() bool {
			return w.systems["nats-2"].Running() == base("nats-2") &&
				len(w.systems["nats-2"].Activations()) > 0
		})
		w.systems["nats-2"].FailProbes(nil)
	}()
	_, res, _ := w.rollout(t.Context(), t, rollout.Request{RunID: "r", Commit: "b", Targets: w.targets("b", "nats-2")})
	nr := res.Node("nats-2")
	if res.Status != rollout.StatusFailed || !nr.RolledBack {
		t.Fatalf("result %s, %+v", res.Status, nr)
	}
	s := w.systems["nats-2"]
	gens, _ := s.Generations(t.Context())
	if s.Running() != base("nats-2") || !slices.Equal(generationNumbers(gens), []int{1}) {
		t.Errorf("runs %s, generations %v", s.Running(), generationNumbers(gens))
	}
	mustContain(t, "node log", strings.Join(s.Log(), "\n"), "timer r fired")
}

func TestFakePreflightRefusesUnhealthyOrUnreachable(t *testing.T) {
	t.Parallel()
	t.Run("unhealthy", func(t *testing.T) {
		t.Parallel()
		w := newFakeWorld(t, 3)
		w.cluster.Break(base("nats-3"))
		plan, res, _ := w.rollout(t.Context(), t, rollout.Request{RunID: "r", Commit: "b", Targets: w.targets("b", "nats-1")})
		if res.Status != rollout.StatusRefused || len(w.systems["nats-1"].Activations()) != 0 {
			t.Fatalf("result %s %s", res.Status, res.Error)
		}
		mustContain(t, "problems", strings.Join(plan.Problems, "\n"), "nats-3 is not healthy", "503")
		mustContain(t, "error", res.Error, "--force")
	})
	t.Run("unreachable forced", func(t *testing.T) {
		t.Parallel()
		w := newFakeWorld(t, 3)
		w.proxmox.Attach(w.systems["nats-3"].Node)
		w.proxmox.AddContainer(remote.Container{VMID: 203, Hostname: "nats-3"}, false)
		plan, res, _ := w.rollout(t.Context(), t, rollout.Request{RunID: "r", Commit: "b", Targets: w.targets("b")})
		if res.Status != rollout.StatusRefused {
			t.Fatalf("result %s", res.Status)
		}
		mustContain(t, "problems", strings.Join(plan.Problems, "\n"), "nats-3: unreachable", "container stopped")
		_, res, _ = w.rollout(t.Context(), t, rollout.Request{RunID: "r2", Commit: "b", Targets: w.targets("b"), Force: true})
		// nats-2 goes first and is switched; nats-3 cannot be and halts the rollout before the leader.
		if res.Status != rollout.StatusFailed || res.Node("nats-2").Status != rollout.StatusSuccess ||
			res.Node("nats-3").Status != rollout.StatusFailed || res.Node("nats-1").Status != rollout.StatusSkipped {
			t.Fatalf("forced: %s %+v", res.Status, res.Nodes)
		}
	})
}

func TestFakeHandSwitchedNodeIsRefused(t *testing.T) {
	t.Parallel()
	w := newFakeWorld(t, 3)
	if _, res, _ := w.rollout(t.Context(), t, rollout.Request{RunID: "r1", Commit: "b", Targets: w.targets("b")}); res.Status != rollout.StatusSuccess {
		t.Fatal(res.Error)
	}
	hand := rollouttest.Toplevel("nats-2-by-hand")
	w.systems["nats-2"].SwitchByHand(hand)
	plan, res, _ := w.rollout(t.Context(), t, rollout.Request{RunID: "r2", Commit: "c", Targets: w.targets("c")})
	if res.Status != rollout.StatusRefused {
		t.Fatalf("result %s", res.Status)
	}
	for _, n := range w.top.NodeNames() {
		if len(w.systems[n].Activations()) != 1 {
			t.Errorf("%s was touched: %v", n, w.systems[n].Activations())
		}
	}
	mustContain(t, "refusal", strings.Join(plan.Problems, "\n"), "nats-2: switched by hand", "runs "+hand, "last deployed "+built("nats-2", "b"), "--force")
	_, res, _ = w.rollout(t.Context(), t, rollout.Request{RunID: "r3", Commit: "c", Targets: w.targets("c"), Force: true})
	if res.Status != rollout.StatusSuccess || w.systems["nats-2"].Running() != built("nats-2", "c") {
		t.Fatalf("forced: %s %s", res.Status, res.Error)
	}
}

func TestFakeCancelBetweenNodesFinishesTheNodeInFlight(t *testing.T) {
	t.Parallel()
	w := newFakeWorld(t, 3)
	w.cluster.SetLeader("nats-3")
	for _, s := range w.systems {
		s.SlowActivations(100 * time.Millisecond)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go func() {
		waitFor(t, 5*time.Second, "nats-1 activating", func() bool { return len(w.systems["nats-1"].Activations()) > 0 })
		cancel()
	}()
	plan, err := w.r.Plan(t.Context(), rollout.Request{RunID: "r", Commit: "b", Targets: w.targets("b")})
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	res := w.r.Run(ctx, plan, rec)
	if res.Status != rollout.StatusCancelled {
		t.Fatalf("result %s %s", res.Status, res.Error)
	}
	if nr := res.Node("nats-1"); nr.Status != rollout.StatusSuccess || w.systems["nats-1"].Running() != built("nats-1", "b") {
		t.Errorf("nats-1, in flight when cancelled, was not finished: %+v", nr)
	}
	for _, n := range []string{"nats-2", "nats-3"} {
		if res.Node(n).Status != rollout.StatusCancelled || rec.skipped[n] != rollout.StatusCancelled || len(w.systems[n].Activations()) != 0 {
			t.Errorf("%s: %+v", n, res.Node(n))
		}
	}
}

func TestFakeRevertAll(t *testing.T) {
	t.Parallel()
	w := newFakeWorld(t, 3)
	w.cluster.SetLeader("nats-3")
	w.cluster.Break(built("nats-3", "b"))
	_, res, _ := w.rollout(t.Context(), t, rollout.Request{RunID: "r", Commit: "b", Targets: w.targets("b"), RevertAll: true})
	if res.Status != rollout.StatusFailed || !res.Node("nats-3").RolledBack {
		t.Fatalf("result %s %+v", res.Status, res.Nodes)
	}
	if len(res.Reverted) != 2 || res.Reverted[0].Node != "nats-2" || res.Reverted[1].Node != "nats-1" {
		t.Fatalf("reverted %+v, want nats-2 then nats-1", res.Reverted)
	}
	for _, n := range w.top.NodeNames() {
		if w.systems[n].Running() != base(n) {
			t.Errorf("%s runs %s after --revert-all", n, w.systems[n].Running())
		}
		st, _, _ := rollout.ReadState(t.Context(), w.store, n)
		if st.Toplevel != base(n) || st.Generation != 1 {
			t.Errorf("%s state %+v", n, st)
		}
	}
	for _, r := range res.Reverted {
		if r.Status != rollout.StatusSuccess || r.Generation != 1 {
			t.Errorf("revert %+v", r)
		}
	}
	w.healthy(t)
}

func TestFakeRollbackToGeneration(t *testing.T) {
	t.Parallel()
	w := newFakeWorld(t, 3)
	if _, res, _ := w.rollout(t.Context(), t, rollout.Request{RunID: "r1", Commit: "b", Targets: w.targets("b")}); res.Status != rollout.StatusSuccess {
		t.Fatal(res.Error)
	}
	targets := []rollout.Target{{Node: "nats-2", Toplevel: base("nats-2"), Generation: 1, Commit: "a"}}
	_, res, _ := w.rollout(t.Context(), t, rollout.Request{RunID: "r2", Commit: "a", Targets: targets})
	if res.Status != rollout.StatusSuccess || res.Node("nats-2").Generation != 1 {
		t.Fatalf("result %s %s %+v", res.Status, res.Error, res.Nodes)
	}
	s := w.systems["nats-2"]
	gens, _ := s.Generations(t.Context())
	if s.Running() != base("nats-2") || !slices.Equal(generationNumbers(gens), []int{1, 2}) || rollout.CurrentGeneration(gens).Number != 1 {
		t.Errorf("runs %s, generations %+v", s.Running(), gens)
	}
	if st, _, _ := rollout.ReadState(t.Context(), w.store, "nats-2"); st.Commit != "a" || st.Generation != 1 {
		t.Errorf("state %+v", st)
	}
}

func TestFakeProvisionNewNode(t *testing.T) {
	t.Parallel()
	w := newFakeWorld(t, 4)
	newNode := w.systems["nats-4"]
	newNode.SwitchByHand(built("nats-4", "b")) // what its template boots
	w.proxmox.Attach(newNode.Node)             // no container: down
	tmpl := filepath.Join(t.TempDir(), "nats-4.tar.xz")
	if err := os.WriteFile(tmpl, []byte("template"), 0o644); err != nil {
		t.Fatal(err)
	}
	up, err := w.proxmox.UploadTemplate(t.Context(), remote.Template{Node: "nats-4", File: tmpl})
	if err != nil {
		t.Fatal(err)
	}
	targets := w.targets("b")
	targets[3].Template = up.Volume
	plan, res, _ := w.rollout(t.Context(), t, rollout.Request{RunID: "r", Commit: "b", Targets: targets})
	if plan.Nodes[0].Node != "nats-4" || plan.Nodes[0].Action != rollout.ActionProvision || len(plan.Members) != 3 {
		t.Fatalf("plan %+v", plan)
	}
	if res.Status != rollout.StatusSuccess {
		t.Fatalf("result %s %s", res.Status, res.Error)
	}
	if c, st := w.proxmox.Container(204); st != remote.ContainerRunning || c.Template != up.Volume || c.Hostname != "nats-4" {
		t.Errorf("container %+v %s", c, st)
	}
	w.healthy(t)
	if st, _, _ := rollout.ReadState(t.Context(), w.store, "nats-4"); st.Toplevel != built("nats-4", "b") || st.Commit != "b" {
		t.Errorf("state %+v", st)
	}
}

func TestFakeRunCancelledBeforeStartTouchesNothing(t *testing.T) {
	t.Parallel()
	w := newFakeWorld(t, 2)
	plan, err := w.r.Plan(t.Context(), rollout.Request{RunID: "r", Commit: "b", Targets: w.targets("b")})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	res := w.r.Run(ctx, plan, nil)
	if res.Status != rollout.StatusCancelled || len(w.systems["nats-1"].Activations()) != 0 {
		t.Fatalf("result %s %+v", res.Status, res.Nodes)
	}
}

func TestFakeFailedRollbackLeavesTheTimerAsBackstop(t *testing.T) {
	t.Parallel()
	w := newFakeWorld(t, 3)
	w.r.Config.ConfirmTimeout = 500 * time.Millisecond
	s := w.systems["nats-2"]
	s.FailNextActivation(4) // the switch: new system active, units failed
	s.FailNextActivation(2) // the controller's rollback: its activation script fails
	_, res, _ := w.rollout(t.Context(), t, rollout.Request{RunID: "r", Commit: "b", Targets: w.targets("b", "nats-2")})
	nr := res.Node("nats-2")
	if res.Status != rollout.StatusFailed || nr.RolledBack {
		t.Fatalf("result %s, %+v", res.Status, nr)
	}
	mustContain(t, "error", nr.Error, "units failed", "rollback: activate generation 1", "dead-man timer switches it back")
	waitFor(t, 5*time.Second, "the timer fired", func() bool { return strings.Contains(strings.Join(s.Log(), "\n"), "timer r fired") })
	waitFor(t, 5*time.Second, "the timer rolled nats-2 back", func() bool { return s.Running() == base("nats-2") })
}

func TestFakeTimerThatCannotArmChangesNothing(t *testing.T) {
	t.Parallel()
	w := newFakeWorld(t, 3)
	s := w.systems["nats-1"]
	gens, _ := s.Generations(t.Context())
	// A timer of the same id is armed already: systemd-run refuses the unit name.
	if _, err := s.Arm(t.Context(), "r", time.Hour, gens[0], gens[0]); err != nil {
		t.Fatal(err)
	}
	_, res, _ := w.rollout(t.Context(), t, rollout.Request{RunID: "r", Commit: "b", Targets: w.targets("b", "nats-1")})
	nr := res.Node("nats-1")
	if res.Status != rollout.StatusFailed || nr.RolledBack || !strings.Contains(nr.Error, "arm the dead-man rollback") {
		t.Fatalf("result %s, %+v", res.Status, nr)
	}
	after, _ := s.Generations(t.Context())
	if s.Running() != base("nats-1") || !slices.Equal(generationNumbers(after), []int{1}) || len(s.Activations()) != 0 {
		t.Errorf("runs %s, generations %v, activations %v: want nothing changed", s.Running(), generationNumbers(after), s.Activations())
	}
}

// TestFakeClusterSettlesBetweenNodes: after a node passes its gate, the next node waits until the
// whole cluster has settled (a stream replica caught up); the wait is polled, not fixed.
func TestFakeClusterSettlesBetweenNodes(t *testing.T) {
	t.Parallel()
	w := newFakeWorld(t, 3)
	w.cluster.Lag(3)
	_, res, _ := w.rollout(t.Context(), t, rollout.Request{RunID: "run-b", Commit: "b", Targets: w.targets("b")})
	if res.Status != rollout.StatusSuccess {
		t.Fatalf("rollout %s: %s", res.Status, res.Error)
	}
	// Before the second node: three answers of a lagging replica, then settled; before the third: settled.
	if got := w.cluster.Settles(); got != 5 {
		t.Errorf("%d settle checks, want 5 (none before the first node, 4 before the second, 1 before the third)", got)
	}
	w.healthy(t)
}

// TestFakeClusterThatDoesNotSettleHalts: a cluster that does not settle after a node's switch halts
// the rollout before the next node, says why, and rolls nothing back: the switched node passed its gate.
func TestFakeClusterThatDoesNotSettleHalts(t *testing.T) {
	t.Parallel()
	w := newFakeWorld(t, 3)
	w.cluster.SetLeader("nats-3")
	w.cluster.Lag(-1)
	_, res, _ := w.rollout(t.Context(), t, rollout.Request{RunID: "run-b", Commit: "b", Targets: w.targets("b")})
	if res.Status != rollout.StatusFailed || !strings.Contains(res.Error, "halted before nats-2: cluster not settled within ") ||
		!strings.Contains(res.Error, "replica") || !strings.Contains(res.Error, "CIMDEPLOY_ROLLOUT_SETTLE_TIMEOUT") {
		t.Fatalf("rollout %s: %q, want failed, halted before nats-2 naming the lagging replica", res.Status, res.Error)
	}
	if nr := res.Node("nats-1"); nr.Status != rollout.StatusSuccess || w.systems["nats-1"].Running() != built("nats-1", "b") {
		t.Errorf("nats-1 %+v runs %s: want switched and kept", nr, w.systems["nats-1"].Running())
	}
	for _, name := range []string{"nats-2", "nats-3"} {
		if nr := res.Node(name); nr.Status != rollout.StatusSkipped || w.systems[name].Running() != built(name, "a") {
			t.Errorf("%s %+v runs %s: want skipped, untouched", name, nr, w.systems[name].Running())
		}
	}
	if len(res.Reverted) != 0 || len(w.systems["nats-1"].Timers()) != 0 {
		t.Errorf("reverted %v, timers %v: want nothing reverted, no timer left", res.Reverted, w.systems["nats-1"].Timers())
	}
}
