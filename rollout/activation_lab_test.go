package rollout_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cimdeploy/cimdeploy/gitops/topology"
	"github.com/cimdeploy/cimdeploy/rollout"
)

// TestLabActivationExit2IsRolledBack: the activation script of the new system fails (exit 2). As on
// NixOS, /run/current-system already points at the new system and its units run; cimdeploy
// re-activates the previous generation, so /run/current-system and the profile are both back, the
// failed generation is gone and nats runs the old configuration.
func TestLabActivationExit2IsRolledBack(t *testing.T) {
	w := newLabWorld(t)
	ctx := t.Context()
	n := w.l.Node("nats-2")
	const newMax = 66 << 20
	tops := w.build(t, func(topo *topology.Topology) { topo.Services.NATS.JetStream.MaxMemoryStore = newMax })
	before, err := w.systems["nats-2"].Generations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.FailNextActivation(2); err != nil {
		t.Fatal(err)
	}
	_, res := w.rollout(ctx, t, rollout.Request{RunID: "lab-exit2", Commit: "c5", Targets: w.targets(tops, "c5", "nats-2")})
	nr := res.Node("nats-2")
	if res.Status != rollout.StatusFailed || !nr.RolledBack || nr.ExitCode != rollout.ExitFailed {
		t.Fatalf("rollout %s: %+v", res.Status, nr)
	}
	mustContain(t, "error", nr.Error, "exited 2", "the new generation is active", "rolled back to generation")

	// The failed activation had switched: the controller's own rollback activation ran (its unit's log
	// stays after the unit is collected) and logged the switch back from the new system.
	log, err := os.ReadFile(filepath.Join(n.Dir(), "state", "units", "cimdeploy-switch-nats-2-lab-exit2-rollback.service", "log"))
	if err != nil {
		t.Fatalf("no rollback activation ran: %v", err)
	}
	if !strings.Contains(string(log), "stopping the following units: nats.service") {
		t.Errorf("the rollback activation restarted nothing: the failed one had not switched?\n%s", log)
	}

	if got := n.CurrentSystem(); got != w.baseline["nats-2"] {
		t.Errorf("/run/current-system is %s, want the previous system %s", got, w.baseline["nats-2"])
	}
	after, err := w.systems["nats-2"].Generations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if cur := rollout.CurrentGeneration(after); cur.Toplevel != w.baseline["nats-2"] || len(after) != len(before) {
		t.Errorf("profile: current %+v, %d generations (%d before): want the previous one current, the failed one deleted", cur, len(after), len(before))
	}
	if err := w.l.WaitReady(ctx, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if v, err := n.Varz(ctx); err != nil || v.JetStream.Config.MaxMemory == newMax {
		t.Errorf("nats-2 max_memory %d (%v): still the failed system's", v.JetStream.Config.MaxMemory, err)
	}
}
