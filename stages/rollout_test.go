package stages_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cimdeploy/cimdeploy/gitops/topology"
	"github.com/cimdeploy/cimdeploy/pipeline"
	"github.com/cimdeploy/cimdeploy/pipeline/store"
	"github.com/cimdeploy/cimdeploy/remote/remotetest"
	"github.com/cimdeploy/cimdeploy/rollout"
	"github.com/cimdeploy/cimdeploy/rollout/rollouttest"
	"github.com/cimdeploy/cimdeploy/stages"
)

// collected collects a run's events.
type collected struct {
	mu  sync.Mutex
	evs []pipeline.Event
}

func (e *collected) Report(_ context.Context, ev pipeline.Event) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.evs = append(e.evs, ev)
	return nil
}

func (e *collected) steps(stage, typ string) map[string]pipeline.StepResult {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := map[string]pipeline.StepResult{}
	for _, ev := range e.evs {
		if ev.Type != typ {
			continue
		}
		var d pipeline.StepData
		if json.Unmarshal(ev.Data, &d) == nil && d.Stage == stage {
			out[d.Step.Node] = d.Step
		}
	}
	return out
}

// fakeCluster is the production cluster (the fixtures' events, nats-1..3) as fake nodes, each running
// its system "a"; the rollout stage connects to it.
type fakeCluster struct {
	systems map[string]*rollouttest.System
	cluster *rollouttest.Cluster
	store   *store.Store
}

func newFakeCluster(t *testing.T) *fakeCluster {
	c := &fakeCluster{systems: map[string]*rollouttest.System{}}
	var all []*rollouttest.System
	for _, n := range []string{"nats-1", "nats-2", "nats-3"} {
		s := rollouttest.NewSystem(n, rollouttest.Toplevel(n+"-a"))
		t.Cleanup(s.Close)
		c.systems[n] = s
		all = append(all, s)
	}
	c.cluster = rollouttest.NewCluster(all...)
	st, err := store.Open(t.Context(), store.Config{DataDir: t.TempDir()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	c.store = st
	return c
}

func (c *fakeCluster) connect(_ context.Context, top *topology.Topology) (*rollout.Rollout, func(), error) {
	systems := map[string]rollout.System{}
	for n, s := range c.systems {
		systems[n] = s
	}
	cfg := rollout.Config{ConfirmTimeout: 10 * time.Second, GateTimeout: 300 * time.Millisecond, GatePoll: 10 * time.Millisecond,
		SettleTimeout: 300 * time.Millisecond, PreflightTimeout: 50 * time.Millisecond, ActivationTimeout: 2 * time.Second, ReconnectTimeout: time.Second,
		CopyTimeout: 2 * time.Second, HTTPTimeout: time.Second}
	return &rollout.Rollout{Topology: top, Systems: systems, Cluster: c.cluster, States: c.store, Config: cfg}, func() {}, nil
}

// deployRun is a deploy run whose build made system "b" of every node, in a workspace with the
// fixtures' events.
func deployRun(t *testing.T) *pipeline.Run {
	ws := t.TempDir()
	if err := os.CopyFS(filepath.Join(ws, "events"), os.DirFS("../fixtures/events")); err != nil {
		t.Fatal(err)
	}
	run := &pipeline.Run{ID: pipeline.NewRunID(), Commit: "b", Kind: pipeline.KindDeploy, Workspace: ws,
		Nodes: []string{"nats-1", "nats-2", "nats-3"}, Artifacts: map[string]pipeline.Artifact{}}
	for _, n := range run.Nodes {
		run.Artifacts[n] = pipeline.Artifact{Toplevel: rollouttest.Toplevel(n + "-b")}
	}
	return run
}

func TestRolloutStageSwitchesEveryNodeAsSteps(t *testing.T) {
	t.Parallel()
	c := newFakeCluster(t)
	c.cluster.SetLeader("nats-1")
	ev := &collected{}
	var result *rollout.Result
	runner := &pipeline.Runner{Reporters: []pipeline.Reporter{ev}, Stages: []pipeline.Stage{
		stages.Rollout{Connect: c.connect, Done: func(r *rollout.Result) { result = r }},
	}}
	res, err := runner.Run(t.Context(), deployRun(t))
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != pipeline.StatusSuccess {
		t.Fatalf("run %s: %s", res.Status, res.Error)
	}
	steps := res.Stage("rollout").Steps
	if len(steps) != 3 {
		t.Fatalf("steps %+v", steps)
	}
	for _, st := range steps {
		if st.Status != pipeline.StatusSuccess || !strings.HasPrefix(st.Note, "generation 2, activation ") {
			t.Errorf("step %+v", st)
		}
		if c.systems[st.Node].Running() != rollouttest.Toplevel(st.Node+"-b") {
			t.Errorf("%s not switched", st.Node)
		}
	}
	if started := ev.steps("rollout", pipeline.StepStarted); len(started) != 3 {
		t.Errorf("StepStarted for %v", started)
	}
	if result == nil || result.Status != rollout.StatusSuccess || result.Nodes[2].Node != "nats-1" {
		t.Errorf("result %+v", result)
	}
}

func TestRolloutStageFailureIsAFailedStepWithTheExitCode(t *testing.T) {
	t.Parallel()
	c := newFakeCluster(t)
	c.cluster.SetLeader("nats-3")
	c.systems["nats-1"].FailNextActivation(4)
	runner := &pipeline.Runner{Stages: []pipeline.Stage{stages.Rollout{Connect: c.connect}}}
	res, err := runner.Run(t.Context(), deployRun(t))
	if err != nil {
		t.Fatal(err)
	}
	ro := res.Stage("rollout")
	if res.Status != pipeline.StatusFailed || ro.Status != pipeline.StatusFailed || !strings.Contains(ro.Error, "rollout failed: nats-1") {
		t.Fatalf("run %s, stage %+v", res.Status, ro)
	}
	byNode := map[string]pipeline.StepResult{}
	for _, st := range ro.Steps {
		byNode[st.Node] = st
	}
	if st := byNode["nats-1"]; st.Status != pipeline.StatusFailed || st.ExitCode != 4 || !strings.Contains(st.Error, "units failed") ||
		st.Note != "rolled back to generation 1" || len(st.LastLines) == 0 {
		t.Errorf("nats-1 step %+v", st)
	}
	for _, n := range []string{"nats-2", "nats-3"} {
		if byNode[n].Status != pipeline.StatusSkipped || !strings.Contains(byNode[n].Error, "nats-1 failed") {
			t.Errorf("%s step %+v", n, byNode[n])
		}
	}
}

func TestRolloutStageNotConfirmedChangesNothing(t *testing.T) {
	t.Parallel()
	c := newFakeCluster(t)
	var plan *rollout.Plan
	runner := &pipeline.Runner{Stages: []pipeline.Stage{stages.Rollout{Connect: c.connect, Nodes: []string{"nats-2"},
		Confirm: func(_ context.Context, p *rollout.Plan) (bool, error) { plan = p; return false, nil }}}}
	res, err := runner.Run(t.Context(), deployRun(t))
	if err != nil || res.Status != pipeline.StatusSuccess {
		t.Fatalf("%v %+v", err, res)
	}
	if plan == nil || len(plan.Nodes) != 1 || plan.Nodes[0].Node != "nats-2" || plan.Nodes[0].Action != rollout.ActionSwitch {
		t.Fatalf("plan %+v", plan)
	}
	for n, s := range c.systems {
		if len(s.Activations()) != 0 {
			t.Errorf("%s activated", n)
		}
	}
	// A node that is not in the topology is a mistake.
	runner.Stages = []pipeline.Stage{stages.Rollout{Connect: c.connect, Nodes: []string{"nats-9"}}}
	if res, _ := runner.Run(t.Context(), deployRun(t)); res.Status != pipeline.StatusFailed || !strings.Contains(res.Error, "nats-9 is not in the topology") {
		t.Errorf("unknown node: %s %s", res.Status, res.Error)
	}
}

func TestPublishUploadsTemplatesOnce(t *testing.T) {
	t.Parallel()
	px := remotetest.NewProxmox("pve")
	run := deployRun(t)
	for _, n := range run.Nodes {
		out := filepath.Join(t.TempDir(), n+"-lxc")
		if err := os.MkdirAll(filepath.Join(out, "tarball"), 0o755); err != nil {
			t.Fatal(err)
		}
		file := filepath.Join(out, "tarball", "nixos-image-lxc-proxmox-x86_64-linux.tar.xz")
		if out, err := exec.Command("sh", "-c", "echo "+n+" | xz > "+file).CombinedOutput(); err != nil {
			t.Fatalf("%v %s", err, out)
		}
		a := run.Artifacts[n]
		a.Tarball = filepath.Dir(filepath.Dir(file))
		run.Artifacts[n] = a
	}
	runner := &pipeline.Runner{Stages: []pipeline.Stage{stages.Publish{Proxmox: px}}}
	res, err := runner.Run(t.Context(), run)
	if err != nil || res.Status != pipeline.StatusSuccess {
		t.Fatalf("%v %+v", err, res)
	}
	if len(res.Run.Templates) != 3 || !strings.HasPrefix(res.Run.Templates["nats-2"], "local:vztmpl/nats-2-") || px.Uploads() != 3 {
		t.Fatalf("templates %v, uploads %d", res.Run.Templates, px.Uploads())
	}
	for _, st := range res.Stage("publish").Steps {
		if !strings.HasPrefix(st.Note, "uploaded nats-") {
			t.Errorf("step %+v", st)
		}
	}
	again, _ := runner.Run(t.Context(), run)
	for _, st := range again.Stage("publish").Steps {
		if !strings.HasPrefix(st.Note, "unchanged: ") {
			t.Errorf("second publish %+v", st)
		}
	}
	if px.Uploads() != 3 {
		t.Errorf("uploads %d after an unchanged publish", px.Uploads())
	}
	// Without a Proxmox host, nothing to do.
	none, _ := (&pipeline.Runner{Stages: []pipeline.Stage{stages.Publish{}}}).Run(t.Context(), run)
	if none.Status != pipeline.StatusSuccess {
		t.Errorf("publish without Proxmox: %+v", none)
	}
}
