package rollout

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cimdeploy/cimdeploy/gitops/topology"
	"github.com/cimdeploy/cimdeploy/remote"
)

// ActionRemove takes a node the events removed out of the cluster: after the remaining nodes were
// switched to routes without it, check that every stream on it has a current copy elsewhere, stop
// it, remove it from the JetStream meta group, wait for the remaining nodes, record it as removed
// and, with DestroyRemoved, destroy its container.
const ActionRemove Action = "remove"

// NATSUnit is the systemd unit of the NATS server on a node (NixOS services.nats).
const NATSUnit = "nats.service"

// Removal is the plan for one node the events removed while the cluster still has it.
type Removal struct {
	Node      string `json:"node"`
	VMID      int    `json:"vmid,omitempty"`
	Running   bool   `json:"running"`             // its NATS server answered
	Container string `json:"container,omitempty"` // remote.ContainerState, when Proxmox was asked
	Destroy   bool   `json:"destroy,omitempty"`
	// Steps say what the rollout will do, in order.
	Steps []string `json:"steps"`
	// Deferred, when not "", is why this rollout leaves the node alone.
	Deferred string `json:"deferred,omitempty"`
}

// ServiceStopper is a System that can stop a unit on its node (SSHSystem: systemctl stop); a removed
// node without a Proxmox host is stopped so.
type ServiceStopper interface {
	StopService(ctx context.Context, unit string) error
}

var _ ServiceStopper = (*SSHSystem)(nil)

// StopService implements ServiceStopper with systemctl stop.
func (s *SSHSystem) StopService(ctx context.Context, unit string) error {
	_, err := s.output(ctx, "systemctl stop "+unit, "systemctl", "stop", unit)
	return err
}

// ServiceRestarter is a System that can restart a unit on its node (SSHSystem: systemctl restart): a
// container fresh from its template starts its NATS server before cimdeploy installed its secrets.
type ServiceRestarter interface {
	RestartService(ctx context.Context, unit string) error
}

var _ ServiceRestarter = (*SSHSystem)(nil)

// RestartService implements ServiceRestarter with systemctl restart.
func (s *SSHSystem) RestartService(ctx context.Context, unit string) error {
	_, err := s.output(ctx, "systemctl restart "+unit, "systemctl", "restart", unit)
	return err
}

// observeRemoved observes the nodes the topology lists as removed and the store does not record as
// removed yet (a node never recorded counts as deployed): whether its NATS server answers, the
// streams on it, its container. A node whose server does not answer and whose container is missing
// (or that has no Proxmox host) is nothing to take out, but it is still reported, to be recorded.
func (r *Rollout) observeRemoved(ctx context.Context) ([]Observation, error) {
	names := r.Topology.RemovedNames()
	obs := make([]Observation, len(names))
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Go(func() {
			o := Observation{Node: name, Removed: true, VMID: r.Topology.Removed[name].Proxmox.VMID}
			if r.States != nil {
				rec, _, err := ReadState(ctx, r.States, name)
				if err != nil {
					errs[i] = fmt.Errorf("state of %s: %w", name, err)
					return
				}
				o.Record = rec
			}
			if !o.Record.Removed.IsZero() {
				return // taken out before
			}
			if _, err := r.Cluster.Leader(ctx, name); err == nil {
				o.Reachable = true
				if mr, ok := r.Cluster.(MetaRemover); ok {
					if o.Streams, err = mr.StreamsOn(ctx, name); err != nil {
						o.StreamsErr = err.Error()
					}
				}
			} else {
				o.Problem = err.Error()
			}
			if r.Proxmox != nil && o.VMID != 0 {
				if st, err := r.Proxmox.Status(ctx, o.VMID); err == nil {
					o.Container = string(st)
				} else {
					o.Problem = strings.TrimPrefix(o.Problem+"; "+err.Error(), "; ")
				}
			}
			obs[i] = o
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	out := obs[:0]
	for _, o := range obs {
		if o.Node != "" {
			out = append(out, o)
		}
	}
	return out, nil
}

// planRemovals fills p.Removals (and the problems they raise, and Members with the removed nodes
// still running: until they are taken out, every gate counts their routes) from the removed nodes
// among in.Observed, and returns the others. Nodes are taken out only by a rollout of every remaining
// node: until each of them runs routes without the removed node, it would route to it again.
func planRemovals(p *Plan, in PlanInput) []Observation {
	var rest []Observation
	remaining := map[string]bool{}
	for _, o := range in.Observed {
		if !o.Removed {
			rest = append(rest, o)
			remaining[o.Node] = true
		}
	}
	for _, t := range in.Targets {
		delete(remaining, t.Node)
	}
	var untargeted []string
	for n := range remaining {
		untargeted = append(untargeted, n)
	}
	slices.Sort(untargeted)
	p.DestroyRemoved = in.DestroyRemoved
	for _, o := range in.Observed {
		if !o.Removed {
			continue
		}
		rm := Removal{Node: o.Node, VMID: o.VMID, Running: o.Reachable, Container: o.Container, Destroy: in.DestroyRemoved}
		if o.Reachable {
			p.Members = append(p.Members, o.Node)
		}
		if len(untargeted) > 0 {
			rm.Deferred = fmt.Sprintf("the events removed it, but %s not part of this rollout: a rollout of every remaining node (--all) takes it out",
				strings.Join(untargeted, ", ")+map[bool]string{true: " is", false: " are"}[len(untargeted) == 1])
			p.Removals = append(p.Removals, rm)
			continue
		}
		problem := func(format string, args ...any) {
			p.Problems = append(p.Problems, fmt.Sprintf("removing %s: ", o.Node)+fmt.Sprintf(format, args...))
		}
		step := func(s string) { rm.Steps = append(rm.Steps, s) }
		place := placeNode(in.Topology, o.Node)
		nats := topology.RunsNATS(place.role)
		if o.Reachable && nats {
			step("check that every stream on it has a current copy on another server")
			switch only := OnlyCopies(o.Streams); {
			case o.StreamsErr != "":
				problem("cannot list the streams on it: %s", o.StreamsErr)
			case len(only) > 0:
				names := make([]string, len(only))
				for i, s := range only {
					names[i] = s.String()
				}
				problem("these streams have no current copy on another server and would be lost: %s "+
					"(raise their replicas, or move or back them up first)", strings.Join(names, "; "))
			}
		}
		switch {
		case o.Container == string(remote.ContainerRunning):
			step(fmt.Sprintf("stop its container: pct stop %d", o.VMID))
		case o.Reachable && nats:
			step("stop its NATS server: systemctl stop " + NATSUnit)
		}
		if place.role == topology.RoleNATSCluster {
			step(fmt.Sprintf(`remove it from the JetStream meta group of cluster %s: $JS.API.SERVER.REMOVE {"peer":%q} (system account)`,
				place.cluster, o.Node))
			if in.RemoveProblem != "" {
				problem("%s", in.RemoveProblem)
			}
			step("wait until every remaining member of cluster " + place.cluster + " is healthy without it and out of the meta group")
		}
		switch {
		case !in.DestroyRemoved:
		case o.Container == "":
			problem("--destroy-removed: no Proxmox host (CIMDEPLOY_PROXMOX_HOST) to destroy container %d on", o.VMID)
		case o.Container == string(remote.ContainerMissing):
			rm.Destroy = false
			step(fmt.Sprintf("nothing to destroy: container %d does not exist", o.VMID))
		default:
			step(fmt.Sprintf("destroy its container: pct destroy %d --purge 1", o.VMID))
		}
		step("record it as removed")
		p.Removals = append(p.Removals, rm)
	}
	return rest
}

// removeNode takes rm's node out of its NATS cluster; others are removed nodes of the same cluster
// whose servers still run (taken out after it). A leaf is in no meta group and no other server counts
// it: it is checked for streams, stopped and recorded. A node of a role without NATS is stopped and
// recorded.
func (r *Rollout) removeNode(ctx context.Context, plan *Plan, rm Removal, others int, st Step, log *slog.Logger) (nr NodeResult) {
	start := r.now()
	nr = NodeResult{Node: rm.Node, Action: ActionRemove}
	defer func() { nr.Duration = r.now().Sub(start) }()
	fail := func(what string, err error) NodeResult {
		nr.Status, nr.err = StatusFailed, fmt.Errorf("%s: %w", what, err)
		nr.Error = nr.err.Error()
		log.Error("removal failed", "step", what, "err", err)
		return nr
	}
	place := placeNode(r.Topology, rm.Node)
	member, nats := place.role == topology.RoleNATSCluster, topology.RunsNATS(place.role)
	mr, ok := r.Cluster.(MetaRemover)
	switch {
	case !nats:
	case !ok:
		return fail("remove", errors.New("the cluster cannot take servers out of the JetStream meta group"))
	case member:
		if err := mr.CanRemove(); err != nil {
			return fail("remove", err)
		}
	}
	node := context.WithoutCancel(ctx) // a node half taken out is worse than one taken out
	const steps = 5

	// 1. Its streams, again: the plan may be minutes old.
	st.Progress(ctx, 1, steps, "check the streams on it")
	if rm.Running && nats {
		sctx, cancel := context.WithTimeout(ctx, r.Config.GateTimeout)
		streams, err := mr.StreamsOn(sctx, rm.Node)
		cancel()
		if err != nil {
			return fail("list the streams on it", err)
		}
		if only := OnlyCopies(streams); len(only) > 0 && !plan.Force {
			names := make([]string, len(only))
			for i, s := range only {
				names[i] = s.String()
			}
			return fail("check the streams on it", fmt.Errorf("no current copy on another server: %s", strings.Join(names, "; ")))
		}
	}

	// 2. Stop it: its container, or its NATS server (also when its container is not on the Proxmox
	// host the events name: the node still runs somewhere, and its server must leave).
	st.Progress(ctx, 2, steps, "stop it")
	lc, _ := r.Proxmox.(remote.Lifecycle)
	stopped := false
	if lc != nil && rm.VMID != 0 {
		pctx, cancel := context.WithTimeout(node, r.Config.ActivationTimeout)
		was, err := lc.StopContainer(pctx, rm.VMID, rm.Node)
		cancel()
		if err != nil {
			return fail("stop its container", err)
		}
		if stopped = was != remote.ContainerMissing; stopped {
			st.Note("container %d was %s, now stopped", rm.VMID, was)
		} else {
			st.Note("container %d does not exist on the Proxmox host", rm.VMID)
		}
	}
	switch sys, _ := r.Systems[rm.Node].(ServiceStopper); {
	case stopped:
	case sys != nil && rm.Running && nats:
		sctx, cancel := context.WithTimeout(node, r.Config.ActivationTimeout)
		err := sys.StopService(sctx, NATSUnit)
		cancel()
		if err != nil {
			return fail("stop its NATS server", err)
		}
	}

	if member {
		if what, err := r.leaveMetaGroup(node, mr, rm, place.cluster, others, st, steps); err != nil {
			return fail(what, err)
		}
	}

	// 5. Destroy (when asked) and record.
	st.Progress(ctx, 5, steps, "record")
	if rm.Destroy && rm.VMID != 0 {
		if lc == nil {
			return fail("destroy its container", errors.New("no Proxmox host (CIMDEPLOY_PROXMOX_HOST)"))
		}
		dctx, cancel := context.WithTimeout(node, r.Config.ActivationTimeout)
		err := lc.DestroyContainer(dctx, rm.VMID, rm.Node)
		cancel()
		if err != nil {
			return fail("destroy its container", err)
		}
		nr.Destroyed = true
	}
	if err := r.update(node, rm.Node, log, func(s *NodeState) bool {
		s.Removed, s.RemovedRunID, s.Destroyed = r.now().UTC(), plan.RunID, nr.Destroyed
		return true
	}); err != nil {
		return fail("record", err)
	}
	nr.Status = StatusSuccess
	log.Info("node removed", "vmid", rm.VMID, "destroyed", nr.Destroyed, "duration", r.now().Sub(start).Round(time.Millisecond))
	return nr
}

// leaveMetaGroup takes rm's stopped server out of the JetStream meta group of its cluster, through
// the cluster's remaining members, and waits until each of them is healthy, clustered with the
// others (and with others, the cluster's removed servers still running) and without it in its meta
// group. On failure it returns the step that failed and why.
func (r *Rollout) leaveMetaGroup(node context.Context, mr MetaRemover, rm Removal, cluster string, others int, st Step, steps int) (string, error) {
	// 3. Out of the meta group, through a remaining member; until a meta leader is elected (it may
	// have been the one stopped), the request is repeated.
	st.Progress(node, 3, steps, "remove it from the JetStream meta group")
	var vias []string
	for _, n := range r.Topology.NodeNames() {
		if p := placeNode(r.Topology, n); p.role == topology.RoleNATSCluster && p.cluster == cluster {
			vias = append(vias, n)
		}
	}
	if len(vias) == 0 {
		return "remove it from the JetStream meta group", fmt.Errorf("cluster %s has no member left to ask", cluster)
	}
	err := r.poll(node, r.Config.GateTimeout, nil, func(ctx context.Context) error {
		var errs []error
		for _, via := range vias {
			peers, err := mr.MetaPeers(ctx, via)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if !slices.Contains(peers, rm.Node) {
				return nil
			}
			if err := mr.RemoveServer(ctx, via, rm.Node); err != nil {
				errs = append(errs, err)
				continue
			}
			return errors.New("asked; waiting for the meta group to drop it")
		}
		return errors.Join(errs...)
	})
	if err != nil {
		return "remove it from the JetStream meta group", fmt.Errorf("within %s (CIMDEPLOY_ROLLOUT_GATE_TIMEOUT): %w", r.Config.GateTimeout, err)
	}

	// 4. Every remaining member healthy, clustered with the others only, without it in its meta group.
	st.Progress(node, 4, steps, "health gate of the remaining nodes")
	peers := len(vias) - 1 + others // the servers of the cluster left, but the one gated
	for _, n := range vias {
		err := r.poll(node, r.Config.GateTimeout, nil, func(ctx context.Context) error {
			if err := r.Cluster.Health(ctx, n, peers); err != nil {
				return err
			}
			mp, err := mr.MetaPeers(ctx, n)
			if err != nil {
				return err
			}
			if slices.Contains(mp, rm.Node) {
				// A removal the old leader had not committed before an election is gone with it: ask
				// again.
				_ = mr.RemoveServer(ctx, n, rm.Node)
				return fmt.Errorf("%s still has %s in its meta group (%s)", n, rm.Node, strings.Join(mp, ", "))
			}
			return nil
		})
		if err != nil {
			return "health gate of " + n, fmt.Errorf("not healthy within %s (CIMDEPLOY_ROLLOUT_GATE_TIMEOUT): %w", r.Config.GateTimeout, err)
		}
	}
	return "", nil
}

// runRemovals takes out the plan's removals, one at a time, after the switches.
func (r *Rollout) runRemovals(ctx context.Context, plan *Plan, res *Result, tr Tracker, log *slog.Logger) {
	for i, rm := range plan.Removals {
		if rm.Deferred != "" {
			continue
		}
		if err := ctx.Err(); err != nil {
			res.Status, res.Error = StatusCancelled, "cancelled before removing "+rm.Node+": "+context.Cause(ctx).Error()
			res.Nodes = append(res.Nodes, NodeResult{Node: rm.Node, Action: ActionRemove, Status: StatusCancelled})
			return
		}
		var nr NodeResult
		_ = tr.Step(ctx, rm.Node, func(ctx context.Context, st Step) error {
			nr = r.removeNode(ctx, plan, rm, stillRunning(r.Topology, rm.Node, plan.Removals[i+1:]), st,
				log.With("node", rm.Node, "action", ActionRemove))
			if note := nr.note(); note != "" {
				st.Note("%s", note)
			}
			return nr.err
		})
		res.Nodes = append(res.Nodes, nr)
		if nr.Status == StatusFailed {
			res.Status, res.Error = StatusFailed, rm.Node+": "+nr.Error
			return
		}
	}
}

// stillRunning counts the removals of later whose servers run and are members of node's cluster:
// until they are taken out, the cluster's remaining members still route to them.
func stillRunning(top *topology.Topology, node string, later []Removal) int {
	p := placeNode(top, node)
	n := 0
	for _, rm := range later {
		if q := placeNode(top, rm.Node); rm.Running && rm.Deferred == "" && q.role == topology.RoleNATSCluster && q == p {
			n++
		}
	}
	return n
}
