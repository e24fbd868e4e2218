package rollout

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/cimdeploy/cimdeploy/remote"
)

// ActionRecreate destroys a node's container and creates it anew from the node's template (pct stop,
// pct destroy, pct create, pct start), keeping or wiping its JetStream data, then gates it.
const ActionRecreate Action = "recreate"

// DefaultStoreDir is the JetStream store of a NATS service whose events name none.
const DefaultStoreDir = "/var/lib/nats/jetstream"

// recreatePlan makes np a recreation when the input asks for one: whatever the node runs (a node
// switched by hand, unreachable or already at the target is recreated all the same), as long as
// there is a template, and, when the data is wiped, no stream has its only current copy there.
func recreatePlan(np NodePlan, t Target, o Observation, in PlanInput) NodePlan {
	if !in.Recreate || np.Action == ActionProvision {
		return np
	}
	data := "wiping"
	if in.KeepData {
		data = "keeping"
	}
	only := OnlyCopies(o.Streams)
	switch {
	case t.Template == "":
		np.Action, np.Reason = ActionRefuse, "no template to recreate it from (the publish stage needs CIMDEPLOY_PROXMOX_HOST)"
	case !in.KeepData && o.StreamsErr != "" && !in.Force:
		np.Action, np.Reason = ActionRefuse, "--wipe-data: cannot list the streams on it: "+o.StreamsErr+"; --force wipes anyway"
	case !in.KeepData && len(only) > 0 && !in.Force:
		names := make([]string, len(only))
		for i, s := range only {
			names[i] = s.String()
		}
		np.Action, np.Reason = ActionRefuse, fmt.Sprintf("--wipe-data loses the streams whose only current copy is there: %s; "+
			"--keep-data keeps them, --force wipes anyway", strings.Join(names, "; "))
	default:
		np.Action = ActionRecreate
		np.Reason = fmt.Sprintf("recreate its container from %s, %s its JetStream data", t.Template, data)
	}
	return np
}

// storeDir is the JetStream store directory of the topology's NATS service.
func (r *Rollout) storeDir() string {
	if n := r.Topology.Services.NATS; n != nil {
		return cmp.Or(n.JetStream.StoreDir, DefaultStoreDir)
	}
	return DefaultStoreDir
}

// recreate destroys np's container and creates it again from its template: stop it; with KeepData,
// copy its JetStream store out of the stopped rootfs (pct mount) and back into the new one before its
// first start; destroy, create, start (remote.Proxmox.EnsureContainer with Recreate); gate; record.
// members counts the cluster's servers before the step, the node included when it was reachable.
func (r *Rollout) recreate(ctx context.Context, plan *Plan, np NodePlan, members int, st Step, log *slog.Logger) (nr NodeResult) {
	start := r.now()
	nr = NodeResult{Node: np.Node, Action: ActionRecreate, From: np.Current, FromGeneration: np.CurrentGeneration, To: np.Target}
	defer func() { nr.Duration = r.now().Sub(start) }()
	fail := func(what string, err error) NodeResult {
		nr.Status, nr.err = StatusFailed, fmt.Errorf("%s: %w", what, err)
		nr.Error = nr.err.Error()
		log.Error("recreation failed", "step", what, "err", err)
		return nr
	}
	lc, _ := r.Proxmox.(remote.Lifecycle)
	dk, _ := r.Proxmox.(remote.DataKeeper)
	switch {
	case r.Proxmox == nil || lc == nil:
		return fail("recreate", errors.New("no Proxmox host (CIMDEPLOY_PROXMOX_HOST)"))
	case plan.KeepData && dk == nil:
		return fail("recreate", errors.New("the Proxmox host cannot keep a container's data"))
	}
	sys := r.Systems[np.Node]
	c := ContainerFor(np.Node, r.Topology)
	c.Template, c.SSH, c.Recreate = np.Template, sys, true
	node := context.WithoutCancel(ctx) // a container half recreated is worse than one recreated
	bounded := func() (context.Context, context.CancelFunc) { return context.WithTimeout(node, r.Config.CopyTimeout) }
	const steps = 5

	st.Progress(ctx, 1, steps, "stop the container")
	sctx, cancel := bounded()
	was, err := lc.StopContainer(sctx, c.VMID, np.Node)
	cancel()
	switch {
	case err != nil:
		return fail("stop the container", err)
	case was == remote.ContainerMissing:
		return fail("stop the container", fmt.Errorf("container %d does not exist: nothing to recreate (a rollout creates a node without one)", c.VMID))
	}

	dir := r.storeDir()
	if plan.KeepData {
		st.Progress(ctx, 2, steps, "keep "+dir)
		kctx, cancel := bounded()
		saved, err := dk.SaveData(kctx, c.VMID, np.Node, dir)
		cancel()
		if err != nil {
			return fail("keep the JetStream data", err)
		}
		st.Note("kept %s at %s on the Proxmox host", dir, saved)
		c.BeforeStart = func(ctx context.Context) error { return dk.RestoreData(ctx, c.VMID, np.Node, dir, saved) }
	}

	st.Progress(ctx, 3, steps, "destroy and create the container")
	ectx, cancel := bounded()
	ens, err := r.Proxmox.EnsureContainer(ectx, c)
	cancel()
	if err != nil {
		return fail("recreate the container", err)
	}
	nr.Activation = ens.Duration
	if err := r.secretsAfterStart(node, np.Node); err != nil {
		return fail("secrets", err)
	}

	st.Progress(ctx, 4, steps, "health gate")
	peers := members - 1
	if np.Current == "" { // it was no member: now it is one more
		peers = members
	}
	gateStart := r.now()
	err = r.gate(node, np.Node, np.Target, peers)
	nr.Rejoin = r.now().Sub(gateStart)
	if err != nil {
		r.recordFailure(node, plan, np, Generation{}, err.Error(), log)
		return fail("health gate", err)
	}

	st.Progress(ctx, 5, steps, "record")
	if nr.Generation, err = r.recordRunning(node, plan, np, sys, log); err != nil {
		return fail("record", err)
	}
	nr.Status = StatusSuccess
	log.Info("node recreated", "vmid", c.VMID, "keep_data", plan.KeepData, "generation", nr.Generation,
		"rejoin", nr.Rejoin.Round(time.Millisecond))
	return nr
}

// observeStreams fills in the streams on each reachable target (a recreation that wipes the data
// must not lose a stream's only copy).
func (r *Rollout) observeStreams(ctx context.Context, obs []Observation, targets []Target) {
	mr, ok := r.Cluster.(MetaRemover)
	if !ok {
		return
	}
	for i := range obs {
		o := &obs[i]
		if !o.Reachable || o.Removed {
			continue
		}
		for _, t := range targets {
			if t.Node == o.Node {
				if streams, err := mr.StreamsOn(ctx, o.Node); err == nil {
					o.Streams = streams
				} else {
					o.StreamsErr = err.Error()
				}
			}
		}
	}
}
