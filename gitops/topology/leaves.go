package topology

import (
	"slices"
	"sort"
)

// A leaf node of a secured cluster connects to its hub with mutual TLS, one leafnode connection
// (a remote) per account it carries: the domains' accounts and the system account SYS, or the global
// account when the topology has no accounts. Each remote presents a certificate of its own, signed by
// the cluster's CA over the node's key (SecretKey), whose subject LeafSubject names the leaf and the
// account; the hub maps that subject to a leafnode user bound to the account (nats-server's
// leafnodes.tls verify_and_map and leafnodes.authorization.users with account,
// https://docs.nats.io/reference/config/leafnodes/authorization/users/account). One certificate per
// account, since nats-server maps a certificate to one user, so one account (server/auth.go,
// isLeafNodeAuthorized). Nothing of this is secret but the node's key, which the routes already use.

// LeafAccounts are the accounts a leaf node's leafnode connections carry, one remote each, sorted:
// SYS and the domains' accounts; nil without accounts (one remote, in the global account).
func (t *Topology) LeafAccounts() []string {
	if t.Accounts == nil {
		return nil
	}
	out := []string{SystemAccount}
	for name := range t.Accounts.Domains {
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}

// LeafCert is the name, in the secrets directory, of a leaf node's certificate for account ("" for the
// global account of a topology without accounts).
func LeafCert(account string) string {
	if account == "" {
		return "leaf.pem"
	}
	return "leaf-" + account + ".pem"
}

// LeafSubject is the subject (RFC 2253, as nats-server prints it) of leaf's certificate for account:
// CN=<leaf>,OU=<account>, or CN=<leaf>,OU=leaf for the global account. The subject names no route
// (RouteSubject), so a member's certificate never passes for a leaf, nor a leaf's for a member.
func LeafSubject(leaf, account string) string {
	if account == "" {
		account = "leaf"
	}
	return "CN=" + leaf + ",OU=" + account
}

// SecretFiles are the files node keeps in its secrets directory: SecretFiles, and a leaf node's
// certificates (LeafCert) of a secured topology.
func (t *Topology) SecretFiles(node string) []string {
	files := slices.Clone(SecretFiles)
	if n, ok := t.Nodes[node]; !ok || n.Role != RoleNATSLeaf || t.Security == nil {
		return files
	}
	accounts := t.LeafAccounts()
	if accounts == nil {
		accounts = []string{""}
	}
	for _, a := range accounts {
		files = append(files, LeafCert(a))
	}
	return files
}
