package rollout_test

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cimdeploy/cimdeploy/gitops/topology"
	"github.com/cimdeploy/cimdeploy/pipeline/store"
	"github.com/cimdeploy/cimdeploy/remote/remotetest"
	"github.com/cimdeploy/cimdeploy/rollout"
	"github.com/cimdeploy/cimdeploy/rollout/rollouttest"
)

// newFleetWorld is f as fake nodes: each cluster's members joined, its first member the meta
// leader, the leaves attached to their hub, storage nodes outside NATS; every node runs its commit a.
func newFleetWorld(t testing.TB, f fleet, cfg rollout.Config) *fakeWorld {
	t.Helper()
	w := &fakeWorld{top: f.topology(), systems: map[string]*rollouttest.System{}, proxmox: remotetest.NewProxmox("pve"), log: &syncBuffer{}}
	var nats []*rollouttest.System
	systems := map[string]rollout.System{}
	for _, name := range w.top.NodeNames() {
		s := rollouttest.NewSystem(name, base(name))
		s.SetRevision(base(name), "a")
		t.Cleanup(s.Close)
		w.systems[name] = s
		systems[name] = s
		if topology.RunsNATS(w.top.Nodes[name].Role) {
			nats = append(nats, s)
		}
	}
	w.cluster = rollouttest.NewCluster(nats...)
	for c, members := range w.top.Clusters() {
		w.cluster.Join(c, members...)
		w.cluster.Attach(c, w.top.Leaves(c)...)
	}
	st, err := store.Open(t.Context(), store.Config{DataDir: t.TempDir()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	w.store = st
	w.r = &rollout.Rollout{Topology: w.top, Systems: systems, Cluster: w.cluster, States: st, Proxmox: w.proxmox,
		Config: cfg, Logger: slog.New(slog.NewTextHandler(w.log, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	return w
}

// gatedTracker is a recorder whose steps of some nodes wait for a channel before they start, and
// which tells when a node's step ended.
type gatedTracker struct {
	recorder
	hold    map[string]<-chan struct{}
	holdEnd map[string]<-chan struct{} // a step's end waits for it
	mu      sync.Mutex
	skipped map[string]chan struct{} // closed when the node is skipped
	arrived map[string]chan struct{} // closed when the node's step is asked for
	ended   map[string]chan struct{}
	// events are "start X" and "end X" in the order they happened.
	events []string
}

func newGatedTracker(nodes []string) *gatedTracker {
	g := &gatedTracker{hold: map[string]<-chan struct{}{}, holdEnd: map[string]<-chan struct{}{},
		arrived: map[string]chan struct{}{}, ended: map[string]chan struct{}{}, skipped: map[string]chan struct{}{}}
	for _, n := range nodes {
		g.arrived[n], g.ended[n], g.skipped[n] = make(chan struct{}), make(chan struct{}), make(chan struct{})
	}
	return g
}

// all is closed once every one of chans is.
func all(chans ...chan struct{}) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		for _, c := range chans {
			<-c
		}
		close(done)
	}()
	return done
}

func (g *gatedTracker) event(e string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.events = append(g.events, e)
}

func (g *gatedTracker) Step(ctx context.Context, node string, fn func(ctx context.Context, st rollout.Step) error) error {
	close(g.arrived[node])
	wait(node, g.hold[node])
	g.event("start " + node)
	err := g.recorder.Step(ctx, node, fn)
	wait(node, g.holdEnd[node])
	g.event("end " + node)
	close(g.ended[node])
	return err
}

func (g *gatedTracker) Skip(nodes []string, status rollout.Status, why string) {
	g.recorder.Skip(nodes, status, why)
	for _, n := range nodes {
		close(g.skipped[n])
	}
}

// wait waits for h (nil: not at all); a wait of 10s means the groups do not run side by side.
func wait(node string, h <-chan struct{}) {
	if h == nil {
		return
	}
	select {
	case <-h:
	case <-time.After(10 * time.Second):
		panic("the step of " + node + " waited 10s: the groups do not run side by side")
	}
}

func (g *gatedTracker) at(e string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Index(g.events, e)
}

// TestWavesRunClustersSideBySideLeavesAfterTheirHub rolls three clusters with leaves and storage
// nodes: the clusters' first nodes are in flight at once (each waits for the others' to start), a
// leaf starts only after every member of its hub ended, and every node ends on the new commit.
func TestWavesRunClustersSideBySideLeavesAfterTheirHub(t *testing.T) {
	t.Parallel()
	cfg := fastConfig()
	cfg.MaxParallel = 6
	w := newFleetWorld(t, fleet{clusters: []string{"east", "north", "west"}, members: 3, leaves: 3, leafMax: 2, storage: 2, storageMax: 2}, cfg)
	plan, err := w.r.Plan(t.Context(), rollout.Request{RunID: "waves", Commit: "b", Targets: w.targets("b")})
	if err != nil {
		t.Fatal(err)
	}
	tr := newGatedTracker(w.top.NodeNames())
	// east-2, north-2 and west-2 (the first of each cluster) each wait for the two others to be asked for.
	tr.hold["east-2"] = all(tr.arrived["north-2"], tr.arrived["west-2"])
	tr.hold["north-2"] = all(tr.arrived["east-2"], tr.arrived["west-2"])
	tr.hold["west-2"] = all(tr.arrived["east-2"], tr.arrived["north-2"])
	res := w.r.Run(t.Context(), plan, tr)
	if res.Status != rollout.StatusSuccess {
		t.Fatalf("rollout %s: %s\n%s", res.Status, res.Error, w.log)
	}
	for _, c := range []string{"east", "north", "west"} {
		for _, leaf := range w.top.Leaves(c) {
			for _, m := range w.top.Clusters()[c] {
				if tr.at("start "+leaf) < tr.at("end "+m) {
					t.Errorf("%s started before its hub's member %s ended: %v", leaf, m, tr.events)
				}
			}
		}
	}
	for _, n := range res.Nodes {
		if n.Status != rollout.StatusSuccess || n.Commit != "b" || w.systems[n.Node].Running() != built(n.Node, "b") {
			t.Errorf("%s: %s, commit %q, runs %s; want success on commit b", n.Node, n.Status, n.Commit, w.systems[n.Node].Running())
		}
	}
	if len(res.Nodes) != len(w.top.Nodes) || len(res.Groups) != 7 {
		t.Errorf("%d node results, %d groups; want %d and 7", len(res.Nodes), len(res.Groups), len(w.top.Nodes))
	}
	var longest time.Duration
	for _, g := range res.Groups {
		if g.Status != rollout.StatusSuccess || g.Sequential <= 0 {
			t.Errorf("group %+v: want success with its sequential time", g)
		}
		longest = max(longest, g.Sequential)
	}
	if res.CriticalPath < longest {
		t.Errorf("critical path %s is shorter than the longest group %s", res.CriticalPath, longest)
	}
}

// TestWavesFailureHaltsItsClusterAndLeaves fails the first node of cluster east while the first
// nodes of north and west are in flight: east halts and its leaves never start; north and west
// finish their node in flight and stop (or, with --keep-going, go on to the end with their leaves).
// The result says which commit each node runs.
func TestWavesFailureHaltsItsClusterAndLeaves(t *testing.T) {
	t.Parallel()
	for _, keepGoing := range []bool{false, true} {
		t.Run(map[bool]string{false: "halt", true: "keep-going"}[keepGoing], func(t *testing.T) {
			t.Parallel()
			cfg := fastConfig()
			cfg.MaxParallel, cfg.KeepGoing = 6, keepGoing
			w := newFleetWorld(t, fleet{clusters: []string{"east", "north", "west"}, members: 3, leaves: 2, leafMax: 2}, cfg)
			w.cluster.Break(built("east-2", "b"))
			plan, err := w.r.Plan(t.Context(), rollout.Request{RunID: "fail", Commit: "b", Targets: w.targets("b")})
			if err != nil {
				t.Fatal(err)
			}
			tr := newGatedTracker(w.top.NodeNames())
			// north-2 and west-2 are in flight until east halted (east-3 skipped).
			tr.holdEnd["north-2"], tr.holdEnd["west-2"] = tr.skipped["east-3"], tr.skipped["east-3"]
			res := w.r.Run(t.Context(), plan, tr)
			if res.Status != rollout.StatusFailed || !strings.HasPrefix(res.Error, "east-2: ") {
				t.Fatalf("rollout %s: %s; want failed at east-2\n%s", res.Status, res.Error, w.log)
			}
			want := map[string]struct {
				status rollout.Status
				commit string
			}{
				"east-2": {rollout.StatusFailed, "a"}, "east-3": {rollout.StatusSkipped, "a"}, "east-1": {rollout.StatusSkipped, "a"},
				"leaf-east-1": {rollout.StatusSkipped, "a"}, "leaf-east-2": {rollout.StatusSkipped, "a"},
				"north-2": {rollout.StatusSuccess, "b"}, "west-2": {rollout.StatusSuccess, "b"},
			}
			rest := rollout.NodeResult{Status: rollout.StatusSkipped, Commit: "a"}
			if keepGoing {
				rest = rollout.NodeResult{Status: rollout.StatusSuccess, Commit: "b"}
			}
			for _, n := range []string{"north-3", "north-1", "west-3", "west-1", "leaf-north-1", "leaf-north-2", "leaf-west-1", "leaf-west-2"} {
				want[n] = struct {
					status rollout.Status
					commit string
				}{rest.Status, rest.Commit}
			}
			for n, wn := range want {
				nr := res.Node(n)
				if nr == nil || nr.Status != wn.status || nr.Commit != wn.commit {
					t.Errorf("%s: %+v; want %s on commit %s", n, nr, wn.status, wn.commit)
				}
			}
			if !res.Node("east-2").RolledBack || w.systems["east-2"].Running() != base("east-2") {
				t.Errorf("east-2 not rolled back: %+v", res.Node("east-2"))
			}
			groups := map[string]rollout.GroupResult{}
			for _, g := range res.Groups {
				groups[g.Name] = g
			}
			if g := groups["leaves of east"]; g.Status != rollout.StatusSkipped || g.Why != "not started: hub cluster east failed" {
				t.Errorf("leaves of east: %+v", g)
			}
			if g := groups["cluster north"]; keepGoing != (g.Status == rollout.StatusSuccess) {
				t.Errorf("cluster north: %+v (keep going %v)", g, keepGoing)
			}
			if !keepGoing && !strings.Contains(groups["cluster west"].Why, "cluster east failed") {
				t.Errorf("cluster west: %+v; want it stopped by east's failure", groups["cluster west"])
			}
		})
	}
}

// TestWavesRevertAllPerGroup fails east's second node with --revert-all: east's first node is
// reverted, the other clusters' nodes are not.
func TestWavesRevertAllPerGroup(t *testing.T) {
	t.Parallel()
	cfg := fastConfig()
	cfg.KeepGoing = true
	w := newFleetWorld(t, fleet{clusters: []string{"east", "west"}, members: 3}, cfg)
	w.cluster.Break(built("east-3", "b"))
	plan, err := w.r.Plan(t.Context(), rollout.Request{RunID: "revert", Commit: "b", Targets: w.targets("b"), RevertAll: true})
	if err != nil {
		t.Fatal(err)
	}
	res := w.r.Run(t.Context(), plan, nil) // LogTracker, from both groups at once
	if res.Status != rollout.StatusFailed || len(res.Reverted) != 1 || res.Reverted[0].Node != "east-2" || res.Reverted[0].Status != rollout.StatusSuccess {
		t.Fatalf("rollout %s %s, reverted %+v; want east-2 reverted\n%s", res.Status, res.Error, res.Reverted, w.log)
	}
	if w.systems["east-2"].Running() != base("east-2") || res.Node("east-2").Commit != "a" {
		t.Errorf("east-2 runs %s, result %+v; want it back on commit a", w.systems["east-2"].Running(), res.Node("east-2"))
	}
	for _, n := range []string{"west-1", "west-2", "west-3"} {
		if w.systems[n].Running() != built(n, "b") || res.Node(n).Commit != "b" {
			t.Errorf("%s runs %s: want commit b, west is independent of east", n, w.systems[n].Running())
		}
	}
}

// TestWavesStorageHasNoNATSGate rolls storage nodes, which run no NATS server: their gate is the new
// SSH connection only, and the fake cluster is never asked about them.
func TestWavesStorageHasNoNATSGate(t *testing.T) {
	t.Parallel()
	w := newFleetWorld(t, fleet{clusters: []string{"east"}, members: 1, storage: 3, storageMax: 3}, fastConfig())
	_, res, _ := w.rollout(t.Context(), t, rollout.Request{RunID: "storage", Commit: "b", Targets: w.targets("b")})
	if res.Status != rollout.StatusSuccess {
		t.Fatalf("rollout %s: %s\n%s", res.Status, res.Error, w.log)
	}
	for _, n := range []string{"storage-1", "storage-2", "storage-3"} {
		if w.cluster.Checks(n) != 0 || w.systems[n].Running() != built(n, "b") {
			t.Errorf("%s: %d NATS checks, runs %s", n, w.cluster.Checks(n), w.systems[n].Running())
		}
	}
}

// TestWavesRunWithFewerSlotsThanThePlanned: a plan made with --max-parallel 6 (leaf batches of 3) run
// with 2 slots finishes: a batch bigger than the slots takes them all.
func TestWavesRunWithFewerSlotsThanThePlanned(t *testing.T) {
	t.Parallel()
	cfg := fastConfig()
	cfg.MaxParallel = 6
	w := newFleetWorld(t, fleet{clusters: []string{"east"}, members: 1, leaves: 5, leafMax: 3}, cfg)
	plan, err := w.r.Plan(t.Context(), rollout.Request{RunID: "slots", Commit: "b", Targets: w.targets("b")})
	if err != nil {
		t.Fatal(err)
	}
	if g := group(plan, "leaves of east"); g.Batch != 3 {
		t.Fatalf("leaves %+v: want batches of 3", g)
	}
	w.r.Config.MaxParallel = 2
	if res := w.r.Run(t.Context(), plan, &recorder{}); res.Status != rollout.StatusSuccess {
		t.Fatalf("rollout %s: %s", res.Status, res.Error)
	}
}
