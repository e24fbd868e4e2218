package topology

import (
	"regexp"
	"slices"
	"sort"

	"github.com/cimdeploy/cimdeploy/gitops/events"
)

// The built-in roles: what a node is for. The projection generates a built-in role's module
// (nixosModules/<role>.nix); a repository role (RoleDefined with a module) brings its own.
const (
	// RoleNATSCluster is a member of a NATS cluster (Node.Cluster), routed to the other members, with
	// JetStream in the cluster's meta group. A node without a role has this one.
	RoleNATSCluster = "nats-cluster"
	// RoleNATSLeaf is a NATS server attached by leafnode connections to its hub cluster (Node.Cluster).
	RoleNATSLeaf = "nats-leaf"
	// RoleStorage is a storage node: no NATS server, the node exporter when the fleet has one.
	RoleStorage = "storage"
)

// BuiltinRoles are the roles the projection knows without a RoleDefined event.
var BuiltinRoles = []string{RoleNATSCluster, RoleNATSLeaf, RoleStorage}

// Role is what RoleDefined says of a role: a repository role's module, and how many of its nodes a
// rollout may take down at once.
type Role struct {
	Name string `json:"name"`
	// Module is a repository role's NixOS module, relative to the repository's root
	// (nixosModules/<name>.nix); "" for a built-in role.
	Module string `json:"module,omitempty"`
	// MaxUnavailable is how many of the role's nodes a rollout switches at once (0: the default, 1).
	// Members of a NATS cluster always go one at a time, whatever this says.
	MaxUnavailable int `json:"max_unavailable,omitempty"`
}

// roleDefined is RoleDefined's payload.
type roleDefined struct {
	Name           string `json:"name"`
	Module         string `json:"module,omitempty"`
	MaxUnavailable int    `json:"max_unavailable,omitempty"`
}

// MaxMaxUnavailable bounds a role's max_unavailable.
const MaxMaxUnavailable = 1000

var roleModule = regexp.MustCompile(`^nixosModules/[a-z0-9][a-z0-9-]{0,62}\.nix$`)

func (f *folder) roleDefined(ev *events.Event) {
	var r roleDefined
	if !f.decode(ev, &r) {
		return
	}
	if !f.check(ev, "data.name", checkLabel(r.Name)) {
		return
	}
	f.aggregate(ev, "data.name", r.Name, "role")
	builtin := slices.Contains(BuiltinRoles, r.Name)
	ok := true
	switch {
	case builtin && r.Module != "":
		f.problem(ev, "data.module", "%s is a built-in role: cimdeploy generates its module, so it takes no module", q(r.Name))
		ok = false
	case !builtin && r.Module == "":
		f.problem(ev, "data.module", "role %s needs its NixOS module (such as nixosModules/%s.nix): it is no built-in role (%v)", q(r.Name), r.Name, BuiltinRoles)
		ok = false
	case !builtin && !roleModule.MatchString(r.Module):
		f.problem(ev, "data.module", "%s is not a module path such as nixosModules/%s.nix (nixosModules/, lower-case letters, digits and '-', .nix)", q(r.Module), r.Name)
		ok = false
	case !builtin && slices.Contains(generatedModules(), r.Module):
		f.problem(ev, "data.module", "%s is a module cimdeploy generates; a repository role needs its own file", q(r.Module))
		ok = false
	}
	switch {
	case r.MaxUnavailable < 0 || r.MaxUnavailable > MaxMaxUnavailable:
		f.problem(ev, "data.max_unavailable", "%d is not between 1 and %d", r.MaxUnavailable, MaxMaxUnavailable)
		ok = false
	case r.Name == RoleNATSCluster && r.MaxUnavailable > 1:
		f.problem(ev, "data.max_unavailable", "%d: the members of a NATS cluster go one at a time, or the JetStream meta group and R3 streams lose their quorum", r.MaxUnavailable)
		ok = false
	}
	if !ok {
		return
	}
	if f.t.Roles == nil {
		f.t.Roles = map[string]Role{}
	}
	f.t.Roles[r.Name] = Role(r)
}

// generatedModules are the module files the projection writes: the built-in roles' and the one they
// share (common.nix).
func generatedModules() []string {
	ms := []string{"nixosModules/common.nix"}
	for _, r := range BuiltinRoles {
		ms = append(ms, "nixosModules/"+r+".nix")
	}
	return ms
}

// nodeRole resolves a node's role and cluster from its spec, at the end of the fold: a node without a
// role is a member of the NATS service's cluster; a leaf names its hub cluster; other roles name none.
func (f *folder) nodeRole(name string, st *nodeState) (role, cluster string, ok bool) {
	role, cluster = st.spec.Role, st.spec.Cluster
	if role == "" {
		role = RoleNATSCluster
	}
	_, defined := f.t.Roles[role]
	if !slices.Contains(BuiltinRoles, role) && !defined {
		f.problem(st.specBy, "data.role", "node %s has role %s, which is neither built in (%v) nor defined by a RoleDefined event", q(name), q(role), BuiltinRoles)
		return role, cluster, false
	}
	switch role {
	case RoleNATSCluster:
		if cluster == "" && f.t.Services.NATS != nil {
			cluster = f.t.Services.NATS.Cluster.Name
		}
		if cluster != "" {
			if err := checkMatch(cluster, clusterName, "a NATS cluster name of letters, digits, - and _"); err != nil {
				f.problem(st.specBy, "data.cluster", "%s", err)
				return role, cluster, false
			}
		}
	case RoleNATSLeaf:
		if cluster == "" {
			f.problem(st.specBy, "data.cluster", "leaf node %s names no hub cluster: a nats-leaf node attaches to the NATS cluster its cluster field names", q(name))
			return role, cluster, false
		}
	default:
		if cluster != "" {
			f.problem(st.specBy, "data.cluster", "node %s has role %s, which belongs to no NATS cluster: cluster must be empty (it is %s)", q(name), q(role), q(cluster))
			return role, "", false
		}
	}
	return role, cluster, true
}

// finishRoles checks what only all nodes tell: a leaf's hub cluster has members, and a leaf of a
// topology with accounts is secured.
func (f *folder) finishRoles() {
	clusters := f.t.Clusters()
	for _, name := range f.t.NodeNames() {
		n := f.t.Nodes[name]
		if n.Role != RoleNATSLeaf {
			continue
		}
		if _, ok := clusters[n.Cluster]; !ok {
			f.problem(f.nodes[name].specBy, "data.cluster", "leaf node %s names hub cluster %s, which has no members (no nats-cluster node is in it)", q(name), q(n.Cluster))
		}
		// A leaf carries its accounts to the hub over leafnode connections authenticated by certificates
		// (leaves.go): without TLS, nothing would say which account a leaf's connection is in.
		if f.t.Accounts != nil && f.t.Security == nil {
			f.problem(f.nodes[name].specBy, "data.role", "leaf node %s: a cluster with NATS accounts needs ClusterSecured for its leaf nodes (each account's leafnode connection authenticates with a certificate)", q(name))
		}
	}
}

// Clusters are the NATS clusters: each cluster's name and its members' names, sorted.
func (t *Topology) Clusters() map[string][]string {
	out := map[string][]string{}
	for _, name := range t.NodeNames() {
		if n := t.Nodes[name]; n.Role == RoleNATSCluster {
			out[n.Cluster] = append(out[n.Cluster], name)
		}
	}
	return out
}

// Leaves are the leaf nodes attached to hub cluster hub, sorted.
func (t *Topology) Leaves(hub string) []string {
	var out []string
	for _, name := range t.NodeNames() {
		if n := t.Nodes[name]; n.Role == RoleNATSLeaf && n.Cluster == hub {
			out = append(out, name)
		}
	}
	return out
}

// RunsNATS reports whether a node of role runs a NATS server.
func RunsNATS(role string) bool { return role == RoleNATSCluster || role == RoleNATSLeaf }

// MaxUnavailable is how many nodes of role a rollout may switch at once: 1 for a NATS cluster's
// members, else what RoleDefined says (1 when nothing does).
func (t *Topology) MaxUnavailable(role string) int {
	if role == RoleNATSCluster {
		return 1
	}
	if r, ok := t.Roles[role]; ok && r.MaxUnavailable > 0 {
		return r.MaxUnavailable
	}
	return 1
}

// RoleNames are the roles the nodes have, sorted.
func (t *Topology) RoleNames() []string {
	set := map[string]bool{}
	for _, n := range t.Nodes {
		set[n.Role] = true
	}
	out := make([]string, 0, len(set))
	for r := range set {
		out = append(out, r)
	}
	sort.Strings(out)
	return out
}
