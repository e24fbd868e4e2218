package topology_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/cimdeploy/cimdeploy/gitops/events"
	"github.com/cimdeploy/cimdeploy/gitops/topology"
)

// roleNode is a NodeAdded payload of a node with a role, an address in the fixtures' 10.0.0.0/19 and
// VMID 300+i.
func roleNode(name string, i int, role, cluster string) string {
	data := map[string]any{"name": name, "system": "x86_64-linux", "state_version": "25.05",
		"proxmox": map[string]any{"host": "pve1", "vmid": 300 + i, "cores": 1, "memory_mib": 1024, "storage": "local-lvm",
			"bridge": "vmbr0", "unprivileged": true, "features": []string{"nesting=1"}},
		"interfaces": []any{map[string]any{"name": "eth0", "interface_type": "ethernet",
			"addresses": []any{map[string]any{"address": fmt.Sprintf("10.0.1.%d", i), "prefix_length": 19}}}}}
	if role != "" {
		data["role"] = role
	}
	if cluster != "" {
		data["cluster"] = cluster
	}
	raw, _ := json.Marshal(data)
	return string(raw)
}

func roleDefined(name, module string, maxUnavailable int) string {
	raw, _ := json.Marshal(map[string]any{"name": name, "module": module, "max_unavailable": maxUnavailable})
	return string(raw)
}

// fleet is the fixtures' cluster (cim-cluster, no roles given) plus a second cluster edge of three, four
// leaves (two per hub), a storage node and a repository role's node.
func fleet(t *testing.T) []events.Event {
	evs := fixtures(t)[:9]
	i := 1
	node := func(name, role, cluster string) {
		evs = add(evs, events.NodeAdded, roleNode(name, i, role, cluster))
		i++
	}
	for _, n := range []string{"edge-1", "edge-2", "edge-3"} {
		node(n, topology.RoleNATSCluster, "edge")
	}
	node("leaf-a1", topology.RoleNATSLeaf, "cim-cluster")
	node("leaf-a2", topology.RoleNATSLeaf, "cim-cluster")
	node("leaf-e1", topology.RoleNATSLeaf, "edge")
	node("leaf-e2", topology.RoleNATSLeaf, "edge")
	node("cimstor", topology.RoleStorage, "")
	evs = add(evs, events.RoleDefined, roleDefined("ipld-storage", "nixosModules/ipld-storage.nix", 2))
	evs = add(evs, events.RoleDefined, roleDefined(topology.RoleNATSLeaf, "", 3))
	node("ipfs-1", "ipld-storage", "")
	return evs
}

func TestRolesAndClusters(t *testing.T) {
	t.Parallel()
	top := must(topology.Fold(fleet(t)))
	clusters := top.Clusters()
	if got := fmt.Sprint(clusters); got != "map[cim-cluster:[nats-1 nats-2 nats-3] edge:[edge-1 edge-2 edge-3]]" {
		t.Errorf("clusters %s", got)
	}
	if got := strings.Join(top.Leaves("edge"), ","); got != "leaf-e1,leaf-e2" {
		t.Errorf("leaves of edge: %s", got)
	}
	if n := top.Nodes["nats-2"]; n.Role != topology.RoleNATSCluster || n.Cluster != "cim-cluster" {
		t.Errorf("nats-2 (no role in its event) = role %q cluster %q, want the NATS service's cluster", n.Role, n.Cluster)
	}
	if n := top.Nodes["cimstor"]; n.Role != topology.RoleStorage || n.Cluster != "" {
		t.Errorf("cimstor = role %q cluster %q", n.Role, n.Cluster)
	}
	for role, want := range map[string]int{topology.RoleNATSCluster: 1, topology.RoleNATSLeaf: 3, "ipld-storage": 2, topology.RoleStorage: 1} {
		if got := top.MaxUnavailable(role); got != want {
			t.Errorf("max unavailable of %s = %d, want %d", role, got, want)
		}
	}
	if got := strings.Join(top.RoleNames(), ","); got != "ipld-storage,nats-cluster,nats-leaf,storage" {
		t.Errorf("roles %s", got)
	}
	if m := top.Roles["ipld-storage"].Module; m != "nixosModules/ipld-storage.nix" {
		t.Errorf("module %q", m)
	}
	if !topology.RunsNATS(topology.RoleNATSLeaf) || topology.RunsNATS(topology.RoleStorage) {
		t.Error("RunsNATS")
	}
}

// A node changes role by NodeUpdated: a leaf promoted to a member of its hub cluster.
func TestRoleChangedByNodeUpdated(t *testing.T) {
	t.Parallel()
	evs := add(fleet(t), events.NodeUpdated, `{"name":"leaf-a1","role":"nats-cluster","cluster":"cim-cluster"}`)
	top := must(topology.Fold(evs))
	if got := strings.Join(top.Clusters()["cim-cluster"], ","); got != "leaf-a1,nats-1,nats-2,nats-3" {
		t.Errorf("cim-cluster members %s", got)
	}
}

func TestRoleValidation(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		typ  string
		data string
		want string
	}{
		{"unknown role", events.NodeAdded, roleNode("x-1", 50, "database", ""),
			`data.role: node "x-1" has role "database", which is neither built in`},
		{"leaf without hub", events.NodeAdded, roleNode("x-1", 50, topology.RoleNATSLeaf, ""),
			`data.cluster: leaf node "x-1" names no hub cluster`},
		{"leaf of an empty hub", events.NodeAdded, roleNode("x-1", 50, topology.RoleNATSLeaf, "nowhere"),
			`data.cluster: leaf node "x-1" names hub cluster "nowhere", which has no members`},
		{"storage in a cluster", events.NodeAdded, roleNode("x-1", 50, topology.RoleStorage, "cim-cluster"),
			`data.cluster: node "x-1" has role "storage", which belongs to no NATS cluster`},
		{"bad cluster name", events.NodeAdded, roleNode("x-1", 50, topology.RoleNATSCluster, "a b"),
			`data.cluster: "a b" is not a NATS cluster name`},
		{"built-in with a module", events.RoleDefined, roleDefined(topology.RoleStorage, "nixosModules/storage2.nix", 1),
			`data.module: "storage" is a built-in role`},
		{"repository role without a module", events.RoleDefined, roleDefined("ipld", "", 1),
			`data.module: role "ipld" needs its NixOS module`},
		{"module outside nixosModules", events.RoleDefined, roleDefined("ipld", "../../etc/passwd.nix", 1),
			`data.module: "../../etc/passwd.nix" is not a module path`},
		{"module a generated one", events.RoleDefined, roleDefined("ipld", "nixosModules/nats-cluster.nix", 1),
			`data.module: "nixosModules/nats-cluster.nix" is a module cimdeploy generates`},
		{"cluster members two at a time", events.RoleDefined, roleDefined(topology.RoleNATSCluster, "", 2),
			`data.max_unavailable: 2: the members of a NATS cluster go one at a time`},
		{"negative max unavailable", events.RoleDefined, roleDefined(topology.RoleNATSLeaf, "", -1),
			`data.max_unavailable: -1 is not between 1 and 1000`},
		{"unknown field", events.RoleDefined, `{"name":"ipld","module":"nixosModules/ipld.nix","replicas":3}`,
			`data.replicas`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, problems := topology.Fold(add(fixtures(t)[:9], tc.typ, tc.data))
			if !strings.Contains(problems.Error(), tc.want) {
				t.Fatalf("problems:\n%v\nwant %q", problems, tc.want)
			}
			if !strings.Contains(problems.Error(), "test-10.json") {
				t.Errorf("the problem does not name the event's file: %v", problems)
			}
		})
	}
}
