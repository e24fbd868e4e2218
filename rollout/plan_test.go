package rollout_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cimdeploy/cimdeploy/remote"
	"github.com/cimdeploy/cimdeploy/rollout"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// TestPlanGolden plans a cluster where every rule applies once; testdata/plan.golden.json holds the
// plan (go test ./rollout -run TestPlanGolden -update rewrites it; review the diff).
func TestPlanGolden(t *testing.T) {
	t0 := time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)
	gens := func(node string, current int, commits ...string) []rollout.Generation {
		var gs []rollout.Generation
		for i, c := range commits {
			gs = append(gs, rollout.Generation{Number: i + 1, Toplevel: built(node, c), Current: i+1 == current,
				Date: t0.Add(time.Duration(i) * time.Hour), Revision: c})
		}
		return gs
	}
	running := func(node string, commits ...string) rollout.Observation {
		return rollout.Observation{Node: node, Reachable: true, Healthy: true, Current: built(node, commits[len(commits)-1]),
			Generations: gens(node, len(commits), commits...)}
	}
	recorded := func(o rollout.Observation, commit string) rollout.Observation {
		o.Record = rollout.NodeState{Node: o.Node, Commit: commit, Toplevel: built(o.Node, commit), Generation: len(o.Generations),
			Deployed: t0, RunID: "run-" + commit}
		return o
	}
	observed := []rollout.Observation{
		recorded(running("nats-1", "a", "b"), "b"),                                                  // follower: switch
		recorded(running("nats-2", "a", "b"), "b"),                                                  // the meta leader: switch, last
		recorded(running("nats-3", "a", "c"), "c"),                                                  // at the target: skip
		recorded(running("nats-4", "a", "hand"), "a"),                                               // switched by hand: refuse
		{Node: "nats-5", Problem: "connection refused", Container: string(remote.ContainerMissing)}, // new: provision
		running("nats-6", "a"),                                                                      // never deployed by cimdeploy: adopt and switch
	}
	failed := recorded(running("nats-7", "a", "b"), "b")
	failed.Record.FailedCommit, failed.Record.FailedToplevel, failed.Record.FailedAt, failed.Record.FailedRunID, failed.Record.FailedReason =
		"c", built("nats-7", "c"), t0, "run-c", "health gate: not healthy within 3m0s"
	observed = append(observed, failed, rollout.Observation{Node: "nats-8", Reachable: true, Healthy: false,
		Problem: "/healthz: 503", Current: built("nats-8", "b"), Generations: gens("nats-8", 1, "b")})
	var targets []rollout.Target
	for _, o := range observed {
		tg := rollout.Target{Node: o.Node, Toplevel: built(o.Node, "c"), Commit: "c"}
		if o.Node == "nats-5" {
			tg.Template = "local:vztmpl/nats-5-0123.tar.xz"
		}
		targets = append(targets, tg)
	}
	plan := rollout.NewPlan(rollout.PlanInput{RunID: "run-c", Commit: "c", Targets: targets, Observed: observed,
		Leader: "nats-2", Now: t0})
	got, err := json.MarshalIndent(plan, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	golden := filepath.Join("testdata", "plan.golden.json")
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (go test ./rollout -run TestPlanGolden -update writes it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("the plan differs from %s (go test ./rollout -run TestPlanGolden -update):\n%s", golden, got)
	}
	if !plan.Refused() || plan.Changes() != 5 {
		t.Errorf("refused %v, changes %d", plan.Refused(), plan.Changes())
	}
	forced := rollout.NewPlan(rollout.PlanInput{RunID: "run-c", Commit: "c", Targets: targets, Observed: observed, Leader: "nats-2", Force: true, Now: t0})
	for _, np := range forced.Nodes {
		if np.Node == "nats-4" || np.Node == "nats-7" {
			if np.Action != rollout.ActionSwitch {
				t.Errorf("forced %s: %s", np.Node, np.Action)
			}
		}
	}
	if forced.Refused() {
		t.Error("a forced plan is refused")
	}
}

func TestConfigValidate(t *testing.T) {
	good := rollout.Config{ConfirmTimeout: 5 * time.Minute, GateTimeout: 3 * time.Minute, GatePoll: 250 * time.Millisecond,
		SettleTimeout: 2 * time.Minute, PreflightTimeout: 30 * time.Second, ActivationTimeout: 90 * time.Second, ReconnectTimeout: time.Minute,
		CopyTimeout: 30 * time.Minute, HTTPTimeout: 5 * time.Second, SecretsOwner: "nats", MaxParallel: 4, Mode: rollout.ModeSwitch}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	loaded, err := rollout.LoadConfig(t.Context(), mapLookuper{})
	if err != nil || loaded != good {
		t.Errorf("defaults %+v, %v; want %+v", loaded, err, good)
	}
	bad := good
	bad.GateTimeout, bad.GatePoll, bad.ConfirmTimeout = 0, -1, 4*time.Minute
	bad.SystemUser = "sys"
	bad.SecretsDir = t.TempDir() + "/missing"
	bad.MaxParallel = 0
	err = bad.Validate()
	for _, want := range []string{"CIMDEPLOY_ROLLOUT_MAX_PARALLEL (--max-parallel) 0: want a number of nodes between 1 and 256", "CIMDEPLOY_ROLLOUT_GATE_TIMEOUT 0s", "CIMDEPLOY_ROLLOUT_GATE_POLL -1ns", "SYSTEM_PASSWORD_FILE go together", "CIMDEPLOY_SECRETS_DIR"} {
		if err == nil || !bytes.Contains([]byte(err.Error()), []byte(want)) {
			t.Errorf("Validate: %v, want it to say %q", err, want)
		}
	}
	short := good
	short.ConfirmTimeout = 4 * time.Minute
	if err := short.Validate(); err == nil || !bytes.Contains([]byte(err.Error()), []byte("must exceed")) {
		t.Errorf("a confirm timeout shorter than activation + gate: %v", err)
	}
}

type mapLookuper map[string]string

func (m mapLookuper) Lookup(key string) (string, bool) {
	v, ok := m[key]
	return v, ok
}
