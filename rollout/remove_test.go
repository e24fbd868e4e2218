package rollout_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/cimdeploy/cimdeploy/gitops/topology"
	"github.com/cimdeploy/cimdeploy/remote"
	"github.com/cimdeploy/cimdeploy/rollout"
)

// removalInput is a cluster of nats-1 and nats-2, both to switch, and nats-3, which the events
// removed and which still runs, with streams.
func removalInput(streams ...rollout.StreamCopy) rollout.PlanInput {
	obs := []rollout.Observation{
		{Node: "nats-3", Removed: true, Reachable: true, Container: "running", VMID: 203, Streams: streams},
	}
	var targets []rollout.Target
	for _, n := range []string{"nats-1", "nats-2"} {
		gens := []rollout.Generation{{Number: 1, Toplevel: base(n)}}
		obs = append(obs, rollout.Observation{Node: n, Reachable: true, Healthy: true, Current: base(n), Generations: gens})
		targets = append(targets, rollout.Target{Node: n, Toplevel: built(n, "b"), Commit: "b"})
	}
	return rollout.PlanInput{RunID: "r1", Commit: "b", Targets: targets, Observed: obs, Leader: "nats-1"}
}

func TestPlanRemovesANodeAfterTheSwitches(t *testing.T) {
	t.Parallel()
	in := removalInput(rollout.StreamCopy{Account: "APP", Stream: "ORDERS", Replicas: 3, Elsewhere: 2})
	in.DestroyRemoved = true
	p := rollout.NewPlan(in)
	if p.Refused() {
		t.Fatalf("refused: %v", p.Problems)
	}
	if !slices.Equal(p.Members, []string{"nats-1", "nats-2", "nats-3"}) {
		t.Errorf("members %v: a removed node still running counts in every gate until it is out", p.Members)
	}
	if len(p.Nodes) != 2 || len(p.Removals) != 1 || p.Changes() != 3 {
		t.Fatalf("nodes %+v removals %+v changes %d", p.Nodes, p.Removals, p.Changes())
	}
	rm := p.Removals[0]
	steps := strings.Join(rm.Steps, "\n")
	for _, want := range []string{"stream", "pct stop 203", `$JS.API.SERVER.REMOVE {"peer":"nats-3"}`, "pct destroy 203 --purge 1", "record it as removed"} {
		if !strings.Contains(steps, want) {
			t.Errorf("steps lack %q:\n%s", want, steps)
		}
	}
	if !rm.Destroy || rm.Deferred != "" {
		t.Errorf("removal %+v", rm)
	}

	// Without --destroy-removed the container stays.
	in.DestroyRemoved = false
	if steps := strings.Join(rollout.NewPlan(in).Removals[0].Steps, "\n"); strings.Contains(steps, "destroy") {
		t.Errorf("destroys without DestroyRemoved:\n%s", steps)
	}
}

func TestPlanRefusesToLoseTheOnlyCopyOfAStream(t *testing.T) {
	t.Parallel()
	p := rollout.NewPlan(removalInput(
		rollout.StreamCopy{Account: "APP", Stream: "ORDERS", Replicas: 3, Elsewhere: 2},
		rollout.StreamCopy{Account: "APP", Stream: "SCRATCH", Replicas: 1, Elsewhere: 0}))
	if !p.Refused() {
		t.Fatal("not refused with an R1 stream on the removed node")
	}
	got := strings.Join(p.Problems, "\n")
	if !strings.Contains(got, "removing nats-3") || !strings.Contains(got, "APP/SCRATCH (R1") || strings.Contains(got, "ORDERS") {
		t.Errorf("problems should name SCRATCH only:\n%s", got)
	}
}

func TestPlanNeedsTheSystemAccountToRemove(t *testing.T) {
	t.Parallel()
	in := removalInput()
	in.RemoveProblem = "needs the NATS system account"
	p := rollout.NewPlan(in)
	if !p.Refused() || !strings.Contains(strings.Join(p.Problems, "\n"), "removing nats-3: needs the NATS system account") {
		t.Errorf("problems %v", p.Problems)
	}
}

func TestPlanDefersARemovalUntilEveryRemainingNodeIsRolledOut(t *testing.T) {
	t.Parallel()
	in := removalInput()
	in.Targets = in.Targets[:1] // nats-1 only
	in.RemoveProblem = "needs the NATS system account"
	p := rollout.NewPlan(in)
	if p.Refused() {
		t.Errorf("a deferred removal refuses the rollout: %v", p.Problems)
	}
	if len(p.Removals) != 1 || !strings.Contains(p.Removals[0].Deferred, "nats-2 is not part of this rollout") || len(p.Removals[0].Steps) != 0 {
		t.Fatalf("removals %+v", p.Removals)
	}
	if p.Changes() != 1 || !slices.Contains(p.Members, "nats-3") {
		t.Errorf("changes %d, members %v", p.Changes(), p.Members)
	}
}

// removedWorld is a fake world of three nodes whose events removed nats-3, which still runs in its
// container 203 on the fake Proxmox host.
func removedWorld(t *testing.T) *fakeWorld {
	t.Helper()
	w := newFakeWorld(t, 3)
	w.top.Removed = map[string]topology.Node{"nats-3": w.top.Nodes["nats-3"]}
	delete(w.top.Nodes, "nats-3")
	w.proxmox.Attach(w.systems["nats-3"].Node)
	w.proxmox.AddContainer(remote.Container{VMID: 203, Hostname: "nats-3"}, true)
	return w
}

func TestRolloutTakesARemovedNodeOut(t *testing.T) {
	t.Parallel()
	w := removedWorld(t)
	w.cluster.SetStreams("nats-3", rollout.StreamCopy{Account: "APP", Stream: "ORDERS", Replicas: 3, Elsewhere: 2})
	ctx := t.Context()
	plan, res, _ := w.rollout(ctx, t, rollout.Request{RunID: "r1", Commit: "b", Targets: w.targets("b"), DestroyRemoved: true})
	if res.Status != rollout.StatusSuccess {
		t.Fatalf("rollout %s: %s\n%s", res.Status, res.Error, w.log)
	}
	if got := strings.Join(nodeOrder(res), ","); got != "nats-2,nats-1,nats-3" && got != "nats-1,nats-2,nats-3" {
		t.Errorf("order %s: the removal comes after the switches", got)
	}
	if nr := res.Node("nats-3"); nr == nil || nr.Action != rollout.ActionRemove || nr.Status != rollout.StatusSuccess || !nr.Destroyed {
		t.Errorf("nats-3: %+v", nr)
	}
	if len(plan.Removals) != 1 || !plan.Removals[0].Running {
		t.Errorf("removals %+v", plan.Removals)
	}
	if w.cluster.InMeta("nats-3") {
		t.Error("nats-3 is still in the meta group")
	}
	if _, st := w.proxmox.Container(203); st != remote.ContainerMissing {
		t.Errorf("container 203 is %s, want destroyed", st)
	}
	rec, _, err := rollout.ReadState(ctx, w.store, "nats-3")
	if err != nil || rec.Removed.IsZero() || rec.RemovedRunID != "r1" || !rec.Destroyed {
		t.Errorf("record of nats-3: %+v, %v", rec, err)
	}
	for _, n := range []string{"nats-1", "nats-2"} {
		if err := w.cluster.Health(ctx, n, 1); err != nil {
			t.Errorf("%s after the removal: %v", n, err)
		}
	}

	// Taken out: the next rollout has nothing to remove.
	plan, err = w.r.Plan(ctx, rollout.Request{RunID: "r2", Commit: "b", Targets: w.targets("b")})
	if err != nil || len(plan.Removals) != 0 || plan.Refused() {
		t.Errorf("plan after the removal: %+v, %v", plan, err)
	}
}

func TestRolloutKeepsAContainerAndRefusesToLoseAStream(t *testing.T) {
	t.Parallel()
	w := removedWorld(t)
	ctx := t.Context()
	plan, err := w.r.Plan(ctx, rollout.Request{RunID: "r1", Commit: "b", Targets: w.targets("b")})
	if err != nil || plan.Refused() {
		t.Fatalf("plan: %v %v", plan.Problems, err)
	}
	// An R1 stream lands on nats-3 after the plan: the removal checks again and stops there.
	w.cluster.SetStreams("nats-3", rollout.StreamCopy{Account: "APP", Stream: "SCRATCH", Replicas: 1})
	res := w.r.Run(ctx, plan, nil)
	if res.Status != rollout.StatusFailed || !strings.Contains(res.Error, "APP/SCRATCH (R1") {
		t.Fatalf("rollout %s: %s", res.Status, res.Error)
	}
	if !w.cluster.InMeta("nats-3") || !w.systems["nats-3"].Up() {
		t.Error("nats-3 was touched")
	}
	// The stream gone, without --destroy-removed: stopped and out, its container kept.
	w.cluster.SetStreams("nats-3")
	plan, res, _ = w.rollout(ctx, t, rollout.Request{RunID: "r2", Commit: "b", Targets: w.targets("b")})
	if res.Status != rollout.StatusSuccess || w.cluster.InMeta("nats-3") {
		t.Fatalf("rollout %s: %s", res.Status, res.Error)
	}
	if _, st := w.proxmox.Container(203); st != remote.ContainerStopped {
		t.Errorf("container 203 is %s, want stopped and kept", st)
	}
	if rec, _, _ := rollout.ReadState(ctx, w.store, "nats-3"); rec.Removed.IsZero() || rec.Destroyed {
		t.Errorf("record of nats-3: %+v", rec)
	}
}

// TestRolloutRemovesFromTheirOwnCluster: in a fleet of two clusters with leaves, a removed member of
// c2 leaves c2's meta group, asked through c2's members, which alone are gated (each routed to the
// other remaining one); c1 is not asked and keeps its meta group; a removed leaf is stopped and
// recorded without any meta group.
func TestRolloutRemovesFromTheirOwnCluster(t *testing.T) {
	t.Parallel()
	w := newFleetWorld(t, fleet{clusters: []string{"c1", "c2"}, members: 3, leaves: 1}, fastConfig())
	w.top.Removed = map[string]topology.Node{}
	for _, n := range []string{"c2-3", "leaf-c1-1"} {
		w.top.Removed[n] = w.top.Nodes[n]
		delete(w.top.Nodes, n)
		w.proxmox.Attach(w.systems[n].Node)
		w.proxmox.AddContainer(remote.Container{VMID: w.top.Removed[n].Proxmox.VMID, Hostname: n}, true)
	}
	w.cluster.SetStreams("c2-3", rollout.StreamCopy{Account: "APP", Stream: "ORDERS", Replicas: 3, Elsewhere: 2})
	w.cluster.SetStreams("leaf-c1-1", rollout.StreamCopy{Account: "APP", Stream: "EDGE", Replicas: 1, Elsewhere: 0})
	ctx := t.Context()
	plan, err := w.r.Plan(ctx, rollout.Request{RunID: "r1", Commit: "b", Targets: w.targets("b"), Force: true})
	if err != nil {
		t.Fatal(err)
	}
	steps := map[string]string{}
	for _, rm := range plan.Removals {
		steps[rm.Node] = strings.Join(rm.Steps, "\n")
	}
	mustContain(t, "c2-3's steps", steps["c2-3"], "meta group of cluster c2", "every remaining member of cluster c2")
	if strings.Contains(steps["leaf-c1-1"], "meta group") || !strings.Contains(steps["leaf-c1-1"], "pct stop") {
		t.Errorf("the leaf's steps:\n%s", steps["leaf-c1-1"])
	}
	res := w.r.Run(ctx, plan, nil)
	if res.Status != rollout.StatusSuccess {
		t.Fatalf("rollout %s: %s\n%s", res.Status, res.Error, w.log)
	}
	for _, n := range []string{"c2-3", "leaf-c1-1"} {
		if nr := res.Node(n); nr == nil || nr.Action != rollout.ActionRemove || nr.Status != rollout.StatusSuccess {
			t.Errorf("%s: %+v", n, nr)
		}
		rec, _, err := rollout.ReadState(ctx, w.store, n)
		if err != nil || rec.Removed.IsZero() {
			t.Errorf("record of %s: %+v, %v", n, rec, err)
		}
	}
	if w.cluster.InMeta("c2-3") {
		t.Error("c2-3 is still in c2's meta group")
	}
	for _, n := range []string{"c1-1", "c1-2", "c1-3"} {
		if !w.cluster.InMeta(n) {
			t.Errorf("%s left c1's meta group", n)
		}
		if err := w.cluster.Health(ctx, n, 2); err != nil {
			t.Errorf("%s: %v", n, err)
		}
	}
	for _, n := range []string{"c2-1", "c2-2"} {
		if err := w.cluster.Health(ctx, n, 1); err != nil {
			t.Errorf("%s after the removal: %v", n, err)
		}
	}
}
