package rollout_test

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/cimdeploy/cimdeploy/gitops/topology"
	"github.com/cimdeploy/cimdeploy/rollout"
)

// fleet says a fleet of several NATS clusters: members per cluster, leaves per hub, storage nodes,
// and the max_unavailable of the leaf and storage roles (0: the default, 1).
type fleet struct {
	clusters   []string
	members    int
	leaves     int
	storage    int
	leafMax    int
	storageMax int
}

// topology is the fleet as the fold makes it: <cluster>-1.. members, leaf-<hub>-1.. leaves,
// storage-1.. storage nodes, on 10.0.0.0/16.
func (f fleet) topology() *topology.Topology {
	t := testTopology(0)
	t.Network.CIDR = netip.MustParsePrefix("10.0.0.0/16")
	t.Roles = map[string]topology.Role{
		topology.RoleNATSLeaf: {Name: topology.RoleNATSLeaf, MaxUnavailable: f.leafMax},
		topology.RoleStorage:  {Name: topology.RoleStorage, MaxUnavailable: f.storageMax},
	}
	i := 0
	add := func(name, role, cluster string) {
		i++
		t.Nodes[name] = topology.Node{Interface: "eth0", Address: netip.AddrFrom4([4]byte{10, 0, byte(i / 200), byte(10 + i%200)}),
			PrefixLength: 16, System: "x86_64-linux", StateVersion: "25.05", Role: role, Cluster: cluster,
			Proxmox: topology.Proxmox{Host: "pve", VMID: 200 + i, Cores: 1, MemoryMiB: 512, Storage: "local-lvm", Bridge: "vmbr0",
				Unprivileged: true, Features: []string{"nesting=1"}}}
	}
	for _, c := range f.clusters {
		for m := 1; m <= f.members; m++ {
			add(fmt.Sprintf("%s-%d", c, m), topology.RoleNATSCluster, c)
		}
		for l := 1; l <= f.leaves; l++ {
			add(fmt.Sprintf("leaf-%s-%d", c, l), topology.RoleNATSLeaf, c)
		}
	}
	for s := 1; s <= f.storage; s++ {
		add(fmt.Sprintf("storage-%d", s), topology.RoleStorage, "")
	}
	return t
}

// fleetPlan plans commit b for every node of top (those in skip already run it), every node healthy
// and at commit a, the first member of each cluster its meta leader.
func fleetPlan(top *topology.Topology, maxParallel int, skip ...string) *rollout.Plan {
	var obs []rollout.Observation
	var targets []rollout.Target
	leaders := map[string]string{}
	for _, n := range top.NodeNames() {
		cur := built(n, "a")
		if slices.Contains(skip, n) {
			cur = built(n, "b")
		}
		obs = append(obs, rollout.Observation{Node: n, Reachable: true, Healthy: true, Current: cur,
			Generations: []rollout.Generation{{Number: 1, Toplevel: cur, Current: true}}})
		targets = append(targets, rollout.Target{Node: n, Toplevel: built(n, "b"), Commit: "b"})
		if node := top.Nodes[n]; node.Role == topology.RoleNATSCluster && leaders[node.Cluster] == "" {
			leaders[node.Cluster] = n
		}
	}
	return rollout.NewPlan(rollout.PlanInput{RunID: "r", Commit: "b", Targets: targets, Observed: obs, Topology: top,
		Leaders: leaders, MaxParallel: maxParallel, Now: time.Unix(0, 0)})
}

// waveNodes are the plan's waves as node lists, a group's batch after the other.
func waveNodes(p *rollout.Plan) [][]string {
	var out [][]string
	for _, w := range p.Waves {
		var nodes []string
		for _, s := range w.Steps {
			nodes = append(nodes, s.Nodes...)
		}
		out = append(out, nodes)
	}
	return out
}

func group(p *rollout.Plan, name string) rollout.Group {
	for _, g := range p.Groups {
		if g.Name == name {
			return g
		}
	}
	return rollout.Group{}
}

// waveOf is the number of the wave node is in (0: none).
func waveOf(p *rollout.Plan, node string) int {
	for _, w := range p.Waves {
		for _, s := range w.Steps {
			if slices.Contains(s.Nodes, node) {
				return w.Number
			}
		}
	}
	return 0
}

func TestWavesPlan(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name        string
		fleet       fleet
		maxParallel int
		skip        []string
		check       func(t *testing.T, p *rollout.Plan)
	}{
		{
			name:  "one cluster: today's order, one node a wave",
			fleet: fleet{clusters: []string{"east"}, members: 3},
			check: func(t *testing.T, p *rollout.Plan) {
				want := [][]string{{"east-2"}, {"east-3"}, {"east-1"}}
				if got := waveNodes(p); !slices.EqualFunc(got, want, slices.Equal) {
					t.Errorf("waves %v, want %v", got, want)
				}
				if g := group(p, "cluster east"); !slices.Equal(g.Nodes(), []string{"east-2", "east-3", "east-1"}) || g.Leader != "east-1" {
					t.Errorf("group %+v", g)
				}
			},
		},
		{
			name:  "three clusters side by side, each leader last",
			fleet: fleet{clusters: []string{"east", "north", "west"}, members: 3},
			check: func(t *testing.T, p *rollout.Plan) {
				want := [][]string{{"east-2", "north-2", "west-2"}, {"east-3", "north-3", "west-3"}, {"east-1", "north-1", "west-1"}}
				if got := waveNodes(p); !slices.EqualFunc(got, want, slices.Equal) {
					t.Errorf("waves %v, want %v", got, want)
				}
				for _, c := range []string{"east", "north", "west"} {
					g := group(p, "cluster "+c)
					if nodes := g.Nodes(); g.Leader != c+"-1" || nodes[len(nodes)-1] != g.Leader || g.Batch != 1 || len(g.Members) != 3 {
						t.Errorf("group %+v: want one member at a time, leader %s-1 last", g, c)
					}
				}
			},
		},
		{
			name:  "leaves after their hub when both change",
			fleet: fleet{clusters: []string{"east"}, members: 3, leaves: 4, leafMax: 2},
			check: func(t *testing.T, p *rollout.Plan) {
				g := group(p, "leaves of east")
				if !slices.Equal(g.After, []string{"cluster east"}) {
					t.Errorf("leaves after %v, want the hub cluster", g.After)
				}
				want := [][]string{{"east-2"}, {"east-3"}, {"east-1"}, {"leaf-east-1", "leaf-east-2"}, {"leaf-east-3", "leaf-east-4"}}
				if got := waveNodes(p); !slices.EqualFunc(got, want, slices.Equal) {
					t.Errorf("waves %v, want %v", got, want)
				}
			},
		},
		{
			name:  "leaves of a hub without changes go at once",
			fleet: fleet{clusters: []string{"east"}, members: 3, leaves: 2, leafMax: 2},
			skip:  []string{"east-1", "east-2", "east-3"},
			check: func(t *testing.T, p *rollout.Plan) {
				if g := group(p, "leaves of east"); len(g.After) != 0 {
					t.Errorf("leaves after %v, want no dependency: the hub does not change", g.After)
				}
				want := [][]string{{"leaf-east-1", "leaf-east-2"}}
				if got := waveNodes(p); !slices.EqualFunc(got, want, slices.Equal) {
					t.Errorf("waves %v, want %v", got, want)
				}
			},
		},
		{
			name:  "a hub with changes and leaves without: no dependency, no leaf wave",
			fleet: fleet{clusters: []string{"east"}, members: 1, leaves: 2},
			skip:  []string{"leaf-east-1", "leaf-east-2"},
			check: func(t *testing.T, p *rollout.Plan) {
				if g := group(p, "leaves of east"); len(g.After) != 0 || len(g.Batches) != 2 {
					t.Errorf("leaves %+v: want no dependency, the nodes still in batches (skipped)", g)
				}
				if got := waveNodes(p); !slices.EqualFunc(got, [][]string{{"east-1"}}, slices.Equal) {
					t.Errorf("waves %v", got)
				}
			},
		},
		{
			name:        "max_unavailable bounds the batches of a role",
			fleet:       fleet{clusters: []string{"east"}, members: 1, leaves: 7, leafMax: 3, storage: 3},
			maxParallel: 4,
			check: func(t *testing.T, p *rollout.Plan) {
				if g := group(p, "leaves of east"); g.Batch != 3 || len(g.Batches) != 3 || len(g.Batches[2]) != 1 {
					t.Errorf("leaves %+v: want batches of 3 (max_unavailable)", g)
				}
				if g := group(p, "role storage"); g.Batch != 1 || len(g.Batches) != 3 || len(g.After) != 0 {
					t.Errorf("storage %+v: want one at a time (max_unavailable unset), independent", g)
				}
				if waveOf(p, "storage-1") != 1 {
					t.Errorf("storage-1 in wave %d, want 1: nothing to wait for", waveOf(p, "storage-1"))
				}
			},
		},
		{
			name:        "max-parallel bounds batches and waves",
			fleet:       fleet{clusters: []string{"east", "west"}, members: 3, leaves: 7, leafMax: 5, storage: 2, storageMax: 2},
			maxParallel: 2,
			check: func(t *testing.T, p *rollout.Plan) {
				if g := group(p, "leaves of east"); g.Batch != 2 || len(g.Batches) != 4 {
					t.Errorf("leaves %+v: want batches of 2 (max-parallel under max_unavailable 5)", g)
				}
				seen := map[string]bool{}
				for _, w := range waveNodes(p) {
					if len(w) > 2 {
						t.Errorf("a wave of %d nodes %v: want at most 2", len(w), w)
					}
					for _, n := range w {
						seen[n] = true
					}
				}
				if len(seen) != 2*3+2*7+2 {
					t.Errorf("the waves hold %d nodes, want every node that changes", len(seen))
				}
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := fleetPlan(tc.fleet.topology(), tc.maxParallel, tc.skip...)
			t.Logf("groups %+v\nwaves %v", p.Groups, waveNodes(p))
			tc.check(t, p)
			for _, g := range p.Groups { // every group: its nodes in batches no bigger than Batch
				for _, b := range g.Batches {
					if len(b) > g.Batch {
						t.Errorf("%s: batch %v is bigger than %d", g.Name, b, g.Batch)
					}
				}
			}
		})
	}
}

// TestWavesPlanWithoutRolesIsTodays plans a cluster without roles (every node a member, as before
// roles) with and without the topology: the same order, one group, a node a wave.
func TestWavesPlanWithoutRolesIsTodays(t *testing.T) {
	t.Parallel()
	top := testTopology(5)
	var obs []rollout.Observation
	var targets []rollout.Target
	for _, n := range top.NodeNames() {
		obs = append(obs, rollout.Observation{Node: n, Reachable: true, Healthy: true, Current: built(n, "a"),
			Generations: []rollout.Generation{{Number: 1, Toplevel: built(n, "a"), Current: true}}})
		targets = append(targets, rollout.Target{Node: n, Toplevel: built(n, "b"), Commit: "b"})
	}
	obs[4] = rollout.Observation{Node: "nats-5", Container: "missing"}
	targets[4].Template = "local:vztmpl/nats-5.tar.xz"
	in := rollout.PlanInput{RunID: "r", Commit: "b", Targets: targets, Observed: obs, Leader: "nats-2"}
	today := rollout.NewPlan(in)
	in.Topology, in.Leaders = top, map[string]string{"test": "nats-2"}
	with := rollout.NewPlan(in)
	want := []string{"nats-5", "nats-1", "nats-3", "nats-4", "nats-2"}
	for _, p := range []*rollout.Plan{today, with} {
		var order []string
		for _, np := range p.Nodes {
			order = append(order, np.Node)
		}
		if !slices.Equal(order, want) || len(p.Groups) != 1 || !slices.Equal(p.Groups[0].Nodes(), want) || len(p.Waves) != 5 {
			t.Errorf("order %v, groups %+v, %d waves; want %v in one group, a node a wave", order, p.Groups, len(p.Waves), want)
		}
	}
}
