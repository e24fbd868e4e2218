package rollout

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"

	"golang.org/x/sync/semaphore"

	"github.com/cimdeploy/cimdeploy/gitops/topology"
)

// GroupResult is how one group of the plan ended.
type GroupResult struct {
	Name   string   `json:"name"`
	Status Status   `json:"status"`
	After  []string `json:"after,omitempty"`
	// Why is what stopped the group: its failure, or why it did not start or go on.
	Why string `json:"why,omitempty"`
	// Sequential is the time of the group's sequential steps: each batch's slowest activation plus
	// rejoin, and the waits for its cluster to settle between nodes.
	Sequential time.Duration `json:"sequential_ns"`
}

// groupRun is one group's part of a Run, owned by the group's goroutine until done is closed.
type groupRun struct {
	g      Group
	done   chan struct{}
	status Status
	why    string
	seq    time.Duration
}

// groupsRun is a Run of the plan's groups side by side. Each group's nodes are written by the
// group's goroutine only (nodes by plan position); the rest is under mu.
type groupsRun struct {
	r     *Rollout
	plan  *Plan
	tr    Tracker
	log   *slog.Logger
	slots *semaphore.Weighted
	// maxParallel is the slots' size: the nodes switching at once.
	maxParallel int
	index       map[string]int
	nodes       []NodeResult
	// wait ends when the run is cancelled or halted: the waits for slots end with it, never a node.
	wait      context.Context
	stopWait  context.CancelFunc
	keepGoing bool
	groups    map[string]*groupRun
	mu        sync.Mutex
	res       *Result
	halted    string // why the groups stop (the first failure), "" while they go on
}

// runGroups runs the plan's groups, each in its own goroutine, a group after those it depends on,
// with at most MaxParallel nodes switching at once, and fills res: the nodes in plan order, the
// groups, the critical path.
func (r *Rollout) runGroups(ctx context.Context, plan *Plan, tr Tracker, res *Result, log *slog.Logger) {
	if len(plan.Groups) == 0 && len(plan.Nodes) > 0 { // a plan made without NewPlan
		planWaves(plan, r.Topology, nil, r.Config.maxParallel())
	}
	maxParallel := r.Config.maxParallel()
	if plan.MaxParallel > 0 {
		maxParallel = min(maxParallel, plan.MaxParallel)
	}
	gr := &groupsRun{r: r, plan: plan, tr: tr, log: log, res: res, keepGoing: r.Config.KeepGoing, maxParallel: maxParallel,
		slots: semaphore.NewWeighted(int64(maxParallel)), index: map[string]int{}, nodes: make([]NodeResult, len(plan.Nodes)),
		groups: map[string]*groupRun{}}
	gr.wait, gr.stopWait = context.WithCancel(ctx)
	defer gr.stopWait()
	for i, np := range plan.Nodes {
		gr.index[np.Node] = i
	}
	runs := make([]*groupRun, len(plan.Groups))
	for i, g := range plan.Groups {
		runs[i] = &groupRun{g: g, done: make(chan struct{}), status: StatusSuccess}
		gr.groups[g.Name] = runs[i]
	}
	var wg sync.WaitGroup
	for _, run := range runs {
		wg.Go(func() {
			defer close(run.done)
			gr.runGroup(ctx, run)
		})
	}
	wg.Wait()
	for i := range gr.nodes {
		if gr.nodes[i].Node != "" {
			res.Nodes = append(res.Nodes, gr.nodes[i])
		}
	}
	cp := map[string]time.Duration{}
	for _, run := range runs { // dependencies come first in the plan's order
		var before time.Duration
		for _, dep := range run.g.After {
			before = max(before, cp[dep])
		}
		cp[run.g.Name] = before + run.seq
		res.CriticalPath = max(res.CriticalPath, cp[run.g.Name])
		res.Groups = append(res.Groups, GroupResult{Name: run.g.Name, Status: run.status, After: run.g.After, Why: run.why, Sequential: run.seq})
	}
}

// outcome sets the rollout's status unless a weightier one is set: a failure outweighs a
// cancellation, which outweighs success; the first of equal weight stays.
func (gr *groupsRun) outcome(status Status, why string) {
	gr.mu.Lock()
	defer gr.mu.Unlock()
	weight := func(s Status) int {
		switch s {
		case StatusFailed:
			return 2
		case StatusCancelled:
			return 1
		}
		return 0
	}
	if weight(status) > weight(gr.res.Status) {
		gr.res.Status, gr.res.Error = status, why
	}
}

// fail records group g's failure and, without --keep-going, halts the other groups: each finishes
// the node in flight and stops.
func (gr *groupsRun) fail(g Group, why string) {
	gr.outcome(StatusFailed, why)
	if gr.keepGoing {
		return
	}
	gr.mu.Lock()
	defer gr.mu.Unlock()
	if gr.halted == "" {
		gr.halted = g.Name + " failed"
		gr.stopWait()
	}
}

func (gr *groupsRun) haltedWhy() string {
	gr.mu.Lock()
	defer gr.mu.Unlock()
	return gr.halted
}

// skip records nodes the group did not reach.
func (gr *groupsRun) skip(run *groupRun, nodes []string, status Status, why string) {
	gr.tr.Skip(nodes, status, why)
	for _, n := range nodes {
		np := gr.plan.Nodes[gr.index[n]]
		gr.nodes[gr.index[n]] = NodeResult{Node: n, Action: np.Action, Status: status, Group: run.g.Name, Commit: np.CurrentCommit}
	}
}

// dependency is why run must not start: a group it depends on did not succeed ("" when none).
func (gr *groupsRun) dependency(run *groupRun) (Status, string) {
	for _, dep := range run.g.After {
		d := gr.groups[dep]
		<-d.done
		if d.status == StatusSuccess {
			continue
		}
		hub := dep
		if run.g.Kind == GroupLeaves {
			hub = "hub " + dep
		}
		if d.status == StatusFailed {
			return StatusSkipped, "not started: " + hub + " failed"
		}
		return d.status, "not started: " + hub + " did not finish"
	}
	return StatusSuccess, ""
}

// runGroup is one group's rolling loop: its batches in order, the cluster settled between two nodes,
// cancellation and a halt checked between batches only. A node in flight is finished.
func (gr *groupsRun) runGroup(ctx context.Context, run *groupRun) {
	r, plan, g := gr.r, gr.plan, run.g
	log := gr.log
	if len(plan.Groups) > 1 {
		log = log.With("group", g.Name)
	}
	all := g.Nodes()
	if status, why := gr.dependency(run); why != "" {
		run.status, run.why = status, why
		gr.skip(run, all, status, why)
		return
	}
	members := slices.Clone(g.Members)
	var switched []NodeResult
	changed := false // a node of this group was switched or provisioned: the cluster must settle before the next
	done := 0        // nodes of the group handled so far
	for _, batch := range g.Batches {
		rest := all[done:]
		work := 0
		for _, n := range batch {
			if changes(plan.Nodes[gr.index[n]]) {
				work++
			}
		}
		var settleErr error
		if g.Kind == GroupCluster && changed && work > 0 && ctx.Err() == nil && gr.haltedWhy() == "" {
			start := time.Now()
			settleErr = r.settle(ctx, members, log.With("next", batch[0]))
			run.seq += time.Since(start)
		}
		slots := int64(min(work, gr.maxParallel)) // a batch planned with a larger bound takes every slot
		acquired := work > 0 && settleErr == nil && gr.slots.Acquire(gr.wait, slots) == nil
		release := func() {
			if acquired {
				gr.slots.Release(slots)
			}
		}
		if err := ctx.Err(); err != nil {
			release()
			why := "cancelled before " + batch[0] + ": " + context.Cause(ctx).Error()
			run.status, run.why = StatusCancelled, why
			gr.outcome(StatusCancelled, why)
			gr.skip(run, rest, StatusCancelled, "not started: "+context.Cause(ctx).Error())
			return
		}
		if halted := gr.haltedWhy(); halted != "" {
			release()
			run.status, run.why = StatusSkipped, "stopped: "+halted
			gr.skip(run, rest, StatusSkipped, "not started: "+halted+" (--keep-going lets the other groups go on)")
			return
		}
		if settleErr != nil {
			// Halt, without rolling back: every node switched so far passed its gate.
			run.status, run.why = StatusFailed, "halted before "+batch[0]+": "+settleErr.Error()
			gr.fail(g, run.why)
			gr.skip(run, rest, StatusSkipped, "not started: the cluster did not settle")
			log.Error("rollout halted: the cluster did not settle", "next", batch[0], "err", settleErr)
			return
		}
		results := make([]NodeResult, len(batch))
		var wg sync.WaitGroup
		for i, n := range batch {
			np := plan.Nodes[gr.index[n]]
			one := func() { results[i] = r.step(ctx, plan, np, len(members), gr.tr, log.With("node", n)) }
			if len(batch) == 1 {
				one()
			} else {
				wg.Go(one)
			}
		}
		wg.Wait()
		release()
		done += len(batch)
		var slowest time.Duration
		failed, failedNode := "", ""
		for i, nr := range results {
			np := plan.Nodes[gr.index[batch[i]]]
			nr.Group, nr.Commit = g.Name, commitAfter(np, nr)
			gr.nodes[gr.index[batch[i]]] = nr
			slowest = max(slowest, nr.Activation+nr.Rejoin)
			switch {
			case nr.Status == StatusFailed:
				if failed == "" {
					failed, failedNode = np.Node+": "+nr.Error, np.Node
				}
				continue
			case np.Action == ActionProvision || (np.Action == ActionRecreate && np.Current == ""):
				changed = true
				if g.Kind != GroupCluster {
					break
				}
				members = append(members, np.Node)
			case np.Action == ActionRecreate:
				changed = true
			}
			if np.Action == ActionSwitch {
				switched = append(switched, nr)
				changed = true
			}
		}
		run.seq += slowest
		if failed != "" {
			run.status, run.why = StatusFailed, failed
			gr.fail(g, failed)
			gr.skip(run, all[done:], StatusSkipped, "not started: "+failedNode+" failed")
			if plan.RevertAll {
				gr.reverted(r.revertAll(ctx, plan, switched, len(members), log))
			}
			return
		}
	}
}

// reverted records the nodes --revert-all switched back: they run the commit they ran before.
func (gr *groupsRun) reverted(nrs []NodeResult) {
	gr.mu.Lock()
	defer gr.mu.Unlock()
	gr.res.Reverted = append(gr.res.Reverted, nrs...)
	for _, nr := range nrs {
		if nr.Status != StatusSuccess {
			continue
		}
		if i, ok := gr.index[nr.Node]; ok {
			gr.nodes[i].Commit = gr.plan.Nodes[i].CurrentCommit
		}
	}
}

// commitAfter is the commit node runs after its step: the target's when it got there, the one it ran
// when it was rolled back or nothing changed on it, "" when that is unknown (its rollback failed).
func commitAfter(np NodePlan, nr NodeResult) string {
	switch {
	case nr.Status == StatusSuccess, nr.Action == ActionSkip:
		return np.TargetCommit
	case nr.RolledBack, nr.Generation == 0 && np.Action == ActionSwitch:
		return np.CurrentCommit
	}
	return ""
}

// health is the NATS side of a node's gate, by its role: a cluster member is healthy and clustered
// with peers others; a leaf is healthy with at least LeafConnections leafnode connections to its hub
// (its peers are the hub's, not its own); a node of a role without NATS has no NATS side.
func (r *Rollout) health(ctx context.Context, node string, peers int) error {
	switch role := placeNode(r.Topology, node).role; {
	case role == topology.RoleNATSLeaf:
		return r.Cluster.Health(ctx, node, LeafConnections)
	case !topology.RunsNATS(role):
		return nil
	}
	return r.Cluster.Health(ctx, node, peers)
}

// LeafConnections is how many leafnode connections to its hub a healthy leaf has: one per remote
// (the projection gives a leaf one remote, listing every member of the hub).
const LeafConnections = 1
