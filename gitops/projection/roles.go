package projection

import (
	"fmt"
	"slices"
	"strings"

	"github.com/cimdeploy/cimdeploy/gitops/nixexpr"
	"github.com/cimdeploy/cimdeploy/gitops/topology"
)

// A node's configuration imports the module of its role (the seed's makeNodeConfig:
// `imports = [ ./nixosModules/${role}.nix ]`):
//
//   - nixosModules/common.nix: what every node has (network, firewall, resolver, node exporter,
//     operators); every generated role module imports it, and flake.nix adds it to a repository role's;
//   - nixosModules/nats-cluster.nix: a member of a NATS cluster, routed to the members of its own cluster;
//     a hub's members (a cluster with leaf nodes) listen for leafnode connections;
//   - nixosModules/nats-leaf.nix: a NATS server connected to its hub cluster's members by a leafnode
//     remote, with JetStream in a domain of its own;
//   - nixosModules/storage.nix: no NATS server;
//   - a repository role's module: the repository's own file (RoleDefined's module), never written.
//
// A built-in role's module is generated when a node has the role (nats-cluster always). A module of a
// role no node has any more stays as it was, imported by no node.

// module is one generated module's file (without the header).
type module struct {
	Path string
	Data []byte
}

// builtinModule is the generated module of each built-in role.
var builtinModule = map[string]string{
	topology.RoleNATSCluster: ModuleFile,
	topology.RoleNATSLeaf:    LeafModuleFile,
	topology.RoleStorage:     StorageModuleFile,
}

// renderModules renders the shared module and the modules of the built-in roles the nodes have.
func renderModules(t *topology.Topology) ([]module, error) {
	if err := checkRoles(t); err != nil {
		return nil, err
	}
	type renderer struct {
		path string
		fn   func(*topology.Topology) (string, error)
	}
	render := []renderer{{CommonModuleFile, renderCommon}, {ModuleFile, renderClusterModule}}
	roles := t.RoleNames()
	if slices.Contains(roles, topology.RoleNATSLeaf) {
		render = append(render, renderer{LeafModuleFile, renderLeafModule})
	}
	if slices.Contains(roles, topology.RoleStorage) {
		render = append(render, renderer{StorageModuleFile, renderStorageModule})
	}
	var out []module
	for _, r := range render {
		s, err := r.fn(t)
		if err != nil {
			return nil, fmt.Errorf("render %s: %w", r.path, err)
		}
		out = append(out, module{Path: r.path, Data: []byte(s)})
	}
	return out, nil
}

// checkRoles refuses what the fold lets through but the projection cannot render: a node of a role
// that is neither built in nor defined, a repository module at a generated file's path, a leaf with
// accounts but no TLS (the fold reports those at the leaf's event; this is the projection's own guard).
func checkRoles(t *topology.Topology) error {
	for _, name := range t.NodeNames() {
		n := t.Nodes[name]
		if _, ok := builtinModule[n.Role]; ok {
			if n.Role == topology.RoleNATSLeaf && t.Accounts != nil && t.Security == nil {
				return fmt.Errorf("%w: leaf node %s: a leaf of a cluster with NATS accounts needs ClusterSecured (its accounts' leafnode connections authenticate with certificates)", ErrIncomplete, name)
			}
			continue
		}
		r, ok := t.Roles[n.Role]
		if !ok || r.Module == "" {
			return fmt.Errorf("%w: node %s has role %q, which has no module (no RoleDefined event gives one)", ErrIncomplete, name, n.Role)
		}
	}
	for _, name := range sortedKeys(t.Roles) {
		m := t.Roles[name].Module
		if slices.Contains([]string{CommonModuleFile, ModuleFile, LeafModuleFile, StorageModuleFile}, m) {
			return fmt.Errorf("%w: the RoleDefined event of role %s names module %s, a file cimdeploy generates", ErrUnsafePath, name, m)
		}
	}
	return nil
}

// repositoryModules are the modules of the repository roles the nodes have: files Render names for
// Write and Diff to check, without data.
func repositoryModules(t *topology.Topology) []File {
	var out []File
	for _, role := range t.RoleNames() {
		if _, builtin := builtinModule[role]; builtin {
			continue
		}
		if r, ok := t.Roles[role]; ok && r.Module != "" {
			out = append(out, File{Path: r.Module, Role: role})
		}
	}
	return out
}

// roleModules is flake.nix's table from a role to the modules its nodes import: a built-in role's
// generated module (which imports common.nix), a repository role's own module with common.nix.
func roleModules(t *topology.Topology) (string, error) {
	var b strings.Builder
	b.WriteString("{\n")
	for _, role := range t.RoleNames() {
		name, err := nixexpr.AttrName(role)
		if err != nil {
			return "", err
		}
		var paths []string
		if m, ok := builtinModule[role]; ok {
			paths = []string{"./" + m}
		} else {
			paths = []string{"./" + CommonModuleFile, "./" + t.Roles[role].Module}
		}
		for _, p := range paths {
			// A path literal: the fold allows only nixosModules/<lower-case letters, digits, ->.nix.
			if !modulePath(p) {
				return "", fmt.Errorf("role %s: module %q is not a module path: %w", role, p, ErrUnsafePath)
			}
		}
		fmt.Fprintf(&b, "        %s = [ %s ];\n", name, strings.Join(paths, " "))
	}
	b.WriteString("      }")
	return b.String(), nil
}

// modulePath is the form of a module path that flake.nix may hold as a Nix path literal.
func modulePath(p string) bool {
	rest, ok := strings.CutPrefix(p, "./nixosModules/")
	rest, ok2 := strings.CutSuffix(rest, ".nix")
	if !ok || !ok2 || rest == "" || len(rest) > 63 {
		return false
	}
	for i, c := range rest {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' && i > 0) {
			return false
		}
	}
	return true
}

// flakeModules is flake.nix's nixosModules output: the generated modules, by role.
func flakeModules(t *topology.Topology) string {
	var b strings.Builder
	b.WriteString("{\n        common = import ./" + CommonModuleFile + ";\n")
	for _, role := range t.RoleNames() {
		if m, ok := builtinModule[role]; ok {
			fmt.Fprintf(&b, "        %s = import ./%s;\n", role, m)
		}
	}
	if !slices.Contains(t.RoleNames(), topology.RoleNATSCluster) {
		fmt.Fprintf(&b, "        %s = import ./%s;\n", topology.RoleNATSCluster, ModuleFile)
	}
	b.WriteString("      }")
	return b.String()
}

// moduleText is a module: its let bindings (the topology and this node's data first), then body.
func moduleText(lets []letBinding, body nixexpr.Set) (string, error) {
	s, err := nixexpr.Format(body, 0)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	b.WriteString(`{ config, lib, pkgs, ... }:

let
  topology = import ../topology.nix;
  # This node's own data, looked up by its host name.
  node = topology.nodes.${config.networking.hostName};
`)
	for _, l := range lets {
		v, err := nixexpr.Format(l.value, 2)
		if err != nil {
			return "", err
		}
		b.WriteString("  # " + l.comment + "\n  " + l.name + " = " + v + ";\n")
	}
	b.WriteString("in\n" + s + "\n")
	return b.String(), nil
}

type letBinding struct {
	comment, name string
	value         nixexpr.Value
}

// renderCommon is nixosModules/common.nix, what every node has.
func renderCommon(t *topology.Topology) (string, error) {
	dns := nixexpr.List{}
	for _, a := range t.Network.DNS {
		dns = append(dns, nixexpr.String(a.String()))
	}
	var body nixexpr.Set
	if e := t.Services.NodeExporter; e != nil {
		body = append(body, nixexpr.Bind("services.prometheus.exporters.node", nixexpr.Set{
			nixexpr.Bind("enable", nixexpr.Bool(true)),
			nixexpr.Bind("port", nixexpr.Int(e.Port)),
			nixexpr.Bind("enabledCollectors", stringList(e.EnabledCollectors)),
		}), nixexpr.Blank)
	}
	var ports []int
	if e := t.Services.NodeExporter; e != nil {
		ports = append(ports, e.Port)
	}
	body = append(body,
		nixexpr.Bind("proxmoxLXC", nixexpr.Set{
			nixexpr.Bind("manageHostName", nixexpr.Bool(true)),
			nixexpr.Bind("manageNetwork", nixexpr.Bool(true)),
		}),
		nixexpr.Blank,
		// manageNetwork: the module configures networkd itself, so NixOS' proxmox-lxc.nix leaves
		// useHostResolvConf to container-config.nix (mkDefault true), which resolved.nix (enabled by
		// networkd) rejects: "Using host resolv.conf is not supported with systemd-resolved". The
		// network's DNS servers reach the node through networkd and resolved, as proxmox-lxc.nix
		// arranges when Proxmox manages the network.
		nixexpr.Bind("networking", nixexpr.Set{
			nixexpr.Bind("useDHCP", nixexpr.Bool(false)),
			nixexpr.Bind("useNetworkd", nixexpr.Bool(true)),
			nixexpr.Bind("useHostResolvConf", nixexpr.Bool(false)),
			nixexpr.Bind("firewall", nixexpr.Set{
				nixexpr.Bind("enable", nixexpr.Bool(true)),
				// The role modules add their services' ports (the option's lists are merged).
				nixexpr.Bind("allowedTCPPorts", openPorts(t, ports)),
			}),
		}),
		nixexpr.Blank,
		nixexpr.Bind("services.resolved.enable", nixexpr.Bool(true)),
		nixexpr.Blank,
		nixexpr.Bind("systemd.network", nixexpr.Set{
			nixexpr.Bind("enable", nixexpr.Bool(true)),
			nixexpr.Binding{Path: []string{"networks", "10-uplink"}, Value: nixexpr.Set{
				nixexpr.Bind("matchConfig.Name", nixexpr.Raw("node.interface")),
				nixexpr.Bind("networkConfig", nixexpr.Set{
					nixexpr.Bind("Address", nixexpr.Raw(`"${node.address}/${toString node.prefix_length}"`)),
					nixexpr.Bind("Gateway", nixexpr.String(t.Network.Gateway.String())),
					nixexpr.Bind("DNS", dns),
					nixexpr.Bind("DHCP", nixexpr.String("no")),
				}),
			}},
		}),
	)
	body = append(body, securityCommon(t)...)
	body = append(body, operatorBindings(t)...)
	return moduleText(nil, body)
}

// natsServer is services.nats of a NATS server (a member or a leaf), with settings.
func natsServer(n *topology.NATS, settings nixexpr.Set) nixexpr.Set {
	return nixexpr.Set{
		nixexpr.Bind("enable", nixexpr.Bool(true)),
		nixexpr.Bind("jetstream", nixexpr.Bool(true)),
		nixexpr.Bind("serverName", nixexpr.Raw("config.networking.hostName")),
		nixexpr.Bind("port", nixexpr.Int(n.ClientPort)),
		nixexpr.Bind("settings", settings),
	}
}

// natsExporter is the NATS exporter of a node that runs a NATS server; nil without the service.
func natsExporter(t *topology.Topology) nixexpr.Set {
	e := t.Services.NATSExporter
	if e == nil {
		return nil
	}
	return nixexpr.Set{
		nixexpr.Blank,
		nixexpr.Bind("services.prometheus.exporters.nats", nixexpr.Set{
			nixexpr.Bind("enable", nixexpr.Bool(true)),
			nixexpr.Bind("port", nixexpr.Int(e.Port)),
			nixexpr.Bind("url", nixexpr.String("http://"+hostPort("127.0.0.1", t.Services.NATS.MonitorPort))),
			nixexpr.Bind("extraFlags", stringList(e.ExtraFlags)),
		}),
	}
}

// natsPorts are the ports of a NATS server's node other than the listeners of routes and leafnodes:
// the client and monitoring ports, the NATS exporter's.
func natsPorts(t *topology.Topology) []int {
	n := t.Services.NATS
	ports := []int{n.ClientPort, n.MonitorPort}
	if e := t.Services.NATSExporter; e != nil {
		ports = append(ports, e.Port)
	}
	return ports
}

// renderClusterModule is nixosModules/nats-cluster.nix: a member of the NATS cluster node.cluster,
// routed to its members; a hub's members listen for their leaf nodes.
func renderClusterModule(t *topology.Topology) (string, error) {
	n := t.Services.NATS
	clusters := t.Clusters()
	routes := nixexpr.Attrs{}
	hubs := nixexpr.List{}
	for name, members := range clusters {
		var l nixexpr.List
		for _, m := range members {
			l = append(l, nixexpr.String("nats://"+hostPort(t.Nodes[m].Address.String(), n.Cluster.Port)))
		}
		routes[name] = l
	}
	for _, name := range sortedKeys(clusters) {
		if len(t.Leaves(name)) > 0 {
			hubs = append(hubs, nixexpr.String(name))
		}
	}
	lets := []letBinding{{"Each NATS cluster's routes: its members'.", "routes", routes}}
	if len(hubs) > 0 {
		lets = append(lets,
			letBinding{"The clusters with leaf nodes: their members listen for the leaves' connections.", "hubs", hubs},
			letBinding{"Whether this node's cluster is a hub.", "hub", nixexpr.Raw("builtins.elem node.cluster hubs")})
		lets = append(lets, leafUserLets(t)...)
	}
	lets = append(lets, firewallLets(t)...)
	settings := append(nixexpr.Set{
		nixexpr.Bind("cluster", nixexpr.Set{
			nixexpr.Bind("listen", nixexpr.String(hostPort("0.0.0.0", n.Cluster.Port))),
			nixexpr.Bind("name", nixexpr.Raw("node.cluster")),
			nixexpr.Bind("routes", nixexpr.Raw("routes.${node.cluster}")),
		}),
		nixexpr.Bind("http_port", nixexpr.Int(n.MonitorPort)),
		nixexpr.Bind("jetstream", jetstream(n.JetStream)),
		nixexpr.Bind("lame_duck_duration", nixexpr.String(n.LameDuckDuration)),
		nixexpr.Bind("lame_duck_grace_period", nixexpr.String(n.LameDuckGracePeriod)),
	}, accountSettings(t)...)
	if len(hubs) > 0 {
		settings = append(settings, nixexpr.Bind("leafnodes", nixexpr.Call{Fn: "lib.mkIf hub", Arg: append(nixexpr.Set{
			nixexpr.Bind("port", nixexpr.Int(n.Leafnodes.Port)),
		}, hubLeafnodes(t)...)}))
	}
	body := nixexpr.Set{
		nixexpr.Bind("imports", nixexpr.Raw("[ ./common.nix ]")),
		nixexpr.Blank,
		nixexpr.Bind("services.nats", natsServer(n, settings)),
	}
	body = append(body, natsExporter(t)...)
	ports := openPorts(t, append(natsPorts(t), n.Cluster.Port))
	var portsValue nixexpr.Value = ports
	if len(hubs) > 0 && len(ports) > 0 {
		s, err := nixexpr.Format(ports, 0)
		if err != nil {
			return "", err
		}
		portsValue = nixexpr.Raw(s + fmt.Sprintf(" ++ lib.optional hub %d", n.Leafnodes.Port))
	}
	body = append(body, nixexpr.Blank, nixexpr.Bind("networking.firewall.allowedTCPPorts", portsValue))
	body = append(body, securityNATS(t)...)
	asserts, err := assertionBindings(t, topology.RoleNATSCluster)
	if err != nil {
		return "", err
	}
	return moduleText(lets, append(body, asserts...))
}

// renderLeafModule is nixosModules/nats-leaf.nix: a NATS server whose leafnode remote is its hub
// cluster's members. Its JetStream is a domain of its own, the node's name: "Every server in a cluster
// and super cluster needs to have the same domain name. This means that domain names can only change
// between two servers if they are connected via a leaf node connection" and "domain names need to be
// unique" (https://docs.nats.io/running-a-nats-service/configuration/leafnodes/jetstream_leafnodes);
// without one, the leaf's JetStream and the hub's would answer the same $JS.API subjects, and since
// nats-server 2.7 JetStream API traffic crosses a leafnode connection only between servers of one
// domain sharing the system account (nats-io/nats-server#2693). Clients reach the hub's JetStream with
// its domain (none: the default) from a leaf, and a leaf's as $JS.<leaf>.API.
func renderLeafModule(t *topology.Topology) (string, error) {
	n := t.Services.NATS
	clusters := t.Clusters()
	hubs := nixexpr.Attrs{}
	for _, name := range sortedKeys(clusters) {
		if len(t.Leaves(name)) == 0 {
			continue
		}
		var l nixexpr.List
		for _, m := range clusters[name] {
			l = append(l, nixexpr.String("nats-leaf://"+hostPort(t.Nodes[m].Address.String(), n.Leafnodes.Port)))
		}
		hubs[name] = l
	}
	lets := []letBinding{{"Each hub cluster's leafnode URLs: its members'.", "hubs", hubs}}
	js := append(nixexpr.Set{nixexpr.Bind("domain", nixexpr.Raw("config.networking.hostName"))}, jetstream(n.JetStream)...)
	settings := append(nixexpr.Set{
		nixexpr.Bind("http_port", nixexpr.Int(n.MonitorPort)),
		nixexpr.Bind("jetstream", js),
		nixexpr.Bind("lame_duck_duration", nixexpr.String(n.LameDuckDuration)),
		nixexpr.Bind("lame_duck_grace_period", nixexpr.String(n.LameDuckGracePeriod)),
		nixexpr.Bind("leafnodes.remotes", leafRemotes(t)),
	}, accountSettings(t)...)
	body := nixexpr.Set{
		nixexpr.Bind("imports", nixexpr.Raw("[ ./common.nix ]")),
		nixexpr.Blank,
		nixexpr.Bind("services.nats", natsServer(n, settings)),
	}
	body = append(body, natsExporter(t)...)
	body = append(body, nixexpr.Blank, nixexpr.Bind("networking.firewall.allowedTCPPorts", openPorts(t, natsPorts(t))))
	body = append(body, securityLeaf(t)...)
	asserts, err := assertionBindings(t, topology.RoleNATSLeaf)
	if err != nil {
		return "", err
	}
	return moduleText(lets, append(body, asserts...))
}

// renderStorageModule is nixosModules/storage.nix: a node without a NATS server.
func renderStorageModule(*topology.Topology) (string, error) {
	return `{ ... }:

{
  # A storage node runs no NATS server: what every node has, and nothing more yet.
  imports = [ ./common.nix ];
}
`, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
