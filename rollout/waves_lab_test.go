package rollout_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cimdeploy/cimdeploy/fixtures/lab"
	"github.com/cimdeploy/cimdeploy/gitops/topology"
	"github.com/cimdeploy/cimdeploy/pipeline/store"
	"github.com/cimdeploy/cimdeploy/remote"
	"github.com/cimdeploy/cimdeploy/rollout"
)

// wavesWorld is a lab of several clusters and their leaves, started for one test or benchmark, as
// the rollout sees it (Connect over a pool of the lab's SSH settings), with two systems built for
// every node: the lab's own (base) and one changed on every node (changed).
type wavesWorld struct {
	l             *lab.Lab
	pool          *remote.Pool
	r             *rollout.Rollout
	log           *syncBuffer
	base, changed map[string]string
}

// newWavesWorld starts a lab of opts and builds its two systems; change must alter what every node's
// configuration renders.
func newWavesWorld(tb testing.TB, opts lab.Options, maxParallel int, change func(*topology.Topology)) *wavesWorld {
	tb.Helper()
	l := lab.Start(tb, opts)
	w := &wavesWorld{l: l, log: &syncBuffer{}}
	logger := slog.New(slog.NewTextHandler(w.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	tb.Cleanup(func() {
		if tb.Failed() {
			tb.Logf("rollout log:\n%s", w.log)
		}
	})
	cfg := labConfig(l)
	pool, err := remote.NewPool(cfg, remote.Options{Logger: logger, Output: w.log})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { pool.Close() })
	w.pool = pool
	rcfg := labRolloutConfig(l)
	rcfg.MaxParallel = maxParallel
	if w.r, err = rollout.Connect(pool, l.Topology(), cfg, rcfg, newStore(tb), logger); err != nil {
		tb.Fatal(err)
	}
	ctx := tb.Context()
	if w.base, err = l.Build(ctx, l.Topology()); err != nil {
		tb.Fatal(err)
	}
	topo := l.Topology()
	change(topo)
	if w.changed, err = l.Build(ctx, topo); err != nil {
		tb.Fatal(err)
	}
	for _, n := range l.Nodes() {
		if w.changed[n.Name()] == w.base[n.Name()] {
			tb.Fatalf("the change does not touch %s: both systems are %s", n.Name(), w.base[n.Name()])
		}
	}
	return w
}

// newStore is a state store of tb's own, closed when tb ends.
func newStore(tb testing.TB) *store.Store {
	tb.Helper()
	st, err := store.Open(tb.Context(), store.Config{DataDir: tb.TempDir()}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	return st
}

// deploy rolls every node to tops (all of commit) and logs what each node did.
func (w *wavesWorld) deploy(tb testing.TB, runID, commit string, tops map[string]string) (*rollout.Plan, *rollout.Result) {
	tb.Helper()
	plan, res, err := w.r.Deploy(tb.Context(), rollout.Request{RunID: runID, Commit: commit, Targets: rollout.Targets(tops, commit)}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	for _, nr := range res.Nodes {
		tb.Logf("%s (%s) %s %s: copy %s, activation %s, rejoin %s, total %s %s", nr.Node, nr.Group, nr.Action, nr.Status,
			nr.Copy.Round(time.Millisecond), nr.Activation.Round(time.Millisecond), nr.Rejoin.Round(time.Millisecond),
			nr.Duration.Round(time.Millisecond), nr.Error)
	}
	for _, g := range res.Groups {
		tb.Logf("group %s: %s, sequential %s %s", g.Name, g.Status, g.Sequential.Round(time.Millisecond), g.Why)
	}
	tb.Logf("rollout %s: %s in %s, critical path %s %s", commit, res.Status, res.Duration.Round(time.Millisecond),
		res.CriticalPath.Round(time.Millisecond), res.Error)
	return plan, res
}

// consistent checks that every node is healthy (the lab's own readiness: clustered, leaves connected)
// and runs the system of the commit the result says it runs: the changed system for the commit
// "changed", its base system for the commit plan found on it.
func (w *wavesWorld) consistent(tb testing.TB, plan *rollout.Plan, res *rollout.Result) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(tb.Context(), 2*time.Minute)
	defer cancel()
	if err := w.l.WaitReady(ctx, time.Minute); err != nil {
		tb.Errorf("after the rollout: %v", err)
	}
	for _, n := range w.l.Nodes() {
		nr := res.Node(n.Name())
		if nr == nil {
			tb.Errorf("%s: not in the result", n.Name())
			continue
		}
		want := ""
		switch nr.Commit {
		case "changed":
			want = w.changed[n.Name()]
		case baseCommit(plan, n.Name()):
			want = w.base[n.Name()]
		}
		if got := n.CurrentSystem(); want == "" || got != want {
			tb.Errorf("%s: runs %s, the result says commit %q (%s)", n.Name(), got, nr.Commit, want)
		}
	}
}

// baseCommit is the commit plan found on node before the rollout (the lab's own system's revision).
func baseCommit(plan *rollout.Plan, node string) string {
	for _, np := range plan.Nodes {
		if np.Node == node {
			return np.CurrentCommit
		}
	}
	return ""
}

// restore puts every node back on its base system, clears the faults, and waits for a ready lab.
func (w *wavesWorld) restore(tb testing.TB) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for _, n := range w.l.Nodes() {
		if err := n.ClearFaults(); err != nil {
			tb.Error(err)
		}
		if n.CurrentSystem() != w.base[n.Name()] {
			if err := n.Activate(ctx, w.base[n.Name()]); err != nil {
				tb.Errorf("restore %s: %v", n.Name(), err)
			}
		}
	}
	if err := w.l.WaitReady(ctx, time.Minute); err != nil {
		tb.Errorf("restore: %v", err)
	}
}

// TestLabWavesClusterFails rolls a change to a lab of two clusters of two (c1, c2) and a leaf on each,
// where the activation fails on the members of c1 only. The rollout must report c1's first member
// failed and rolled back, c1's other member and its leaf not started, and the other cluster either
// stopped after its node in flight (by default) or done with its leaf (--keep-going); afterwards every
// node is healthy and runs the system of the commit the result gives it.
func TestLabWavesClusterFails(t *testing.T) {
	w := newWavesWorld(t, lab.Options{Nodes: 6, Clusters: 2, ClusterSize: 2}, 4, func(topo *topology.Topology) {
		topo.Services.NATS.JetStream.MaxMemoryStore = 96 << 20
	})
	for _, tc := range []struct {
		name      string
		keepGoing bool
	}{
		{name: "halt", keepGoing: false},
		{name: "keep-going", keepGoing: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Cleanup(func() { w.restore(t) })
			for _, n := range w.l.Clusters()["c1"] {
				if err := n.FailNextActivation(4); err != nil {
					t.Fatal(err)
				}
			}
			w.r.Config.KeepGoing = tc.keepGoing
			w.r.States = newStore(t) // the records of the case before are of nodes restored by hand since
			plan, res := w.deploy(t, "fail-c1-"+tc.name, "changed", w.changed)
			if res.Status != rollout.StatusFailed {
				t.Errorf("status %s, want failed", res.Status)
			}
			var c1Failed, c1Skipped int
			for _, n := range w.l.Clusters()["c1"] {
				switch nr := res.Node(n.Name()); {
				case nr == nil:
					t.Errorf("%s: not in the result", n.Name())
				case nr.Status == rollout.StatusFailed:
					c1Failed++
					if !nr.RolledBack || nr.Commit != baseCommit(plan, n.Name()) {
						t.Errorf("%s failed but not rolled back to base: rolled back %v, commit %q", n.Name(), nr.RolledBack, nr.Commit)
					}
				case nr.Status == rollout.StatusSkipped:
					c1Skipped++
				default:
					t.Errorf("%s: %s, want failed or skipped", n.Name(), nr.Status)
				}
			}
			if c1Failed != 1 || c1Skipped != 1 {
				t.Errorf("c1: %d failed, %d skipped; want the first failed, the other not started", c1Failed, c1Skipped)
			}
			for _, leaf := range w.l.Leaves("c1") {
				nr := res.Node(leaf.Name())
				if nr == nil || nr.Status != rollout.StatusSkipped || !strings.Contains(nr.Error+groupWhy(res, nr.Group), "c1 failed") || nr.Commit != baseCommit(plan, leaf.Name()) {
					t.Errorf("leaf %s of c1: %+v, want skipped because hub c1 failed, on base", leaf.Name(), nr)
				}
			}
			c2 := append(w.l.Clusters()["c2"], w.l.Leaves("c2")...)
			for _, n := range c2 {
				nr := res.Node(n.Name())
				switch {
				case nr == nil:
					t.Errorf("%s: not in the result", n.Name())
				case tc.keepGoing && (nr.Status != rollout.StatusSuccess || nr.Commit != "changed"):
					t.Errorf("%s with --keep-going: %s on %q, want success on changed", n.Name(), nr.Status, nr.Commit)
				case !tc.keepGoing && !(nr.Status == rollout.StatusSuccess && nr.Commit == "changed") &&
					!(nr.Status == rollout.StatusSkipped && nr.Commit == baseCommit(plan, n.Name())):
					t.Errorf("%s: %s on %q, want switched or not started", n.Name(), nr.Status, nr.Commit)
				}
			}
			w.consistent(t, plan, res)
		})
	}
}

// groupWhy is why group name stopped, as the result gives it.
func groupWhy(res *rollout.Result, name string) string {
	for _, g := range res.Groups {
		if g.Name == name {
			return g.Why
		}
	}
	return ""
}

// BenchmarkLabWaves brings up the lab of 30 nodes (three clusters of three, 21 leaves), rolls a change
// of every node's NATS configuration (the JetStream memory limit) in waves (--max-parallel
// CIMDEPLOY_BENCH_MAX_PARALLEL, 8 unless set), and rolls it back one node at a time (--max-parallel 1);
// it reports per pair of rollouts:
//
//	wall-s            the waves' Run (Result.Duration)
//	critical-path-s   the longest chain of sequential steps (Result.CriticalPath): a cluster's members,
//	                  then its leaves' batches, each timed by its own activation and rejoin
//	wall/critical     the target: under 1.2
//	serial-s          the rollout back, one node at a time
//	serial/critical   the serial rollout against its own critical path (every node in one chain)
//	serial/waves      how much the waves save
//
// Every rollout must succeed with every node on its target. CIMDEPLOY_BENCH_LAB_{NODES,CLUSTERS,
// CLUSTER_SIZE} change the layout (30, 3, 3).
//
// go test ./rollout -run '^$' -bench LabWaves -benchtime 1x -timeout 30m
func BenchmarkLabWaves(b *testing.B) {
	opts := lab.Options{Nodes: benchEnvInt(b, "CIMDEPLOY_BENCH_LAB_NODES", 30), Clusters: benchEnvInt(b, "CIMDEPLOY_BENCH_LAB_CLUSTERS", 3),
		ClusterSize: benchEnvInt(b, "CIMDEPLOY_BENCH_LAB_CLUSTER_SIZE", 3)}
	maxParallel := benchEnvInt(b, "CIMDEPLOY_BENCH_MAX_PARALLEL", 8)
	w := newWavesWorld(b, opts, maxParallel, func(topo *topology.Topology) {
		topo.Services.NATS.JetStream.MaxMemoryStore = 96 << 20
	})
	b.Logf("lab %s, --max-parallel %d", w.l.Layout(), maxParallel)
	roll := func(runID, commit string, tops map[string]string, maxParallel int) *rollout.Result {
		w.r.Config.MaxParallel = maxParallel
		_, res := w.deploy(b, runID, commit, tops)
		if res.Status != rollout.StatusSuccess {
			b.Fatalf("rollout %s (--max-parallel %d): %s %s", runID, maxParallel, res.Status, res.Error)
		}
		for _, n := range w.l.Nodes() {
			if got := n.CurrentSystem(); got != tops[n.Name()] {
				b.Fatalf("rollout %s: %s runs %s, want %s", runID, n.Name(), got, tops[n.Name()])
			}
		}
		return res
	}
	var wall, critical, serial, serialCritical time.Duration
	n := 0
	for b.Loop() {
		n++
		waves := roll(fmt.Sprintf("waves-%d", n), "changed", w.changed, maxParallel)
		wall += waves.Duration
		critical += waves.CriticalPath
		one := roll(fmt.Sprintf("serial-%d", n), "base", w.base, 1)
		serial += one.Duration
		serialCritical += one.CriticalPath
	}
	s := func(d time.Duration) float64 { return d.Seconds() / float64(n) }
	b.ReportMetric(float64(maxParallel), "max-parallel")
	b.ReportMetric(s(wall), "wall-s")
	b.ReportMetric(s(critical), "critical-path-s")
	b.ReportMetric(float64(wall)/float64(critical), "wall/critical")
	b.ReportMetric(s(serial), "serial-s")
	b.ReportMetric(float64(serial)/float64(serialCritical), "serial/critical")
	b.ReportMetric(float64(serial)/float64(wall), "serial/waves")
	b.ReportMetric(0, "ns/op")
}

// benchEnvInt is the whole number in the environment variable name, or def when it is not set.
func benchEnvInt(b *testing.B, name string, def int) int {
	v := strings.TrimSpace(os.Getenv(name))
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		b.Fatalf("%s=%q: want a positive whole number", name, v)
	}
	return n
}
