package projection

import (
	"strings"

	"github.com/cimdeploy/cimdeploy/gitops/nixexpr"
	"github.com/cimdeploy/cimdeploy/gitops/topology"
)

// operatorBindings are the module's accounts: every operator is a normal user on every node (admins and
// the domain admin in wheel) whose keys are its authorized keys; a deployer's keys are root's, the account
// cimdeploy connects as (remote.Host's user, root in production and in the lab). NixOS adds them to
// /etc/ssh/authorized_keys.d/<user> beside ~/.ssh/authorized_keys, so the key Proxmox gave a new
// container (pct create --ssh-public-keys) keeps working. The domain admin also gets the domain's Home
// Manager environment. Empty without operators.
func operatorBindings(t *topology.Topology) nixexpr.Set {
	if len(t.Operators) == 0 {
		return nil
	}
	users := nixexpr.Set{}
	var rootKeys []string
	for _, name := range t.OperatorNames() {
		op := t.Operators[name]
		if op.Role == topology.RoleDeployer {
			rootKeys = append(rootKeys, op.Keys...)
			continue
		}
		groups := nixexpr.List{}
		if op.Role == topology.RoleAdmin || op.Role == topology.RoleDomainAdmin {
			groups = append(groups, nixexpr.String("wheel"))
		}
		users = append(users, nixexpr.Binding{Path: []string{name}, Value: nixexpr.Set{
			nixexpr.Bind("isNormalUser", nixexpr.Bool(true)),
			nixexpr.Bind("description", nixexpr.String("cimdeploy operator ("+op.Role+")")),
			nixexpr.Bind("extraGroups", groups),
			nixexpr.Bind("openssh.authorizedKeys.keys", stringList(op.Keys)),
		}})
	}
	if len(rootKeys) > 0 {
		users = append(users, nixexpr.Bind("root.openssh.authorizedKeys.keys", stringList(rootKeys)))
	}
	out := nixexpr.Set{nixexpr.Blank, nixexpr.Bind("users.users", users)}
	for _, op := range t.Operators {
		if op.Role == topology.RoleAdmin || op.Role == topology.RoleDomainAdmin {
			// Operators log in with keys and have no password: sudo must not ask for one.
			out = append(out, nixexpr.Bind("security.sudo.wheelNeedsPassword", nixexpr.Bool(false)))
			break
		}
	}
	if hm := homeManager(t); hm != nil {
		out = append(out, nixexpr.Blank, nixexpr.Bind("home-manager", hm))
	}
	return out
}

// homeManager is the domain admin's Home Manager environment (home-manager's NixOS module, imported by
// flake.nix): the domain's tools and aliases bound to its cluster and subjects. nil without a domain admin.
func homeManager(t *topology.Topology) nixexpr.Set {
	admin, ok := t.DomainAdmin()
	if !ok {
		return nil
	}
	server := "nats --server " + shellQuote(natsURLs(t))
	return nixexpr.Set{
		// The system's pkgs (the flake's nixpkgs) instead of a second instance per user.
		nixexpr.Bind("useGlobalPkgs", nixexpr.Bool(true)),
		nixexpr.Binding{Path: []string{"users", admin}, Value: nixexpr.Set{
			nixexpr.Bind("home", nixexpr.Set{
				nixexpr.Bind("username", nixexpr.String(admin)),
				nixexpr.Bind("homeDirectory", nixexpr.String("/home/"+admin)),
				nixexpr.Bind("stateVersion", nixexpr.Raw("node.state_version")),
				nixexpr.Bind("packages", nixexpr.List{nixexpr.Raw("pkgs.natscli"), nixexpr.Raw("pkgs.nsc"), nixexpr.Raw("pkgs.jq")}),
				nixexpr.Bind("sessionVariables.NATS_URL", nixexpr.String(natsURLs(t))),
			}),
			nixexpr.Bind("programs.bash", nixexpr.Set{
				nixexpr.Bind("enable", nixexpr.Bool(true)),
				nixexpr.Bind("shellAliases", nixexpr.Attrs{
					// JetStream's streams and their state: what the domain keeps.
					"domain-status": nixexpr.String(server + " stream report"),
					// Every message on the domain's subjects (<domain>.>), as it is published.
					"domain-events": nixexpr.String(server + " sub " + shellQuote(t.Domain.Name+".>")),
				}),
			}),
		}},
	}
}

// natsURLs is the client URLs of the NATS service's cluster (its members'; every cluster member's when
// no node is in it), as nats and the client libraries take them.
func natsURLs(t *topology.Topology) string {
	clusters := t.Clusters()
	members := clusters[t.Services.NATS.Cluster.Name]
	if len(members) == 0 {
		for _, name := range t.NodeNames() {
			if t.Nodes[name].Role == topology.RoleNATSCluster {
				members = append(members, name)
			}
		}
	}
	urls := make([]string, 0, len(members))
	for _, name := range members {
		urls = append(urls, "nats://"+hostPort(t.Nodes[name].Address.String(), t.Services.NATS.ClientPort))
	}
	return strings.Join(urls, ",")
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// homeManagerInput is flake.nix's home-manager input when the domain has an admin: Home Manager follows
// the flake's nixpkgs, so the system and the admin's environment share one package set.
func homeManagerInput(t *topology.Topology, opts Options) (string, error) {
	if _, ok := t.DomainAdmin(); !ok {
		return "", nil
	}
	url, err := nixexpr.Quote(opts.HomeManagerURL)
	if err != nil {
		return "", err
	}
	return "    home-manager = {\n      url = " + url + ";\n      inputs.nixpkgs.follows = \"nixpkgs\";\n    };\n", nil
}
