// Package topology folds domain events into the topology of a cluster: its domain, network, nodes and
// services. The fold is pure and deterministic: the same events give the same topology, and every
// problem is reported in one pass, located at the event (file, sequence, id) and field that caused it.
package topology

import (
	"net/netip"
	"sort"
)

// Topology is the state the events describe, as of event Sequence. Its JSON form is the one
// `cimdeploy generate --json` prints and the one topology.nix holds.
type Topology struct {
	Sequence uint64          `json:"sequence"`
	Domain   Domain          `json:"domain"`
	Network  Network         `json:"network"`
	Nodes    map[string]Node `json:"nodes"`
	Services Services        `json:"services"`
	// Domains are the domains created after the first (the cluster's own, Domain); Accounts are the
	// NATS accounts of the domains and the system account (nil: no account events, anonymous clients).
	Domains  map[string]Domain `json:"domains,omitempty"`
	Accounts *Accounts         `json:"accounts,omitempty"`
	Security *Security         `json:"security,omitempty"`
	// Operators are the people (and cimdeploy's deploy key) who log in to the nodes, by user name.
	Operators map[string]Operator `json:"operators,omitempty"`
	// Roles are the roles RoleDefined events define or configure, by name (roles.go).
	Roles map[string]Role `json:"roles,omitempty"`
	// Removed are the nodes a NodeRemoved event took out (and no later NodeAdded brought back), as
	// they were before: the rollout takes them out of the running cluster. Not part of the JSON form.
	Removed map[string]Node `json:"-"`
}

// Domain is what DomainCreated says.
type Domain struct {
	Name          string   `json:"name"`
	Purpose       string   `json:"purpose"`
	Administrator string   `json:"administrator"`
	Services      []string `json:"services"`
}

// Network is the layer-3 network the nodes live in.
type Network struct {
	CIDR    netip.Prefix `json:"cidr"`
	Gateway netip.Addr   `json:"gateway"`
	DNS     []netip.Addr `json:"dns"`
}

// Node is one NixOS LXC container.
type Node struct {
	Interface    string     `json:"interface"`
	Address      netip.Addr `json:"address"`
	PrefixLength int        `json:"prefix_length"`
	System       string     `json:"system"`
	StateVersion string     `json:"state_version"`
	Proxmox      Proxmox    `json:"proxmox"`
	// Role is what the node is for (roles.go: nats-cluster, nats-leaf, storage, or a repository
	// role); Cluster is the NATS cluster a nats-cluster node is a member of, or a leaf's hub cluster.
	Role    string `json:"role"`
	Cluster string `json:"cluster,omitempty"`
}

// Proxmox is where and how a node's container runs.
type Proxmox struct {
	Host         string   `json:"host"`
	VMID         int      `json:"vmid"`
	Cores        int      `json:"cores"`
	MemoryMiB    int      `json:"memory_mib"`
	Storage      string   `json:"storage"`
	Bridge       string   `json:"bridge"`
	Unprivileged bool     `json:"unprivileged"`
	Features     []string `json:"features"`
	// RootfsGiB is the size of the root disk in GiB (pct create --rootfs STORAGE:SIZE); 0 leaves it
	// to Proxmox (4). OnBoot starts the container when its Proxmox host boots (--onboot 1).
	RootfsGiB int  `json:"rootfs_gib,omitempty"`
	OnBoot    bool `json:"onboot,omitempty"`
}

// Services are the services every node of the cluster runs; nil means not added.
type Services struct {
	NATS         *NATS         `json:"nats,omitempty"`
	NodeExporter *NodeExporter `json:"node_exporter,omitempty"`
	NATSExporter *NATSExporter `json:"nats_exporter,omitempty"`
}

// NATS is a NATS server with JetStream, clustered over all nodes.
type NATS struct {
	ClientPort          int       `json:"client_port"`
	MonitorPort         int       `json:"monitor_port"`
	Cluster             Cluster   `json:"cluster"`
	Leafnodes           Leafnodes `json:"leafnodes"`
	JetStream           JetStream `json:"jetstream"`
	LameDuckDuration    string    `json:"lame_duck_duration"`
	LameDuckGracePeriod string    `json:"lame_duck_grace_period"`
}

// Cluster is the NATS cluster's name and route port.
type Cluster struct {
	Name string `json:"name"`
	Port int    `json:"port"`
}

// Leafnodes is where a hub cluster's members listen for the connections of their leaf nodes.
type Leafnodes struct {
	Port int `json:"port"`
}

// JetStream is where and how much JetStream stores; a zero limit leaves it to nats-server.
type JetStream struct {
	StoreDir       string `json:"store_dir"`
	MaxMemoryStore int64  `json:"max_memory_store"`
	MaxFileStore   int64  `json:"max_file_store"`
}

// NodeExporter is the Prometheus node exporter.
type NodeExporter struct {
	Port              int      `json:"port"`
	EnabledCollectors []string `json:"enabled_collectors"`
}

// NATSExporter is the Prometheus NATS exporter; it exports nothing without flags such as -varz.
type NATSExporter struct {
	Port       int      `json:"port"`
	ExtraFlags []string `json:"extra_flags"`
}

// NodeNames returns the node names sorted.
func (t *Topology) NodeNames() []string {
	names := make([]string, 0, len(t.Nodes))
	for name := range t.Nodes {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// TCPPorts returns the TCP ports of all the services, sorted; a node listens on those of its role.
func (t *Topology) TCPPorts() []int {
	var ports []int
	for _, p := range t.Services.ports() {
		ports = append(ports, p.port)
	}
	sort.Ints(ports)
	return ports
}

type namedPort struct {
	kind, field string
	port        int
}

func (s Services) ports() []namedPort {
	var ps []namedPort
	if n := s.NATS; n != nil {
		ps = append(ps,
			namedPort{KindNATS, "nats.client_port", n.ClientPort},
			namedPort{KindNATS, "nats.cluster.port", n.Cluster.Port},
			namedPort{KindNATS, "nats.leafnodes.port", n.Leafnodes.Port},
			namedPort{KindNATS, "nats.monitor_port", n.MonitorPort})
	}
	if e := s.NodeExporter; e != nil {
		ps = append(ps, namedPort{KindNodeExporter, "node_exporter.port", e.Port})
	}
	if e := s.NATSExporter; e != nil {
		ps = append(ps, namedPort{KindNATSExporter, "nats_exporter.port", e.Port})
	}
	return ps
}
