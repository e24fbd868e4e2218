package rollout_test

import (
	"strings"
	"testing"

	"github.com/cimdeploy/cimdeploy/rollout"
)

func TestPlanRecreate(t *testing.T) {
	t.Parallel()
	gens := []rollout.Generation{{Number: 1, Toplevel: base("nats-2")}}
	in := rollout.PlanInput{RunID: "r1", Commit: "b", Recreate: true,
		Targets: []rollout.Target{{Node: "nats-2", Toplevel: base("nats-2"), Commit: "b", Template: "local:vztmpl/nats-2-x.tar.xz"}},
		Observed: []rollout.Observation{{Node: "nats-2", Reachable: true, Healthy: true, Current: base("nats-2"), Generations: gens,
			Streams: []rollout.StreamCopy{{Account: "APP", Stream: "SCRATCH", Replicas: 1}}}}}

	// Wiping a node that holds the only copy of a stream is refused, naming it.
	p := rollout.NewPlan(in)
	if np := p.Nodes[0]; np.Action != rollout.ActionRefuse || !strings.Contains(np.Reason, "APP/SCRATCH (R1") || !p.Refused() {
		t.Errorf("wipe with an R1 stream: %+v", np)
	}
	// Keeping the data, it is recreated, although it already runs the target.
	in.KeepData = true
	p = rollout.NewPlan(in)
	if np := p.Nodes[0]; np.Action != rollout.ActionRecreate || !strings.Contains(np.Reason, "keeping its JetStream data") ||
		p.Refused() || p.Changes() != 1 || !p.KeepData {
		t.Errorf("keep: %+v (plan keep %v)", np, p.KeepData)
	}
	// No template: nothing to recreate from.
	in.Targets[0].Template = ""
	if np := rollout.NewPlan(in).Nodes[0]; np.Action != rollout.ActionRefuse || !strings.Contains(np.Reason, "no template") {
		t.Errorf("no template: %+v", np)
	}
}
