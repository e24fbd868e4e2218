package rollout

import (
	"cmp"
	"slices"

	"github.com/cimdeploy/cimdeploy/gitops/topology"
)

// GroupKind says how the nodes of a group go.
type GroupKind string

// The kinds of group.
const (
	// GroupCluster is the members of one NATS cluster: one at a time (the JetStream meta group and
	// the R3 streams keep their quorum), new nodes first, the meta leader last, the cluster settled
	// between two nodes.
	GroupCluster GroupKind = "cluster"
	// GroupLeaves is the leaf nodes of one hub cluster, a batch at a time.
	GroupLeaves GroupKind = "leaves"
	// GroupRole is the nodes of a role without NATS (storage, a repository role), a batch at a time.
	GroupRole GroupKind = "role"
)

// DefaultMaxParallel is how many nodes a rollout switches at once when nothing says otherwise.
const DefaultMaxParallel = 4

// MaxMaxParallel bounds --max-parallel.
const MaxMaxParallel = 256

// Group is a part of the rollout whose nodes go in sequence, a batch at a time; different groups go
// side by side, a group after the groups it depends on (After).
type Group struct {
	// Name is the group's name in plans, results and messages: "cluster east", "leaves of east",
	// "role storage".
	Name string    `json:"name"`
	Kind GroupKind `json:"kind"`
	// Cluster is the NATS cluster of a cluster group, the hub cluster of a leaves group.
	Cluster string `json:"cluster,omitempty"`
	Role    string `json:"role"`
	// Leader is a cluster group's JetStream meta leader, the group's last node when it is a target.
	Leader string `json:"leader,omitempty"`
	// Members are the nodes of a cluster group's cluster that run before the rollout: its gates expect
	// a node clustered with all the others (and with those provisioned on the way).
	Members []string `json:"members,omitempty"`
	// Batch is how many of its nodes go at once: 1 for a cluster, else the smaller of the role's
	// max_unavailable and --max-parallel.
	Batch int `json:"batch"`
	// Batches are the group's nodes in order, each batch switched at once; the nodes that change come
	// first, those already at their target (skipped at once) after them.
	Batches [][]string `json:"batches"`
	// After are the groups that must finish first: a hub cluster before its leaves when both change.
	After []string `json:"after,omitempty"`
}

// Nodes are the group's nodes in order.
func (g Group) Nodes() []string { return slices.Concat(g.Batches...) }

// Wave is a numbered step of the rollout: the batches of independent groups that go together. Waves
// show the shape of a rollout (what goes side by side, what waits); Run itself does not wait for a
// whole wave, it starts each group's next batch as soon as the group's previous batch is done.
type Wave struct {
	Number int        `json:"number"`
	Steps  []WaveStep `json:"steps"`
}

// WaveStep is one group's batch in a wave.
type WaveStep struct {
	Group string   `json:"group"`
	Nodes []string `json:"nodes"`
}

// placement is where a node goes: its role and the cluster that decides its group.
type placement struct {
	role, cluster string
}

// placeNode is node's role and cluster from the topology; a node without a role (or one the topology
// does not know) is a member of the NATS service's cluster, as it is today.
func placeNode(top *topology.Topology, node string) placement {
	var n topology.Node
	ok := false
	if top != nil {
		if n, ok = top.Nodes[node]; !ok {
			n, ok = top.Removed[node]
		}
	}
	p := placement{role: cmp.Or(n.Role, topology.RoleNATSCluster), cluster: n.Cluster}
	if !ok {
		p.role = topology.RoleNATSCluster
	}
	if p.role == topology.RoleNATSCluster && p.cluster == "" && top != nil && top.Services.NATS != nil {
		p.cluster = top.Services.NATS.Cluster.Name
	}
	return p
}

// groupName names the group a node of p belongs to.
func groupName(p placement) (string, GroupKind) {
	switch p.role {
	case topology.RoleNATSCluster:
		if p.cluster == "" {
			return "cluster", GroupCluster
		}
		return "cluster " + p.cluster, GroupCluster
	case topology.RoleNATSLeaf:
		return "leaves of " + p.cluster, GroupLeaves
	}
	return "role " + p.role, GroupRole
}

// changes reports whether the node's step does something (every action but skip).
func changes(np NodePlan) bool { return np.Action != ActionSkip }

// planWaves groups the plan's nodes (in their order: new nodes first, the meta leader last) and
// computes the waves; it is pure. Each NATS cluster is a group of single nodes; the leaves of a hub
// and the nodes of each other role are groups of batches (the role's max_unavailable, at most
// maxParallel); a hub's leaves come after the hub cluster when both change. The waves start every
// group's next batch as soon as its previous one and the groups it depends on are done, with at most
// maxParallel nodes in a wave.
func planWaves(p *Plan, top *topology.Topology, leaders map[string]string, maxParallel int) {
	if maxParallel <= 0 {
		maxParallel = DefaultMaxParallel
	}
	p.MaxParallel = maxParallel
	byName := map[string]*Group{}
	var order []string
	nodes := map[string][]NodePlan{}
	for _, np := range p.Nodes {
		pl := placeNode(top, np.Node)
		name, kind := groupName(pl)
		g, ok := byName[name]
		if !ok {
			g = &Group{Name: name, Kind: kind, Cluster: pl.cluster, Role: pl.role, Batch: 1}
			if kind == GroupCluster {
				g.Leader = leaders[pl.cluster]
				if len(leaders) == 0 {
					g.Leader = p.Leader
				}
			} else {
				g.Batch = min(maxParallel, top.MaxUnavailable(pl.role))
			}
			byName[name] = g
			order = append(order, name)
		}
		nodes[name] = append(nodes[name], np)
	}
	for _, m := range p.Members {
		pl := placeNode(top, m)
		if name, kind := groupName(pl); kind == GroupCluster && byName[name] != nil {
			byName[name].Members = append(byName[name].Members, m)
		}
	}
	slices.SortStableFunc(order, func(a, b string) int {
		return cmp.Or(cmp.Compare(kindRank(byName[a].Kind), kindRank(byName[b].Kind)), cmp.Compare(a, b))
	})
	changed := map[string]bool{}
	for _, name := range order {
		g := byName[name]
		nps := nodes[name]
		if g.Kind != GroupCluster { // the nodes that change first, in batches; those at their target last
			slices.SortStableFunc(nps, func(a, b NodePlan) int { return cmp.Compare(btoi(!changes(a)), btoi(!changes(b))) })
		}
		for i := 0; i < len(nps); i += g.Batch {
			batch := nodeNames(nps[i:min(i+g.Batch, len(nps))])
			g.Batches = append(g.Batches, batch)
		}
		changed[name] = slices.ContainsFunc(nps, changes)
	}
	for _, name := range order {
		g := byName[name]
		if hub := "cluster " + g.Cluster; g.Kind == GroupLeaves && changed[name] && changed[hub] {
			g.After = append(g.After, hub)
		}
		p.Groups = append(p.Groups, *g)
	}
	p.Waves = waves(p.Groups, p.Nodes, maxParallel)
}

func kindRank(k GroupKind) int {
	switch k {
	case GroupCluster:
		return 0
	case GroupLeaves:
		return 1
	}
	return 2
}

// waves schedules the groups' batches of nodes that change, wave by wave: a group goes once the
// groups it depends on finished in an earlier wave, and a wave takes groups in order while it holds
// at most maxParallel nodes (a batch alone is never more).
func waves(groups []Group, nps []NodePlan, maxParallel int) []Wave {
	changing := map[string]bool{}
	for _, np := range nps {
		changing[np.Node] = changes(np)
	}
	pending := make([][][]string, len(groups)) // per group, its batches of nodes that change
	for i, g := range groups {
		for _, b := range g.Batches {
			var keep []string
			for _, n := range b {
				if changing[n] {
					keep = append(keep, n)
				}
			}
			if len(keep) > 0 {
				pending[i] = append(pending[i], keep)
			}
		}
	}
	finished := map[string]int{} // group -> the wave of its last batch (0: still going)
	for i, g := range groups {
		if len(pending[i]) == 0 {
			finished[g.Name] = -1
		}
	}
	var out []Wave
	for n := 1; len(finished) < len(groups); n++ {
		w := Wave{Number: n}
		room := maxParallel
		for i, g := range groups {
			if len(pending[i]) == 0 {
				continue
			}
			ready := true
			for _, dep := range g.After {
				if f, ok := finished[dep]; !ok || f == n {
					ready = false
				}
			}
			batch := pending[i][0]
			if !ready || (len(batch) > room && room < maxParallel) {
				continue
			}
			w.Steps = append(w.Steps, WaveStep{Group: g.Name, Nodes: batch})
			room -= len(batch)
			if pending[i] = pending[i][1:]; len(pending[i]) == 0 {
				finished[g.Name] = n
			}
		}
		if len(w.Steps) == 0 { // a dependency no group finishes: none is made that way
			break
		}
		out = append(out, w)
	}
	return out
}
