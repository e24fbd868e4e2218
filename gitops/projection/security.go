package projection

import (
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/cimdeploy/cimdeploy/gitops/nixexpr"
	"github.com/cimdeploy/cimdeploy/gitops/topology"
)

// openPorts are the TCP ports of a module that the firewall opens to everyone, sorted: ports, or, in a
// secured cluster, none (the security bindings open each port to its own sources).
func openPorts(t *topology.Topology, ports []int) nixexpr.List {
	out := nixexpr.List{}
	if t.Security != nil {
		return out
	}
	ports = slices.Clone(ports)
	slices.Sort(ports)
	for _, p := range ports {
		out = append(out, nixexpr.Int(p))
	}
	return out
}

// securityCommon is what ClusterSecured adds to common.nix: the nftables firewall, the node exporter
// from the management networks (nixpkgs' nixos/modules/services/networking/firewall-nftables.nix,
// extraInputRules). Nothing when the cluster is not secured.
func securityCommon(t *topology.Topology) nixexpr.Set {
	sec := t.Security
	if sec == nil {
		return nil
	}
	out := nixexpr.Set{nixexpr.Blank, nixexpr.Bind("networking.nftables.enable", nixexpr.Bool(true))}
	if e := t.Services.NodeExporter; e != nil {
		var b strings.Builder
		nftRule(&b, prefixStrings(sec.ManagementNetworks), []int{e.Port}, "node exporter: management networks")
		out = append(out, nixexpr.Bind("networking.firewall.extraInputRules", nixexpr.String(b.String())))
	}
	return out
}

// securityNATS is what ClusterSecured adds to nats-cluster.nix (nothing when the cluster is not
// secured):
//
//   - routes: mutual TLS with the cluster's CA (nats-server's cluster.tls, where verify is always on) and
//     verify_and_map, so the certificate's subject is the route's user, checked against
//     cluster.authorization.user (nats-io/nats.docs, ref/config/cluster/authorization: "If the tls
//     configuration map specifies verify_and_map only, provide the expected username");
//   - clients: TLS with the node's certificate when client_tls is set;
//   - validateConfig = false: the certificate and key are files on the node, never in the Nix store,
//     so `nats-server -t` at build time cannot read them (nixpkgs' nats.nix: "When the config can't
//     be checked during build time, for example when it includes other files, disable this option");
//   - the firewall (nftables, after common.nix's node exporter rule): the monitoring port and the NATS
//     exporter from the management networks, the route port from the members of the node's own
//     cluster, a hub's leafnode port from its own leaves, the client port from the client networks
//     (firewallLets: one rule set per cluster, picked by node.cluster).
//
// A hub's leafnode listener and a leaf's remotes have TLS of their own (leafsecurity.go).
func securityNATS(t *topology.Topology) nixexpr.Set {
	sec := t.Security
	if sec == nil {
		return nil
	}
	files := func(extra ...nixexpr.Binding) nixexpr.Set {
		return append(nixexpr.Set{
			nixexpr.Bind("ca_file", nixexpr.String(sec.Secret(topology.SecretCA))),
			nixexpr.Bind("cert_file", nixexpr.String(sec.Secret(topology.SecretCert))),
			nixexpr.Bind("key_file", nixexpr.String(sec.Secret(topology.SecretKey))),
		}, extra...)
	}
	// Each setting is bound by its full path: Nix 2.8 refuses an attribute set given twice (2.26 takes it)
	// (services.nats = { settings = { cluster = ...; }; } and services.nats.settings = { ... }).
	out := nixexpr.Set{
		nixexpr.Blank,
		nixexpr.Bind("services.nats.settings.cluster.authorization.user", nixexpr.String(sec.RouteSubject)),
		nixexpr.Bind("services.nats.settings.cluster.tls", files(nixexpr.Bind("verify_and_map", nixexpr.Bool(true)))),
	}
	if sec.ClientTLS {
		out = append(out, nixexpr.Bind("services.nats.settings.tls", files()))
	}
	return append(out,
		nixexpr.Bind("services.nats.validateConfig", nixexpr.Bool(false)),
		nixexpr.Blank,
		nixexpr.Bind("networking.firewall.extraInputRules", nixexpr.Raw("firewall.${node.cluster}")),
	)
}

// firewallLets is the let binding of nats-cluster.nix's firewall rules, by cluster; none when the
// cluster is not secured.
func firewallLets(t *topology.Topology) []letBinding {
	if t.Security == nil {
		return nil
	}
	rules := nixexpr.Attrs{}
	for name := range t.Clusters() {
		rules[name] = nixexpr.String(firewallRules(t, name))
	}
	return []letBinding{{"Each NATS cluster's firewall rules (nftables): its members' own sources.", "firewall", rules}}
}

// firewallRules are the nftables rules of a member of cluster for the firewall's input-allow chain, one
// per kind of source: routes only from the cluster's members, leafnode connections only from the
// cluster's leaves (a hub's), clients from the client networks.
func firewallRules(t *topology.Topology, cluster string) string {
	sec, n := t.Security, t.Services.NATS
	var b strings.Builder
	nftRule(&b, prefixStrings(sec.ManagementNetworks), managementPorts(t), "monitoring and exporters: management networks")
	nftRule(&b, addresses(t, t.Clusters()[cluster]), []int{n.Cluster.Port}, "routes: the members of cluster "+cluster)
	if leaves := t.Leaves(cluster); len(leaves) > 0 {
		nftRule(&b, addresses(t, leaves), []int{n.Leafnodes.Port}, "leafnodes: the leaves of cluster "+cluster)
	}
	nftRule(&b, prefixStrings(sec.ClientNetworks), []int{n.ClientPort}, "clients")
	return b.String()
}

// managementPorts are the monitoring port and the NATS exporter's, sorted.
func managementPorts(t *topology.Topology) []int {
	mgmt := []int{t.Services.NATS.MonitorPort}
	if e := t.Services.NATSExporter; e != nil {
		mgmt = append(mgmt, e.Port)
	}
	slices.Sort(mgmt)
	return mgmt
}

// addresses are the addresses of the nodes names.
func addresses(t *topology.Topology, names []string) []string {
	out := make([]string, len(names))
	for i, name := range names {
		out[i] = t.Nodes[name].Address.String()
	}
	return out
}

// rule is one nftables rule: sources may reach ports.
func nftRule(b *strings.Builder, sources []string, ports []int, comment string) {
	ps := make([]string, len(ports))
	for i, p := range ports {
		ps[i] = strconv.Itoa(p)
	}
	b.WriteString("ip saddr { " + strings.Join(sources, ", ") + " } tcp dport { " + strings.Join(ps, ", ") +
		" } accept comment \"" + comment + "\"\n")
}

func prefixStrings(ps []netip.Prefix) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}
