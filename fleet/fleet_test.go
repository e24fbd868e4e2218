package fleet_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sethvargo/go-envconfig"

	"github.com/cimdeploy/cimdeploy/deploy"
	"github.com/cimdeploy/cimdeploy/fleet"
	"github.com/cimdeploy/cimdeploy/gitops/events"
	"github.com/cimdeploy/cimdeploy/gitops/topology"
	"github.com/cimdeploy/cimdeploy/pipeline"
	"github.com/cimdeploy/cimdeploy/pipeline/store"
	"github.com/cimdeploy/cimdeploy/rollout"
	"github.com/cimdeploy/cimdeploy/rollout/rollouttest"
)

const (
	commitA = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	commitB = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	repo    = "file:///infra"
)

// world is a deployed cluster of fake nodes over a real state store: every node runs the system of
// commitA, deployed by run "run-a" (recorded as cimdeploy records it), which succeeded on main.
type world struct {
	top     *topology.Topology
	systems map[string]*rollouttest.System
	cluster *rollouttest.Cluster
	store   *store.Store
}

func systemOf(node, commit string) string { return rollouttest.Toplevel(node + "-" + commit[:7]) }

func newWorld(t *testing.T) *world {
	t.Helper()
	evs, problems := events.Load(t.Context(), filepath.Join("..", "fixtures", "events"))
	top, more := topology.Fold(evs)
	if problems = append(problems, more...); len(problems) > 0 {
		t.Fatal(problems)
	}
	st, err := store.Open(t.Context(), store.Config{DataDir: t.TempDir()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	w := &world{top: top, systems: map[string]*rollouttest.System{}, store: st}
	var nodes []*rollouttest.System
	for _, name := range top.NodeNames() {
		s := rollouttest.NewSystem(name, systemOf(name, commitA))
		s.SetRevision(systemOf(name, commitA), commitA)
		w.systems[name] = s
		nodes = append(nodes, s)
		rec := rollout.NodeState{Node: name, Commit: commitA, Toplevel: systemOf(name, commitA), Generation: 1,
			Deployed: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC), RunID: "run-a"}
		if _, err := rollout.WriteState(t.Context(), st, rec, 0); err != nil {
			t.Fatal(err)
		}
	}
	w.cluster = rollouttest.NewCluster(nodes...)
	w.cluster.SetLeader("nats-3")
	w.run(t, "main", commitA, true)
	return w
}

// run records a deploy run of commit on ref through the real runner; ok says whether it succeeds.
func (w *world) run(t *testing.T, ref, commit string, ok bool) string {
	t.Helper()
	run := &pipeline.Run{ID: pipeline.NewRunID(), Repo: repo, Ref: ref, Commit: commit, Trigger: pipeline.TriggerPush, Kind: pipeline.KindDeploy}
	runner := &pipeline.Runner{Reporters: []pipeline.Reporter{w.store}, Stages: []pipeline.Stage{
		pipeline.NewStage("rollout", func(context.Context, *pipeline.StageRun) error {
			if !ok {
				return errors.New("nats-2 failed its health gate")
			}
			return nil
		}),
	}}
	res, err := runner.Run(t.Context(), run)
	if err != nil {
		t.Fatal(err)
	}
	if (res.Status == pipeline.StatusSuccess) != ok {
		t.Fatalf("run %s of %s: %s", run.ID, commit, res.Status)
	}
	return run.ID
}

func (w *world) source(systems map[string]rollout.System) fleet.Source {
	if systems == nil {
		systems = map[string]rollout.System{}
		for name, s := range w.systems {
			systems[name] = s
		}
	}
	return fleet.Source{Topology: w.top, Commit: commitB, Systems: systems, Cluster: w.cluster, Records: w.store,
		Timeout: 5 * time.Second}
}

func observe(t *testing.T, src fleet.Source) *fleet.Fleet {
	t.Helper()
	f, err := fleet.Observe(t.Context(), src, fleet.Options{Repo: repo, Branch: "main"})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func node(t *testing.T, f *fleet.Fleet, name string) fleet.Node {
	t.Helper()
	for _, n := range f.Nodes {
		if n.Node == name {
			return n
		}
	}
	t.Fatalf("no node %s in %+v", name, f.Nodes)
	return fleet.Node{}
}

func TestObserveDeployedFleet(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	f := observe(t, w.source(nil))
	if !f.OK() || len(f.Problems()) != 0 {
		t.Fatalf("fleet not OK: %v", f.Problems())
	}
	if f.Desired != commitA || f.DesiredRun == "" || f.Commit != commitB || f.Leader != "nats-3" {
		t.Errorf("desired %s (run %q), commit %s, leader %q", f.Desired, f.DesiredRun, f.Commit, f.Leader)
	}
	if got := len(f.Nodes); got != 3 {
		t.Fatalf("%d nodes", got)
	}
	for _, n := range f.Nodes {
		if !n.Reachable || !n.Healthy || n.Drifted || !n.AtDesired || n.Generation != 1 || n.Commit != commitA ||
			n.Toplevel != systemOf(n.Node, commitA) || n.Record.RunID != "run-a" || len(n.Generations) != 1 || !n.Generations[0].Running {
			t.Errorf("%s: %+v", n.Node, n)
		}
		if n.Leader != (n.Node == "nats-3") {
			t.Errorf("%s: leader %v", n.Node, n.Leader)
		}
	}
}

// TestObserveDesiredCommit: the desired commit is that of the last successful deploy of the deploy
// branch of the repository; without one, the topology's commit.
func TestObserveDesiredCommit(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.run(t, "main", commitB, false)                  // failed: not desired
	w.run(t, "refs/heads/feature", commitB, true)     // another branch
	idB := w.run(t, "refs/heads/main", commitB, true) // the daemon's ref form
	f := observe(t, w.source(nil))
	if f.Desired != commitB || f.DesiredRun != idB {
		t.Fatalf("desired %s (run %s), want %s (run %s)", f.Desired, f.DesiredRun, commitB, idB)
	}
	n := node(t, f, "nats-1")
	if n.AtDesired || n.Drifted || f.OK() || !slices.ContainsFunc(n.Problems, func(p string) bool {
		return p == "at commit "+commitA[:12]+", want "+commitB[:12]
	}) {
		t.Errorf("nats-1 behind the desired commit: %+v", n)
	}

	if commit, run, err := fleet.Desired(t.Context(), w.store, "file:///other", "main"); err != nil || commit != "" || run != "" {
		t.Errorf("another repository's desired commit = %q, %q, %v", commit, run, err)
	}
	empty, err := store.Open(t.Context(), store.Config{DataDir: t.TempDir()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer empty.Close()
	src := w.source(nil)
	src.Records = empty
	f = observe(t, src)
	if f.Desired != commitB || f.DesiredRun != "" {
		t.Errorf("without a deploy: desired %s (run %q), want the topology's %s", f.Desired, f.DesiredRun, commitB)
	}
}

// TestObserveSwitchedByHand: a node whose running system is not what cimdeploy recorded is drifted,
// as the rollout's pre-flight calls it; its commit is the system's own revision.
func TestObserveSwitchedByHand(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	hand := systemOf("nats-2", commitB)
	w.systems["nats-2"].SetRevision(hand, commitB)
	w.systems["nats-2"].SwitchByHand(hand)
	f := observe(t, w.source(nil))
	if f.OK() {
		t.Fatal("fleet OK with a node switched by hand")
	}
	n := node(t, f, "nats-2")
	if !n.Drifted || n.AtDesired || !n.Healthy || n.Generation != 2 || n.Commit != commitB || len(n.Problems) != 2 ||
		n.Problems[0] != "switched by hand: it runs "+hand+", but cimdeploy last deployed "+systemOf("nats-2", commitA)+" (generation 1, commit aaaaaaaaaaaa, run run-a)" {
		t.Errorf("nats-2: %+v", n)
	}
	if why := fleet.Drift(n.Toplevel, n.Record); why != n.Problems[0] {
		t.Errorf("Drift = %q", why)
	}
	for _, name := range []string{"nats-1", "nats-3"} {
		if n := node(t, f, name); !n.OK() {
			t.Errorf("%s: %v", name, n.Problems)
		}
	}
	if got := len(n.Generations); got != 2 || n.Generations[0].Commit != commitA || n.Generations[1].Commit != commitB {
		t.Errorf("generations %+v", n.Generations)
	}
}

// TestObserveUnreachableNode: a node that refuses connections is an observation, not an error; its
// peers lose their route to it and are unhealthy too.
func TestObserveUnreachableNode(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.systems["nats-3"].SetUp(false)
	f := observe(t, w.source(nil))
	n := node(t, f, "nats-3")
	if n.Reachable || n.Healthy || n.AtDesired || n.Generation != 0 || len(n.Problems) != 2 ||
		!strings.HasPrefix(n.Problems[0], "unreachable: ") || !strings.HasPrefix(n.Problems[1], "unhealthy: ") {
		t.Errorf("nats-3: %+v", n)
	}
	if n.Record.Commit != commitA {
		t.Errorf("nats-3's record: %+v", n.Record)
	}
	n1 := node(t, f, "nats-1")
	if !n1.Reachable || n1.Healthy || !slices.Contains(n1.Problems, "unhealthy: /varz: clustered with 1 other servers, want 2") {
		t.Errorf("nats-1: %+v", n1)
	}
}

// hung is a node whose SSH reads never answer until their context ends.
type hung struct{ *rollouttest.System }

func (h hung) Current(ctx context.Context) (string, error) {
	<-ctx.Done()
	return "", ctx.Err()
}

// TestObserveBoundsEachNode: a node that does not answer is reported unreachable once its timeout
// passed; the others are observed as usual.
func TestObserveBoundsEachNode(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	systems := map[string]rollout.System{}
	for name, s := range w.systems {
		systems[name] = s
	}
	systems["nats-1"] = hung{w.systems["nats-1"]}
	src := w.source(systems)
	src.Timeout = 200 * time.Millisecond
	f := observe(t, src)
	n := node(t, f, "nats-1")
	if n.Reachable || len(n.Problems) == 0 || n.Problems[0] != "unreachable: "+context.DeadlineExceeded.Error() {
		t.Errorf("nats-1: %+v", n)
	}
	if n := node(t, f, "nats-2"); !n.OK() {
		t.Errorf("nats-2: %v", n.Problems)
	}
}

// TestObserveStoreFails: without its state store the observation fails as a whole.
func TestObserveStoreFails(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.store.Close()
	if f, err := fleet.Observe(t.Context(), w.source(nil), fleet.Options{}); err == nil {
		t.Fatalf("observed without a store: %+v", f)
	}
}

// loopbackRepo is a git repository of the event fixtures with the cluster moved to loopback
// addresses where nothing listens (127.0.0.41-43): its nodes refuse connections at once.
func loopbackRepo(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	src := filepath.Join("..", "fixtures", "events")
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "events"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		data = []byte(strings.ReplaceAll(string(data), `"10.0.0.`, `"127.0.0.`))
		if err := os.WriteFile(filepath.Join(dir, "events", e.Name()), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, args := range [][]string{{"init", "-q", "-b", "main"}, {"add", "-A"}, {"commit", "-q", "-m", "cluster"}} {
		cmd := exec.Command("git", append([]string{"-c", "user.name=t", "-c", "user.email=t@cim.local"}, args...)...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	return dir
}

// TestObserverOpensAgainAfterADeploy: an Observer keeps its cluster open between observations and
// opens it again (the topology read anew) once a deploy changed the desired commit.
func TestObserverOpensAgainAfterADeploy(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dir := t.TempDir()
	st, err := store.Open(ctx, store.Config{DataDir: filepath.Join(dir, "store"), Listen: "127.0.0.1:0"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	key, known := filepath.Join(dir, "id_ed25519"), filepath.Join(dir, "known_hosts")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	if err := os.WriteFile(known, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := deploy.Load(ctx, envconfig.MapLookuper(map[string]string{
		"CIMDEPLOY_REPO": loopbackRepo(t), "CIMDEPLOY_DATA_DIR": filepath.Join(dir, "data"), "CIMDEPLOY_NATS_URL": st.ListenURL(),
		"CIMDEPLOY_SSH_KEY_FILE": key, "CIMDEPLOY_SSH_KNOWN_HOSTS": known, "CIMDEPLOY_SSH_CONNECT_TIMEOUT": "2s",
		"CIMDEPLOY_ROLLOUT_HTTP_TIMEOUT": "2s", "CIMDEPLOY_ROLLOUT_PREFLIGHT_TIMEOUT": "5s",
		// The fixtures define NATS accounts: the servers take only users, the gate's is the system user.
		"CIMDEPLOY_ROLLOUT_SYSTEM_NKEY_FILE": rollouttest.SystemNkeyFile(t),
	}))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.ValidateCluster(); err != nil {
		t.Fatal(err)
	}
	opens := 0
	obs := fleet.NewObserver(func(ctx context.Context) (*deploy.Cluster, error) {
		opens++
		return deploy.OpenCluster(ctx, cfg, nil)
	}, fleet.Options{Branch: "main"})
	defer obs.Close()

	var first *fleet.Fleet
	for range 2 {
		f, err := obs.Observe(ctx)
		if err != nil {
			t.Fatal(err)
		}
		first = f
	}
	if opens != 1 || first.Desired != first.Commit || first.DesiredRun != "" || len(first.Nodes) != 3 {
		t.Fatalf("%d opens; desired %s (run %q), commit %s, %d nodes", opens, first.Desired, first.DesiredRun, first.Commit, len(first.Nodes))
	}
	for _, n := range first.Nodes {
		if n.Reachable || n.Healthy || n.OK() || len(n.Problems) != 2 {
			t.Errorf("%s, where nothing listens: %+v", n.Node, n)
		}
	}

	w := &world{store: st}
	id := w.run(t, "refs/heads/main", commitA, true)
	f, err := obs.Observe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if opens != 2 || f.Desired != commitA || f.DesiredRun != id {
		t.Errorf("after a deploy: %d opens, desired %s (run %s)", opens, f.Desired, f.DesiredRun)
	}
}
