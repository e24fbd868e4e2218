package projection

import (
	"strings"

	"github.com/cimdeploy/cimdeploy/gitops/nixexpr"
	"github.com/cimdeploy/cimdeploy/gitops/topology"
)

// The leafnode connections of a secured cluster (topology/leaves.go says what each node keeps):
//
//   - a hub's members listen for leaves with mutual TLS and verify_and_map
//     (https://docs.nats.io/running-a-nats-service/configuration/leafnodes/leafnode_conf, the leafnodes
//     block's tls and authorization): the leaf's certificate must be signed by the cluster's CA, and
//     its subject is the leafnode user, looked up in leafnodes.authorization.users, whose account binds
//     the connection ("Account that leaf nodes authenticating as this user are bound to. Each user in
//     the list can name a different account", https://docs.nats.io/reference/config/leafnodes/authorization/users/account;
//     nats-server's server/auth.go isLeafNodeAuthorized: with LeafNode.TLSMap, the user whose name is
//     the certificate's subject, and its account). A subject no user names (a member's certificate,
//     another hub's leaf) is refused; a certificate of another CA fails the handshake;
//   - a leaf has one remote per account (leafnodes.remotes[].account, the local account the remote
//     binds, https://docs.nats.io/running-a-nats-service/configuration/leafnodes#leafnode-configuration-options:
//     "account - Account name or JWT public key identifying the local account to bind to this remote
//     server"), each with its own certificate (remotes[].tls, the node's key) so the hub binds it to
//     the same account: SYS, so that the system account spans the leaf (server events, and the
//     JetStream domains' API, nats-io/nats-server#2693), and each domain's account; the leaf defines
//     the same accounts and users as the members, so a domain's clients connect to the leaf as to a
//     member. Without accounts, one remote in the global account.
//
// Every file is referenced by its path in the secrets directory, never read into the Nix store.

// hubLeafnodes are the TLS and authorization settings of a secured hub's leafnode listener (inside
// nats-cluster.nix's lib.mkIf hub); none when the cluster is not secured.
func hubLeafnodes(t *topology.Topology) nixexpr.Set {
	sec := t.Security
	if sec == nil {
		return nil
	}
	return nixexpr.Set{
		nixexpr.Bind("tls", nixexpr.Set{
			nixexpr.Bind("ca_file", nixexpr.String(sec.Secret(topology.SecretCA))),
			nixexpr.Bind("cert_file", nixexpr.String(sec.Secret(topology.SecretCert))),
			nixexpr.Bind("key_file", nixexpr.String(sec.Secret(topology.SecretKey))),
			nixexpr.Bind("verify_and_map", nixexpr.Bool(true)),
		}),
		nixexpr.Bind("authorization.users", nixexpr.Raw("leafUsers.${node.cluster}")),
	}
}

// leafUserLets is the let binding of each hub's leafnode users: one per leaf and account, named by the
// subject of the leaf's certificate for the account; none when the cluster is not secured.
func leafUserLets(t *topology.Topology) []letBinding {
	if t.Security == nil {
		return nil
	}
	accounts := leafAccounts(t)
	users := nixexpr.Attrs{}
	for hub := range t.Clusters() {
		l := nixexpr.List{}
		for _, leaf := range t.Leaves(hub) {
			for _, a := range accounts {
				u := nixexpr.Set{nixexpr.Bind("user", nixexpr.String(topology.LeafSubject(leaf, a)))}
				if a != "" {
					u = append(u, nixexpr.Bind("account", nixexpr.String(a)))
				}
				l = append(l, u)
			}
		}
		if len(l) > 0 {
			users[hub] = l
		}
	}
	return []letBinding{{"Each hub's leafnode users: the subjects of its leaves' certificates, by account.", "leafUsers", users}}
}

// leafAccounts are the accounts of a leaf's remotes: the topology's, or the global account ("").
func leafAccounts(t *topology.Topology) []string {
	if a := t.LeafAccounts(); a != nil {
		return a
	}
	return []string{""}
}

// leafRemotes are a leaf's leafnode remotes, all to its hub's members: one without TLS when the cluster
// is not secured, else one per account with the leaf's certificate for it.
func leafRemotes(t *topology.Topology) nixexpr.List {
	urls := nixexpr.Bind("urls", nixexpr.Raw("hubs.${node.cluster}"))
	sec := t.Security
	if sec == nil {
		return nixexpr.List{nixexpr.Set{urls}}
	}
	out := nixexpr.List{}
	for _, a := range leafAccounts(t) {
		r := nixexpr.Set{urls}
		if a != "" {
			r = append(r, nixexpr.Bind("account", nixexpr.String(a)))
		}
		out = append(out, append(r, nixexpr.Bind("tls", nixexpr.Set{
			nixexpr.Bind("ca_file", nixexpr.String(sec.Secret(topology.SecretCA))),
			nixexpr.Bind("cert_file", nixexpr.String(sec.Secret(topology.LeafCert(a)))),
			nixexpr.Bind("key_file", nixexpr.String(sec.Secret(topology.SecretKey))),
		})))
	}
	return out
}

// securityLeaf is what ClusterSecured adds to nats-leaf.nix (nothing when the cluster is not secured):
// clients' TLS when client_tls is set, validateConfig = false (the files are on the node only, as for
// the members: securityNATS), and the firewall: the monitoring port and the NATS exporter from the
// management networks, the client port from the client networks. A leaf listens for no routes and no
// leafnode connections: it dials its hub.
func securityLeaf(t *topology.Topology) nixexpr.Set {
	sec := t.Security
	if sec == nil {
		return nil
	}
	out := nixexpr.Set{nixexpr.Blank}
	if sec.ClientTLS {
		out = append(out, nixexpr.Bind("services.nats.settings.tls", nixexpr.Set{
			nixexpr.Bind("ca_file", nixexpr.String(sec.Secret(topology.SecretCA))),
			nixexpr.Bind("cert_file", nixexpr.String(sec.Secret(topology.SecretCert))),
			nixexpr.Bind("key_file", nixexpr.String(sec.Secret(topology.SecretKey))),
		}))
	}
	var rules strings.Builder
	nftRule(&rules, prefixStrings(sec.ManagementNetworks), managementPorts(t), "monitoring and exporters: management networks")
	nftRule(&rules, prefixStrings(sec.ClientNetworks), []int{t.Services.NATS.ClientPort}, "clients")
	return append(out,
		nixexpr.Bind("services.nats.validateConfig", nixexpr.Bool(false)),
		nixexpr.Blank,
		nixexpr.Bind("networking.firewall.extraInputRules", nixexpr.String(rules.String())),
	)
}
