package rollout

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/cimdeploy/cimdeploy/gitops/topology"
	"github.com/cimdeploy/cimdeploy/remote"
)

// Action is what the rollout does to a node.
type Action string

// The actions.
const (
	// ActionSwitch: copy the closure, arm the dead-man timer, set the profile (or switch to an
	// existing generation), activate, gate, disarm.
	ActionSwitch Action = "switch"
	// ActionProvision: the node has no container yet; create it from the node's template, then gate.
	ActionProvision Action = "provision"
	// ActionSkip: the node already runs the target.
	ActionSkip Action = "skip"
	// ActionRefuse: the node must not be touched (switched by hand, the commit failed there before,
	// unreachable); the rollout refuses to start unless forced.
	ActionRefuse Action = "refuse"
)

// Target is what a node should run after the rollout.
type Target struct {
	Node string `json:"node"`
	// Toplevel is the system; with Generation 0 it becomes a new generation of the profile.
	Toplevel string `json:"toplevel"`
	// Generation, when not 0, is the existing generation holding Toplevel to switch to (a rollback).
	Generation int `json:"generation,omitempty"`
	// Commit is the commit Toplevel was built from.
	Commit string `json:"commit,omitempty"`
	// Template is the node's LXC template on Proxmox (local:vztmpl/...), to create a missing container.
	Template string `json:"template,omitempty"`
}

// Observation is what the rollout found on a node before planning.
type Observation struct {
	Node      string `json:"node"`
	Reachable bool   `json:"reachable"`
	// Problem is why the node is unreachable or unhealthy ("" when it is neither).
	Problem     string       `json:"problem,omitempty"`
	Healthy     bool         `json:"healthy"`
	Current     string       `json:"current,omitempty"`
	Generations []Generation `json:"generations,omitempty"`
	Container   string       `json:"container,omitempty"` // remote.ContainerState of an unreachable node
	Record      NodeState    `json:"record"`
	// Removed marks a node the events removed that the cluster still has (remove.go); Reachable then
	// says its NATS server answers, and Container is asked of Proxmox in any case.
	Removed bool `json:"removed,omitempty"`
	VMID    int  `json:"vmid,omitempty"`
	// Streams are the streams on a removed node's server (StreamsErr: why they are unknown).
	Streams    []StreamCopy `json:"streams,omitempty"`
	StreamsErr string       `json:"streams_error,omitempty"`
}

// NodePlan is one node's part of a Plan.
// precopied is the outcome of a closure copy made ahead of a node's switch.
type precopied struct {
	copied remote.Copied
	err    error
}

type NodePlan struct {
	// precopy delivers the closure copy Run started for this node beside the rolling loop; nil when
	// none was started.
	precopy <-chan precopied
	Node    string `json:"node"`
	Action  Action `json:"action"`
	Reason  string `json:"reason,omitempty"`
	Leader  bool   `json:"leader,omitempty"`

	Current           string `json:"current,omitempty"`
	CurrentGeneration int    `json:"current_generation,omitempty"`
	CurrentCommit     string `json:"current_commit,omitempty"`
	// Recorded is the system cimdeploy last deployed on the node ("" when none).
	Recorded string `json:"recorded,omitempty"`

	Target           string `json:"target"`
	TargetGeneration int    `json:"target_generation,omitempty"`
	TargetCommit     string `json:"target_commit,omitempty"`
	Template         string `json:"template,omitempty"`

	// Diff is the closure diff from Current to Target (nix store diff-closures), when known.
	Diff string `json:"diff,omitempty"`

	// Mode is how a switch activates the target (mode.go), "" for switch; Inhibitors are the switch inhibitors
	// that differ between Current and Target, which make a switch a boot. Testing: Current is a
	// test activation, no generation of the profile.
	Mode       Mode              `json:"mode,omitempty"`
	Inhibitors []InhibitorChange `json:"inhibitors,omitempty"`
	Testing    bool              `json:"testing,omitempty"`
}

// Plan is a rollout as data: the nodes in the order they will be switched (new nodes first, then the
// followers, the JetStream meta leader last), what happens to each and why, and what pre-flight found.
type Plan struct {
	RunID  string `json:"run_id"`
	Commit string `json:"commit,omitempty"`
	Leader string `json:"leader,omitempty"`
	// Members are the nodes of the cluster that run before the rollout: every gate expects a node
	// clustered with all the others (and with those provisioned on the way).
	Members []string   `json:"members"`
	Nodes   []NodePlan `json:"nodes"`
	// Problems are what make the rollout refuse to start: unhealthy or unreachable nodes, refusals.
	Problems []string `json:"problems,omitempty"`
	// Force starts the rollout despite Problems and switches refused nodes that can be reached.
	Force bool `json:"force,omitempty"`
	// RevertAll reverts the nodes this rollout switched when a later node fails.
	RevertAll bool      `json:"revert_all,omitempty"`
	Created   time.Time `json:"created"`
	// Removals are the nodes the events removed that the cluster still has, taken out after the
	// switches (remove.go).
	Removals []Removal `json:"removals,omitempty"`
	// DestroyRemoved destroys the containers of the removed nodes too.
	DestroyRemoved bool `json:"destroy_removed,omitempty"`
	// KeepData keeps the JetStream data of the nodes it recreates (recreate.go).
	KeepData bool `json:"keep_data,omitempty"`
	// Groups are the nodes grouped by how they go (waves.go): each NATS cluster one at a time, the
	// leaves of a hub and the nodes of other roles in batches; Waves show what goes side by side.
	// MaxParallel bounds the nodes switched at once.
	Groups      []Group `json:"groups,omitempty"`
	Waves       []Wave  `json:"waves,omitempty"`
	MaxParallel int     `json:"max_parallel,omitempty"`
	// Mode is the activation mode asked for, when not switch (mode.go).
	Mode Mode `json:"mode,omitempty"`
}

// PlanInput is what NewPlan plans from.
type PlanInput struct {
	RunID, Commit string
	Targets       []Target
	// Observed are all nodes of the cluster, targets or not.
	Observed  []Observation
	Leader    string
	Force     bool
	RevertAll bool
	Now       time.Time
	// DestroyRemoved destroys the containers of removed nodes; RemoveProblem, when not "", is why
	// no node can be taken out of the JetStream meta group (no system account).
	DestroyRemoved bool
	RemoveProblem  string
	// Recreate recreates every target's container from its template, keeping its JetStream data with
	// KeepData, wiping it otherwise (recreate.go).
	Recreate, KeepData bool
	// Topology gives each node its role and NATS cluster, which group it in the waves (waves.go); nil:
	// every node is a member of one cluster. Leaders are the JetStream meta leaders by cluster (nil:
	// Leader is the one cluster's). MaxParallel bounds the nodes switched at once (0:
	// DefaultMaxParallel).
	Topology    *topology.Topology
	Leaders     map[string]string
	MaxParallel int
	// Mode is the activation mode (mode.go); Inhibitors the switch inhibitor changes per node
	// (Rollout.observeInhibitors); RebootProblem, when not "", why no container can be restarted.
	Mode          Mode
	Inhibitors    map[string][]InhibitorChange
	RebootProblem string
}

// Refused reports whether the plan must not start.
func (p *Plan) Refused() bool { return len(p.Problems) > 0 && !p.Force }

// Changes counts the nodes the plan would change.
func (p *Plan) Changes() int {
	n := 0
	for _, np := range p.Nodes {
		if np.Action == ActionSwitch || np.Action == ActionProvision || np.Action == ActionRecreate {
			n++
		}
	}
	for _, rm := range p.Removals {
		if rm.Deferred == "" {
			n++
		}
	}
	return n
}

// NewPlan decides, without any I/O, what the rollout does to each target and in which order.
func NewPlan(in PlanInput) *Plan {
	p := &Plan{RunID: in.RunID, Commit: in.Commit, Leader: in.Leader, Force: in.Force, RevertAll: in.RevertAll, Created: in.Now,
		KeepData: in.Recreate && in.KeepData}
	if m := in.Mode.orSwitch(); m != ModeSwitch {
		p.Mode = m
	}
	observed := map[string]Observation{}
	in.Observed = planRemovals(p, in)
	for _, o := range in.Observed {
		observed[o.Node] = o
		if o.Reachable {
			p.Members = append(p.Members, o.Node)
			if !o.Healthy {
				p.Problems = append(p.Problems, fmt.Sprintf("%s is not healthy: %s", o.Node, o.Problem))
			}
		}
	}
	slices.Sort(p.Members)
	targeted := map[string]bool{}
	for _, t := range in.Targets {
		targeted[t.Node] = true
		o, ok := observed[t.Node]
		if !ok {
			o = Observation{Node: t.Node, Problem: "not observed"}
		}
		np := modePlan(recreatePlan(planNode(t, o, in), t, o, in), o, in)
		np.Leader = t.Node == in.Leader
		if l, ok := in.Leaders[placeNode(in.Topology, t.Node).cluster]; ok {
			np.Leader = t.Node == l
		}
		if np.Action == ActionRefuse {
			p.Problems = append(p.Problems, fmt.Sprintf("%s: %s", np.Node, np.Reason))
		}
		p.Nodes = append(p.Nodes, np)
	}
	for _, o := range in.Observed {
		if !o.Reachable && !targeted[o.Node] && o.Container != string(remote.ContainerMissing) {
			p.Problems = append(p.Problems, fmt.Sprintf("%s is unreachable: %s", o.Node, o.Problem))
		}
	}
	slices.SortStableFunc(p.Nodes, func(a, b NodePlan) int {
		return cmp.Or(cmp.Compare(rank(a), rank(b)), strings.Compare(a.Node, b.Node))
	})
	planWaves(p, in.Topology, in.Leaders, in.MaxParallel)
	return p
}

// rank orders the rollout: new nodes first (they join the running cluster), then the followers, the
// meta leader last (one leader election, at the end).
func rank(np NodePlan) int {
	switch {
	case np.Action == ActionProvision:
		return 0
	case np.Leader:
		return 2
	}
	return 1
}

func planNode(t Target, o Observation, in PlanInput) NodePlan {
	cur := CurrentGeneration(o.Generations)
	np := NodePlan{
		Node: t.Node, Current: o.Current, CurrentGeneration: runningGeneration(o).Number,
		CurrentCommit: currentCommit(o), Recorded: o.Record.Toplevel,
		Target: t.Toplevel, TargetGeneration: t.Generation, TargetCommit: cmp.Or(t.Commit, in.Commit), Template: t.Template,
	}
	if np.CurrentGeneration == 0 {
		np.CurrentGeneration = cur.Number
	}
	refuse := func(format string, args ...any) NodePlan {
		np.Action, np.Reason = ActionRefuse, fmt.Sprintf(format, args...)
		return np
	}
	force := func(why string) NodePlan {
		np.Action, np.Reason = ActionSwitch, "forced: "+why
		return np
	}
	switch {
	case !o.Reachable && o.Container == string(remote.ContainerMissing):
		if t.Template == "" {
			return refuse("no container and no template to create it from (the publish stage needs CIMDEPLOY_PROXMOX_HOST)")
		}
		np.Action, np.Reason = ActionProvision, "no container yet: create it from "+t.Template
		return np
	case !o.Reachable:
		why := "unreachable: " + o.Problem
		if o.Container != "" {
			why += " (container " + o.Container + ")"
		}
		return refuse("%s", why)
	case t.Toplevel == "":
		return refuse("no system built for it")
	case o.Current == t.Toplevel && (t.Generation == 0 || cur.Number == t.Generation):
		np.Action, np.Reason = ActionSkip, "already runs the target"
		return np
	case t.Generation > 0 && !hasGeneration(o.Generations, t.Generation, t.Toplevel):
		return refuse("generation %d with %s is not on the node", t.Generation, short(t.Toplevel))
	case runningGeneration(o).Number == 0 && !runsTest(o):
		return refuse("the running system %s is no generation of the profile: nothing to roll back to", short(o.Current))
	case o.Record.Toplevel != "" && o.Current != o.Record.Toplevel && !runsTest(o):
		why := fmt.Sprintf("switched by hand: it runs %s, but cimdeploy last deployed %s (commit %s, run %s)",
			o.Current, o.Record.Toplevel, shortCommit(o.Record.Commit), o.Record.RunID)
		if in.Force {
			return force(why)
		}
		return refuse("%s; --force switches it anyway", why)
	case np.TargetCommit != "" && o.Record.FailedCommit == np.TargetCommit:
		why := fmt.Sprintf("commit %s failed here at %s (run %s: %s) and was rolled back; it is not retried until a newer commit",
			shortCommit(np.TargetCommit), o.Record.FailedAt.Format(time.RFC3339), o.Record.FailedRunID, firstLine(o.Record.FailedReason))
		if in.Force {
			return force(why)
		}
		return refuse("%s; --force retries it", why)
	}
	np.Action = ActionSwitch
	if o.Record.Toplevel == "" {
		np.Reason = "no deployment recorded: adopting the running system as the one to roll back to"
	}
	return np
}

// runningGeneration is the newest generation holding the running system (the one to roll back to).
func runningGeneration(o Observation) Generation {
	var found Generation
	for _, g := range o.Generations {
		if g.Toplevel == o.Current && g.Number > found.Number {
			found = g
		}
	}
	return found
}

func hasGeneration(gens []Generation, n int, toplevel string) bool {
	g, ok := FindGeneration(gens, n)
	return ok && g.Toplevel == toplevel
}

// currentCommit is the commit the running system came from: the deployment record when it is that
// system, else the system's own configuration revision.
func currentCommit(o Observation) string {
	if o.Record.Toplevel != "" && o.Record.Toplevel == o.Current && o.Record.Commit != "" {
		return o.Record.Commit
	}
	return runningGeneration(o).Revision
}

func short(storePath string) string {
	const prefix = "/nix/store/"
	if strings.HasPrefix(storePath, prefix) && len(storePath) > len(prefix)+33 {
		return storePath[len(prefix)+33:]
	}
	return storePath
}

func shortCommit(c string) string {
	if len(c) > 12 {
		return c[:12]
	}
	if c == "" {
		return "unknown"
	}
	return c
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
