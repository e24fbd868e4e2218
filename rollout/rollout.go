package rollout

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cimdeploy/cimdeploy/gitops/topology"
	"github.com/cimdeploy/cimdeploy/remote"
)

// Rollout switches a NATS cluster's nodes one at a time behind health gates. Build its plan with
// Plan (or Observe and NewPlan), then Run it. A Rollout runs one plan at a time.
type Rollout struct {
	// Topology is the cluster the targets were built from: its nodes, their containers and addresses.
	Topology *topology.Topology
	// Systems are the nodes, by name; every node of Topology needs one.
	Systems map[string]System
	Cluster Cluster
	// States records what each node runs; nil records nothing and guards nothing.
	States States
	// Proxmox creates the containers of new nodes; nil: new nodes are refused.
	Proxmox remote.Proxmox
	// Secrets installs each node's secrets before its switch (NewSecrets); nil installs none.
	Secrets Secrets
	Config  Config
	Logger  *slog.Logger
	// Now is the clock (tests); nil: time.Now.
	Now func() time.Time
}

func (r *Rollout) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

func (r *Rollout) logger() *slog.Logger {
	if r.Logger != nil {
		return r.Logger
	}
	return slog.New(slog.DiscardHandler)
}

// Request is what to roll out.
type Request struct {
	RunID, Commit string
	Targets       []Target
	Force         bool
	RevertAll     bool
	// DestroyRemoved destroys the containers of the nodes the events removed, once taken out.
	DestroyRemoved bool
	// Recreate recreates the targets' containers from their templates, keeping their JetStream data
	// with KeepData, wiping it otherwise.
	Recreate, KeepData bool
}

// Plan observes every node of the cluster (Observe) and plans the request (NewPlan).
func (r *Rollout) Plan(ctx context.Context, req Request) (*Plan, error) {
	if na, ok := r.Cluster.(noAccess); ok {
		return nil, na.err // no gate could pass: not even --force goes on
	}
	obs, leaders, err := r.ObserveLeaders(ctx)
	if err != nil {
		return nil, err
	}
	leader := ""
	if clusters := slices.Sorted(maps.Keys(leaders)); len(clusters) > 0 {
		leader = leaders[clusters[0]]
	}
	in := PlanInput{RunID: req.RunID, Commit: req.Commit, Targets: req.Targets, Observed: obs, Leader: leader,
		Topology: r.Topology, Leaders: leaders, MaxParallel: r.Config.maxParallel(),
		Force: req.Force, RevertAll: req.RevertAll, Now: r.now(), DestroyRemoved: req.DestroyRemoved,
		Recreate: req.Recreate, KeepData: req.KeepData, Mode: r.Config.Mode, RebootProblem: r.rebootProblem()}
	r.observeInhibitors(ctx, &in)
	if req.Recreate && !req.KeepData {
		r.observeStreams(ctx, obs, req.Targets)
	}
	if mr, ok := r.Cluster.(MetaRemover); !ok {
		in.RemoveProblem = "the cluster cannot take servers out of the JetStream meta group"
	} else if err := mr.CanRemove(); err != nil {
		in.RemoveProblem = err.Error()
	}
	return NewPlan(in), nil
}

// Observe looks at every node of the topology at once: what it runs, its generations, what the state
// store recorded, and whether it is healthy (polled up to the pre-flight timeout): a cluster member
// clustered with every other reachable member of its cluster, a leaf connected to its hub, a node
// without NATS reachable. An unreachable node's container state comes from Proxmox. It also finds the
// JetStream meta leader (of the first cluster by name; ObserveLeaders gives every cluster's). Only a
// state store that fails is an error: everything else is an observation.
func (r *Rollout) Observe(ctx context.Context) ([]Observation, string, error) {
	obs, leaders, err := r.ObserveLeaders(ctx)
	if err != nil {
		return nil, "", err
	}
	clusters := slices.Sorted(maps.Keys(leaders))
	if len(clusters) == 0 {
		return obs, "", nil
	}
	return obs, leaders[clusters[0]], nil
}

// ObserveLeaders is Observe with the JetStream meta leader of each NATS cluster (asked of a healthy
// member of that cluster), by cluster name; a cluster whose leader is unknown has none.
func (r *Rollout) ObserveLeaders(ctx context.Context) ([]Observation, map[string]string, error) {
	names := r.Topology.NodeNames()
	obs := make([]Observation, len(names))
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Go(func() { obs[i], errs[i] = r.observe(ctx, name) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, nil, err
	}
	removed, err := r.observeRemoved(ctx)
	if err != nil {
		return nil, nil, err
	}
	reachable := map[string]int{} // cluster -> its reachable members
	for _, o := range slices.Concat(obs, removed) {
		// A removed node still routed to counts: every gate counts it until it is taken out.
		if pl := placeNode(r.Topology, o.Node); o.Reachable && pl.role == topology.RoleNATSCluster {
			reachable[pl.cluster]++
		}
	}
	for i := range obs {
		if !obs[i].Reachable {
			continue
		}
		wg.Go(func() {
			o := &obs[i]
			peers := reachable[placeNode(r.Topology, o.Node).cluster] - 1
			err := r.poll(ctx, r.Config.PreflightTimeout, nil, func(ctx context.Context) error {
				return r.health(ctx, o.Node, peers)
			})
			o.Healthy = err == nil
			if err != nil {
				o.Problem = err.Error()
			}
		})
	}
	wg.Wait()
	leaders := map[string]string{}
	for _, o := range obs {
		pl := placeNode(r.Topology, o.Node)
		if _, found := leaders[pl.cluster]; found || !o.Healthy || pl.role != topology.RoleNATSCluster {
			continue
		}
		if l, err := r.Cluster.Leader(ctx, o.Node); err == nil && l != "" {
			leaders[pl.cluster] = l
		}
	}
	return append(obs, removed...), leaders, nil
}

func (r *Rollout) observe(ctx context.Context, name string) (Observation, error) {
	o := Observation{Node: name}
	if r.States != nil {
		rec, _, err := ReadState(ctx, r.States, name)
		if err != nil {
			return o, fmt.Errorf("state of %s: %w", name, err)
		}
		o.Record = rec
	}
	sys, ok := r.Systems[name]
	if !ok {
		o.Problem = "no connection configured"
		return o, nil
	}
	rs := readRunning(ctx, sys)
	cur, err := rs.current, rs.currentErr
	if err == nil {
		o.Generations, err = rs.generations, rs.generationsErr
	}
	if err != nil {
		o.Problem = err.Error()
		if r.Proxmox != nil {
			vmid := r.Topology.Nodes[name].Proxmox.VMID
			if st, perr := r.Proxmox.Status(ctx, vmid); perr == nil {
				o.Container = string(st)
			} else {
				o.Problem += "; " + perr.Error()
			}
		}
		return o, nil
	}
	o.Reachable, o.Current = true, cur
	return o, nil
}

// Run runs the plan: each of its groups (waves.go) a plain loop over its nodes, one at a time (a NATS
// cluster) or a batch at a time (leaves, other roles); groups side by side, a hub's leaves after the
// hub, at most Config.MaxParallel nodes at once (groups.go). A failure halts its group and the groups
// that depend on it; the others finish the node in flight and stop (or go on with KeepGoing).
// Cancellation of ctx is checked between nodes only: a node whose switch has begun is finished (or
// rolled back) on a context of its own, with its own timeouts. A refused plan touches nothing. tr nil
// logs instead.
func (r *Rollout) Run(ctx context.Context, plan *Plan, tr Tracker) *Result {
	log := r.logger().With("run_id", plan.RunID, "commit", plan.Commit, "stage", "rollout")
	if tr == nil {
		tr = LogTracker(log)
	}
	res := &Result{RunID: plan.RunID, Commit: plan.Commit, Status: StatusSuccess, Start: r.now()}
	defer func() { res.Duration = r.now().Sub(res.Start) }()
	if plan.Refused() {
		res.Status, res.Error = StatusRefused, "pre-flight: "+strings.Join(plan.Problems, "; ")+" (--force overrides)"
		tr.Skip(nodeNames(plan.Nodes), StatusSkipped, "refused: "+res.Error)
		log.Warn("rollout refused", "problems", plan.Problems)
		return res
	}
	if problems := r.checkSecrets(plan); len(problems) > 0 {
		res.Status, res.Error = StatusRefused, "pre-flight: secrets: "+strings.Join(problems, "; ")
		tr.Skip(nodeNames(plan.Nodes), StatusSkipped, "refused: "+res.Error)
		log.Warn("rollout refused: secrets missing", "problems", problems)
		return res
	}
	if r.Secrets == nil && r.Topology.Security != nil {
		log.Warn("the cluster is secured but no secrets directory is set (CIMDEPLOY_SECRETS_DIR): the nodes' secrets must already be in place",
			"secrets_dir", r.Topology.Security.SecretsDir)
	}
	stopCopies := r.precopy(ctx, plan, log)
	defer stopCopies()
	r.runGroups(ctx, plan, tr, res, log)
	if res.Status == StatusSuccess {
		r.runRemovals(ctx, plan, res, tr, log)
	}
	log.Info("rollout finished", "status", res.Status, "duration", r.now().Sub(res.Start).Round(time.Millisecond),
		"critical_path", res.CriticalPath.Round(time.Millisecond))
	return res
}

// settle waits, up to the settle timeout, until the cluster of members has settled (Settler): every
// member healthy and every replicated stream caught up. A Cluster that is no Settler settles at once.
func (r *Rollout) settle(ctx context.Context, members []string, log *slog.Logger) error {
	s, ok := r.Cluster.(Settler)
	if !ok {
		return nil
	}
	start := time.Now()
	err := r.poll(ctx, r.Config.settleTimeout(), nil, func(ctx context.Context) error {
		return s.Settled(ctx, members, len(members)-1)
	})
	if err != nil {
		return fmt.Errorf("cluster not settled within %s (CIMDEPLOY_ROLLOUT_SETTLE_TIMEOUT): %w", r.Config.settleTimeout(), err)
	}
	log.Debug("cluster settled", "members", len(members), "waited", time.Since(start).Round(time.Millisecond))
	return nil
}

// runningState is what a node runs: its system and its profile's generations, each with its error.
type runningState struct {
	current        string
	currentErr     error
	generations    []Generation
	generationsErr error
}

// RunningReader is a System that reads the system it runs and its profile's generations in one
// command (SSHSystem): what Current and Generations return, in one round trip and one session.
type RunningReader interface {
	Running(ctx context.Context) (current string, gens []Generation, err error)
}

// readRunning reads the system a node runs and its profile's generations at once: in one command when
// sys is a RunningReader, else two commands side by side on its connection (one round trip's wait,
// not two).
func readRunning(ctx context.Context, sys System) runningState {
	var rs runningState
	if rr, ok := sys.(RunningReader); ok {
		cur, gens, err := rr.Running(ctx)
		return runningState{current: cur, currentErr: err, generations: gens, generationsErr: err}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		rs.generations, rs.generationsErr = sys.Generations(ctx)
	}()
	rs.current, rs.currentErr = sys.Current(ctx)
	<-done
	return rs
}

// precopyLimit bounds the closure copies Run makes at once ahead of the nodes' switches.
const precopyLimit = 4

// precopy starts copying the closures of every node the plan switches while the rolling loop goes on:
// a copy changes nothing a node runs, so it need not wait for its node's turn. The copies of the
// nodes that switch first (precopyOpeners: the first batch of every group that starts at once) run
// first, side by side, because their switches wait for them; the others follow, during those
// switches. Each node's NodePlan gets the channel its copy arrives on. With Config.FanOut the nodes
// fetch from each other (fan), and the key that lets them is taken away when the last copy ended.
// The returned func cancels the copies still running and waits for them (Run calls it when it
// returns). A copy that fails is left to the node's own switch, which copies again.
func (r *Rollout) precopy(ctx context.Context, plan *Plan, log *slog.Logger) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	fan := r.fan(ctx, plan, log)
	slots := make(chan struct{}, precopyLimit)
	var openerWG sync.WaitGroup
	openersDone := make(chan struct{}) // closed when the openers' copies ended
	openers := precopyOpeners(plan)
	for i := range plan.Nodes {
		np := &plan.Nodes[i]
		sys := r.Systems[np.Node]
		if np.Action != ActionSwitch || np.TargetGeneration != 0 || sys == nil {
			continue
		}
		done := make(chan precopied, 1) // buffered: the copier never blocks on a switch that gave up
		np.precopy = done
		opener := openers[np.Node]
		if opener {
			openerWG.Add(1)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if opener {
				defer openerWG.Done()
			} else {
				select {
				case <-openersDone:
				case <-ctx.Done():
					done <- precopied{err: ctx.Err()}
					return
				}
			}
			select {
			case slots <- struct{}{}:
				defer func() { <-slots }()
			case <-ctx.Done():
				done <- precopied{err: ctx.Err()}
				return
			}
			cctx, ccancel := context.WithTimeout(ctx, r.Config.CopyTimeout)
			defer ccancel()
			var copied remote.Copied
			var err error
			if n := sshNode(sys); fan != nil && n != nil {
				copied, err = fan.Copy(cctx, n, []string{np.Target})
			} else {
				copied, err = sys.Copy(cctx, np.Target)
			}
			if err != nil {
				log.Warn("closure copy ahead of the switch failed; the node's switch copies again", "node", np.Node, "err", err)
			}
			done <- precopied{copied: copied, err: err}
		}()
	}
	wg.Go(func() { // every opener is counted above: the others wait until the openers' copies ended
		openerWG.Wait()
		close(openersDone)
	})
	ended := make(chan struct{}) // the copies ended, and the nodes' trust in each other with them
	go func() {
		defer close(ended)
		wg.Wait()
		if fan == nil {
			return
		}
		if err := fan.Close(ctx); err != nil {
			log.Error("taking the fan-out key away from the nodes failed: remove the lines marked cimdeploy-fanout from their root's authorized_keys",
				"err", err)
		}
	}()
	return func() {
		cancel()
		<-ended
	}
}

// fan is the remote.Fan of the nodes whose closures the plan copies, when Config.FanOut asks for one
// and they are at least that many and all reached over SSH; nil otherwise, or when it cannot be made
// (the copies then all come from here).
func (r *Rollout) fan(ctx context.Context, plan *Plan, log *slog.Logger) *remote.Fan {
	if r.Config.FanOut < 2 {
		return nil
	}
	var nodes []*remote.SSHNode
	for _, np := range plan.Nodes {
		if np.Action != ActionSwitch || np.TargetGeneration != 0 {
			continue
		}
		n := sshNode(r.Systems[np.Node])
		if n == nil {
			return nil
		}
		nodes = append(nodes, n)
	}
	if len(nodes) < r.Config.FanOut {
		return nil
	}
	fan, err := remote.NewFan(ctx, nodes)
	if err != nil {
		log.Warn("the nodes cannot fetch closures from each other; every copy comes from here", "err", err)
		return nil
	}
	log.Info("nodes fetch closures from each other", "nodes", len(nodes))
	return fan
}

// sshNode is the SSH node of sys, nil when it is none.
func sshNode(sys System) *remote.SSHNode {
	s, ok := sys.(*SSHSystem)
	if !ok {
		return nil
	}
	n, _ := s.Node.(*remote.SSHNode)
	return n
}

// precopyOpeners are the nodes whose switches come first: the first batch of every group that depends
// on no other (in a plan without groups, its first node). Their switches wait for their copies, so
// those copies go before all others.
func precopyOpeners(plan *Plan) map[string]bool {
	openers := map[string]bool{}
	action := map[string]Action{}
	for _, np := range plan.Nodes {
		action[np.Node] = np.Action
	}
	for _, g := range plan.Groups {
		if len(g.After) > 0 {
			continue
		}
		for _, batch := range g.Batches { // the first batch with a switch: nodes at their target go at once
			found := false
			for _, n := range batch {
				if action[n] == ActionSwitch {
					openers[n], found = true, true
				}
			}
			if found {
				break
			}
		}
	}
	if len(openers) == 0 {
		for _, np := range plan.Nodes {
			if np.Action == ActionSwitch {
				openers[np.Node] = true
				break
			}
		}
	}
	return openers
}

// step runs one node as a step of the tracker.
func (r *Rollout) step(ctx context.Context, plan *Plan, np NodePlan, members int, tr Tracker, log *slog.Logger) NodeResult {
	var nr NodeResult
	_ = tr.Step(ctx, np.Node, func(ctx context.Context, st Step) error {
		switch np.Action {
		case ActionSkip:
			nr = NodeResult{Node: np.Node, Action: np.Action, Status: StatusSkipped, From: np.Current, To: np.Target,
				FromGeneration: np.CurrentGeneration, Generation: np.CurrentGeneration}
			r.recordAt(context.WithoutCancel(ctx), plan, np, np.CurrentGeneration, log)
		case ActionProvision:
			nr = r.provision(ctx, plan, np, members, st, log)
		case ActionRecreate:
			nr = r.recreate(ctx, plan, np, members, st, log)
		case ActionSwitch:
			nr = r.switchNode(ctx, plan, np, switchIDs(plan.RunID, np.Node, ""), members-1, st, log)
		default:
			nr = NodeResult{Node: np.Node, Action: np.Action, Status: StatusFailed, Error: np.Reason, err: errors.New(np.Reason)}
		}
		if note := nr.note(); note != "" {
			st.Note("%s", note)
		}
		return nr.err
	})
	return nr
}

// ids are the names of one switch's units on the node.
type ids struct {
	timer    string // the dead-man timer's id: unit cimdeploy-rollback-<timer>
	unit     string // the activation: cimdeploy-switch-<node>-<run>
	rollback string // the controller's own rollback activation
}

func switchIDs(runID, node, suffix string) ids {
	id := sanitize(runID)
	if suffix != "" {
		id += "-" + suffix
	}
	return ids{timer: id, unit: "cimdeploy-switch-" + node + "-" + id, rollback: "cimdeploy-switch-" + node + "-" + id + "-rollback"}
}

// sanitize keeps what a unit name takes.
func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			return r
		}
		return '_'
	}, s)
}

// switchNode is the procedure for one node: guard, copy, arm, profile, activate, gate, disarm,
// record. After a failure from the profile on, the node is rolled back to the generation it ran.
// Until the closure is copied, ctx may stop it (nothing changed on the node); from the dead-man timer
// on, the run's cancellation no longer reaches it.
func (r *Rollout) switchNode(ctx context.Context, plan *Plan, np NodePlan, id ids, peers int, st Step, log *slog.Logger) (nr NodeResult) {
	cfg := r.Config
	sys := r.Systems[np.Node]
	start := r.now()
	if mr, ok := r.switchMode(ctx, plan, np, id, peers, st, log); ok {
		return mr // test and boot (mode.go)
	}
	nr = NodeResult{Node: np.Node, Action: ActionSwitch, From: np.Current, FromGeneration: np.CurrentGeneration, To: np.Target}
	defer func() { nr.Duration = r.now().Sub(start) }()
	fail := func(what string, err error) NodeResult {
		nr.Status, nr.err = StatusFailed, fmt.Errorf("%s: %w", what, err)
		nr.Error = nr.err.Error()
		log.Error("switch failed", "step", what, "err", err)
		return nr
	}
	const steps = 5

	// 1. Guard, beside the closure's copy; then the secrets (prepare). The node must run a generation
	// of its profile: the one a failure goes back to.
	var back Generation
	_, what, err := r.prepare(ctx, np, &nr, st, steps, func(rs runningState) error {
		back = switchBack(np, rs.current, rs.generations) // a test activation goes back to the boot default (mode.go)
		if back.Number == 0 {
			return fmt.Errorf("the running system %s is no generation of the profile", rs.current)
		}
		return nil
	})
	if err != nil {
		return fail(what, err)
	}
	nr.FromGeneration = back.Number

	// From here on the node is finished or rolled back, whatever happens to the run.
	node := context.WithoutCancel(ctx)
	bounded := func() (context.Context, context.CancelFunc) { return context.WithTimeout(node, cfg.ActivationTimeout) }

	rollBack := func(what string, cause error) NodeResult {
		fail(what, cause)
		bad := nr.Generation
		if np.TargetGeneration != 0 {
			bad = 0 // an existing generation is not ours to delete
		}
		if rerr := r.rollBack(node, sys, id, back, bad, peers, log); rerr != nil {
			nr.err = fmt.Errorf("%w; rollback: %w", nr.err, rerr)
		} else {
			nr.RolledBack = true
			nr.err = fmt.Errorf("%w; rolled back to generation %d", nr.err, back.Number)
		}
		nr.Error = nr.err.Error()
		r.recordFailure(node, plan, np, back, nr.Error, log)
		return nr
	}

	// 3. Arm the dead-man timer, so that should the controller vanish the node goes back by itself;
	// then, in the same round trip, make the target the profile's current generation (a new one, or
	// the existing one a rollback goes to) and activate it in a transient unit (a dropped connection
	// cannot stop it): one SSH command, which starts the unit only once the timer runs.
	st.Progress(ctx, 3, steps, "arm the dead-man rollback, set the system profile, activate")
	actx, cancel := bounded()
	gen, act, err := sys.ArmActivate(actx, id.timer, cfg.ConfirmTimeout, back, Generation{Number: np.TargetGeneration, Toplevel: np.Target}, id.unit)
	cancel()
	nr.Generation = gen
	switch {
	case errors.Is(err, ErrNotArmed):
		return fail("arm the dead-man rollback", err) // nothing changed
	case err != nil && gen == 0:
		return rollBack("set the system profile", err)
	}
	log.Info("dead-man rollback armed", "timer", id.timer, "back_to", back.Number, "generation", nr.Generation,
		"confirm_timeout", cfg.ConfirmTimeout)
	nr.Activation, nr.ExitCode, nr.Reconnected = act.Duration, act.ExitCode, act.Reconnected
	writeLines(st, act.Output)
	if act.Reconnected {
		log.Warn("the connection dropped during the activation; its unit's result was polled", "unit", id.unit)
	}
	if err != nil {
		return rollBack("activate", err)
	}

	// 5. The gate, from the controller.
	st.Progress(ctx, 4, steps, "health gate")
	gateStart := r.now()
	err = r.gate(node, np.Node, np.Target, peers)
	nr.Rejoin = r.now().Sub(gateStart)
	if err != nil {
		return rollBack("health gate", err)
	}

	// 6. Confirm: disarm the timer before it fires.
	st.Progress(ctx, 5, steps, "disarm")
	dctx, cancel := bounded()
	claimed, err := sys.Disarm(dctx, id.timer)
	cancel()
	switch {
	case err != nil:
		return rollBack("disarm the dead-man rollback", err)
	case !claimed:
		return rollBack("disarm the dead-man rollback", fmt.Errorf("the timer fired before the switch was confirmed "+
			"(CIMDEPLOY_ROLLOUT_CONFIRM_TIMEOUT %s): the node rolled itself back", cfg.ConfirmTimeout))
	}
	nr.Status = StatusSuccess
	if err := r.recordAt(node, plan, np, nr.Generation, log); err != nil {
		nr.Status, nr.err = StatusFailed, fmt.Errorf("switched and healthy, but not recorded: %w", err)
		nr.Error = nr.err.Error()
	}
	log.Info("node switched", "generation", nr.Generation, "activation", nr.Activation.Round(time.Millisecond),
		"rejoin", nr.Rejoin.Round(time.Millisecond))
	return nr
}

// rollBack returns a node whose switch failed to generation back: switch the profile back, activate
// it unless it runs already, delete the failed generation bad (0: none), wait for the node to be
// healthy, and only then claim the dead-man timer. Until then the timer stays armed as the backstop:
// should this rollback fail, or the controller vanish, the node still goes back at the confirm
// timeout. The timer's steps are the same and activations take turns, so both doing them is harmless.
func (r *Rollout) rollBack(ctx context.Context, sys System, id ids, back Generation, bad, peers int, log *slog.Logger) error {
	cfg := r.Config
	bounded := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, cfg.ActivationTimeout) }
	backstop := fmt.Sprintf("its dead-man timer switches it back at the confirm timeout (%s) unless it fired already", cfg.ConfirmTimeout)
	sctx, cancel := bounded()
	err := sys.SwitchGeneration(sctx, back.Number)
	cancel()
	if err != nil {
		return fmt.Errorf("switch the profile back to generation %d: %w; %s", back.Number, err, backstop)
	}
	cctx, cancel := bounded()
	cur, err := sys.Current(cctx)
	cancel()
	if err != nil || cur != back.Toplevel {
		vctx, cancel := bounded()
		_, err = sys.Activate(vctx, id.rollback, back.Toplevel)
		cancel()
		if err != nil {
			return fmt.Errorf("activate generation %d: %w; %s", back.Number, err, backstop)
		}
	}
	if bad != 0 && bad != back.Number {
		xctx, cancel := bounded()
		err := sys.DeleteGenerations(xctx, bad)
		cancel()
		if err != nil {
			log.Warn("cannot delete the failed generation", "generation", bad, "err", err)
		}
	}
	gateErr := r.gate(ctx, sys.Name(), back.Toplevel, peers)
	dctx, cancel := bounded()
	claimed, err := sys.Disarm(dctx, id.timer)
	cancel()
	switch {
	case err != nil:
		log.Warn("cannot disarm the dead-man timer after the rollback; when it fires it finds the node rolled back", "err", err)
	case !claimed:
		log.Warn("the dead-man timer fired during the switch: the node rolled back by itself too")
	}
	if gateErr != nil {
		return fmt.Errorf("back on generation %d, but %w", back.Number, gateErr)
	}
	log.Info("rolled back", "generation", back.Number)
	return nil
}

// provision creates a new node's container from its template (started, SSH answering) and gates it:
// it runs the template's system, which is the target.
func (r *Rollout) provision(ctx context.Context, plan *Plan, np NodePlan, members int, st Step, log *slog.Logger) (nr NodeResult) {
	start := r.now()
	nr = NodeResult{Node: np.Node, Action: ActionProvision, To: np.Target}
	defer func() { nr.Duration = r.now().Sub(start) }()
	fail := func(what string, err error) NodeResult {
		nr.Status, nr.err = StatusFailed, fmt.Errorf("%s: %w", what, err)
		nr.Error = nr.err.Error()
		log.Error("provisioning failed", "step", what, "err", err)
		return nr
	}
	if r.Proxmox == nil {
		return fail("provision", errors.New("no Proxmox host (CIMDEPLOY_PROXMOX_HOST)"))
	}
	sys := r.Systems[np.Node]
	c := ContainerFor(np.Node, r.Topology)
	c.Template, c.SSH = np.Template, sys
	node := context.WithoutCancel(ctx) // a container half made is worse than one made
	st.Progress(ctx, 1, 3, "create the container")
	pctx, cancel := context.WithTimeout(node, r.Config.CopyTimeout)
	ens, err := r.Proxmox.EnsureContainer(pctx, c)
	cancel()
	if err != nil {
		return fail("create the container", err)
	}
	nr.Activation = ens.Duration
	if err := r.secretsAfterStart(node, np.Node); err != nil {
		return fail("secrets", err)
	}
	st.Progress(ctx, 2, 3, "health gate")
	gateStart := r.now()
	err = r.gate(node, np.Node, np.Target, members) // one more member: itself
	nr.Rejoin = r.now().Sub(gateStart)
	if err != nil {
		r.recordFailure(node, plan, np, Generation{}, err.Error(), log)
		return fail("health gate", err)
	}
	st.Progress(ctx, 3, 3, "record")
	if nr.Generation, err = r.recordRunning(node, plan, np, sys, log); err != nil {
		return fail("record", err)
	}
	nr.Status = StatusSuccess
	log.Info("node provisioned", "vmid", c.VMID, "generation", nr.Generation, "rejoin", nr.Rejoin.Round(time.Millisecond))
	return nr
}

// recordRunning records that a node made from its template runs np's target, at the generation its
// profile lists for it.
func (r *Rollout) recordRunning(ctx context.Context, plan *Plan, np NodePlan, sys System, log *slog.Logger) (int, error) {
	gctx, cancel := context.WithTimeout(ctx, r.Config.ActivationTimeout)
	gens, err := sys.Generations(gctx)
	cancel()
	if err != nil {
		return 0, fmt.Errorf("list generations: %w", err)
	}
	gen := runningGeneration(Observation{Current: np.Target, Generations: gens}).Number
	return gen, r.recordAt(ctx, plan, np, gen, log)
}

// secretsAfterStart installs the node's secrets in a container that has just started from its
// template (which has none: they never enter the template's Nix store), then restarts its NATS server,
// which could not start without them. Without secrets to install it does nothing.
func (r *Rollout) secretsAfterStart(ctx context.Context, node string) error {
	if r.Secrets == nil {
		return nil
	}
	sys := r.Systems[node]
	ctx, cancel := context.WithTimeout(ctx, r.Config.ActivationTimeout)
	defer cancel()
	if err := r.Secrets.Install(ctx, node, sys); err != nil {
		return fmt.Errorf("install secrets: %w", err)
	}
	rs, ok := sys.(ServiceRestarter)
	if !ok {
		return nil
	}
	if err := rs.RestartService(ctx, NATSUnit); err != nil {
		return fmt.Errorf("restart %s with its secrets: %w", NATSUnit, err)
	}
	return nil
}

// revertAll switches the nodes this rollout switched back to the generations they ran, the last one
// first, each behind its own dead-man timer and gate. The run's cancellation does not stop it.
func (r *Rollout) revertAll(ctx context.Context, plan *Plan, switched []NodeResult, members int, log *slog.Logger) []NodeResult {
	ctx = context.WithoutCancel(ctx)
	var out []NodeResult
	for i := len(switched) - 1; i >= 0; i-- {
		done := switched[i]
		np := NodePlan{Node: done.Node, Action: ActionSwitch, Current: done.To, CurrentGeneration: done.Generation,
			Target: done.From, TargetGeneration: done.FromGeneration, Mode: done.Mode} // a test activation reverts as one (mode.go)
		for _, p := range plan.Nodes {
			if p.Node == done.Node {
				np.TargetCommit = p.CurrentCommit
			}
		}
		nlog := log.With("node", done.Node, "revert", true)
		nlog.Info("reverting (--revert-all)", "to_generation", done.FromGeneration)
		nr := r.switchNode(ctx, plan, np, switchIDs(plan.RunID, done.Node, "revert"), members-1, discardStep{}, nlog)
		out = append(out, nr)
	}
	return out
}

// gate waits until node is healthy and clustered with peers others, and a new SSH connection finds
// it running toplevel; up to the gate timeout. It probes at once, then after pauses that back off
// (poll); when the cluster can watch the node (Watcher), every change the node's server announces (a
// route formed) probes again at once and starts the pauses over.
func (r *Rollout) gate(ctx context.Context, node, toplevel string, peers int) error {
	sys := r.Systems[node]
	var changes <-chan struct{}
	if w, ok := r.Cluster.(Watcher); ok && topology.RunsNATS(placeNode(r.Topology, node).role) {
		var stop func()
		changes, stop = w.Watch(ctx, node)
		defer stop()
	}
	// The new SSH connection needs nothing from NATS: it is opened beside the first health probes, so
	// its set-up does not come on top of the time the node takes to turn healthy. It is probed again
	// only if that first probe failed.
	probed := make(chan error, 1) // buffered: the prober never blocks, even when the gate gave up
	go func() { probed <- probe(ctx, sys, toplevel) }()
	pending, probeErr := true, error(nil)
	err := r.poll(ctx, r.Config.GateTimeout, changes, func(ctx context.Context) error {
		if err := r.health(ctx, node, peers); err != nil {
			return fmt.Errorf("nats: %w", err)
		}
		if pending {
			select {
			case probeErr = <-probed:
				pending = false
			case <-ctx.Done():
				return fmt.Errorf("new ssh connection: %w", ctx.Err())
			}
		} else if probeErr != nil {
			probeErr = probe(ctx, sys, toplevel)
		}
		return probeErr
	})
	if err != nil {
		return fmt.Errorf("not healthy within %s (CIMDEPLOY_ROLLOUT_GATE_TIMEOUT): %w", r.Config.GateTimeout, err)
	}
	return nil
}

// probe opens a new SSH connection to the node and checks it runs toplevel.
func probe(ctx context.Context, sys System, toplevel string) error {
	cur, err := sys.Probe(ctx)
	if err != nil {
		return fmt.Errorf("new ssh connection: %w", err)
	}
	if cur != toplevel {
		return fmt.Errorf("it runs %s, want %s", cur, toplevel)
	}
	return nil
}

// The pauses between a gate's probes back off in proportion to the wait: each is PauseFraction of
// the time since the probes started (the activation's result, or the last change the node's server
// announced), at least FirstPause and at most the gate poll setting. So the gate's lag behind a
// node turning healthy is at most about an eighth of the time the node took (plus one probe), the
// probes are dense only while the node's change is fresh (8 in the first 40 ms, then about one per
// 12% more waited: some 40 in the first 2 s), and a node that takes long is probed every GatePoll,
// as with a fixed poll. A node turns healthy 0.05-0.8 s after its activation on the lab.
const (
	FirstPause    = 5 * time.Millisecond
	PauseFraction = 8
)

// pauses says the pause before each next probe (see FirstPause); reset starts over.
type pauses struct {
	start time.Time
	most  time.Duration
}

func newPauses(now time.Time, most time.Duration) *pauses {
	if most <= 0 {
		most = time.Second
	}
	return &pauses{start: now, most: most}
}

func (p *pauses) pause(now time.Time) time.Duration {
	return min(max(now.Sub(p.start)/PauseFraction, FirstPause), p.most)
}

func (p *pauses) reset(now time.Time) { p.start = now }

// poll calls check until it succeeds or timeout passes, pausing as pauses says between calls (up to
// the gate poll setting); a receive on changes (nil: none) ends the pause at once and starts the
// pauses over. The error is the last check's.
func (r *Rollout) poll(ctx context.Context, timeout time.Duration, changes <-chan struct{}, check func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	ps := newPauses(time.Now(), r.Config.GatePoll)
	timer := time.NewTimer(time.Hour)
	timer.Stop() // set by each pause below
	defer timer.Stop()
	var last error
	for {
		err := check(ctx)
		if err == nil {
			return nil
		}
		if last == nil || ctx.Err() == nil { // not the deadline cutting a check short
			last = err
		}
		timer.Reset(ps.pause(time.Now()))
		select {
		case <-ctx.Done():
			return last
		case <-timer.C:
		case <-changes:
			ps.reset(time.Now())
		}
	}
}

// recordAt records that node runs np's target at generation gen, clearing an earlier failure.
func (r *Rollout) recordAt(ctx context.Context, plan *Plan, np NodePlan, gen int, log *slog.Logger) error {
	return r.update(ctx, np.Node, log, func(st *NodeState) bool {
		if st.Toplevel == np.Target && st.Generation == gen && st.FailedCommit == "" && (np.TargetCommit == "" || st.Commit == np.TargetCommit) {
			return false
		}
		commit := np.TargetCommit
		if commit == "" && st.Toplevel == np.Target {
			commit = st.Commit
		}
		*st = NodeState{Node: np.Node, Commit: commit, Toplevel: np.Target, Generation: gen,
			Deployed: r.now().UTC(), RunID: plan.RunID}
		return true
	})
}

// recordFailure records that np's commit failed on the node, which runs back again (a node without a
// record gets back as its deployed state, so that its guard works from now on).
func (r *Rollout) recordFailure(ctx context.Context, plan *Plan, np NodePlan, back Generation, reason string, log *slog.Logger) {
	_ = r.update(ctx, np.Node, log, func(st *NodeState) bool {
		if st.Toplevel == "" && back.Toplevel != "" {
			st.Toplevel, st.Generation, st.Commit, st.RunID, st.Deployed = back.Toplevel, back.Number, np.CurrentCommit, plan.RunID, r.now().UTC()
		}
		st.FailedCommit, st.FailedToplevel, st.FailedAt, st.FailedRunID, st.FailedReason =
			np.TargetCommit, np.Target, r.now().UTC(), plan.RunID, reason
		if st.Test != nil && back.Toplevel != st.Test.Toplevel { // the test activation is over (mode.go)
			st.Test = nil
		}
		return true
	})
}

// update is a read-modify-write of a node's state; change returns false when nothing is to be written.
func (r *Rollout) update(ctx context.Context, node string, log *slog.Logger, change func(*NodeState) bool) error {
	if r.States == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, r.Config.ActivationTimeout)
	defer cancel()
	var err error
	for range 5 {
		var st NodeState
		var rev uint64
		if st, rev, err = ReadState(ctx, r.States, node); err != nil {
			break
		}
		st.Node = node
		if !change(&st) {
			return nil
		}
		if _, err = WriteState(ctx, r.States, st, rev); !isConflict(err) {
			break
		}
	}
	if err != nil {
		log.Error("cannot record the node's state", "err", err)
		return fmt.Errorf("record the state of %s: %w", node, err)
	}
	return nil
}

func nodeNames(nps []NodePlan) []string {
	names := make([]string, len(nps))
	for i, np := range nps {
		names[i] = np.Node
	}
	return names
}

func writeLines(st Step, lines []string) {
	w := st.Output()
	for _, l := range lines {
		fmt.Fprintln(w, l)
	}
}

// discardStep is the step of work no tracker shows (the reverts of --revert-all, logged instead).
type discardStep struct{}

func (discardStep) Progress(context.Context, int, int, string) {}
func (discardStep) Note(string, ...any)                        {}
func (discardStep) Output() io.Writer                          { return io.Discard }
