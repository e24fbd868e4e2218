package topology_test

import (
	"slices"
	"testing"

	"github.com/cimdeploy/cimdeploy/gitops/events"
	"github.com/cimdeploy/cimdeploy/gitops/topology"
)

// A leaf of a secured topology with accounts folds: it carries SYS and each domain's account, and
// keeps a certificate per account besides the node's files; a member keeps only the node's files.
func TestSecuredLeafWithAccounts(t *testing.T) {
	t.Parallel()
	evs := add(allFixtures(t), events.ClusterSecured, `{"kind":"nats","management_networks":["10.0.0.0/24"],"client_networks":["10.0.0.0/19"]}`)
	evs = add(evs, events.NodeAdded, roleNode("leaf-1", 60, topology.RoleNATSLeaf, "cim-cluster"))
	top := must(topology.Fold(evs))
	accounts := top.LeafAccounts()
	if len(accounts) < 2 || !slices.Contains(accounts, topology.SystemAccount) || !slices.IsSorted(accounts) {
		t.Fatalf("leaf accounts %v, want SYS and the domains', sorted", accounts)
	}
	want := slices.Clone(topology.SecretFiles)
	for _, a := range accounts {
		want = append(want, "leaf-"+a+".pem")
	}
	if got := top.SecretFiles("leaf-1"); !slices.Equal(got, want) {
		t.Errorf("leaf secrets %v, want %v", got, want)
	}
	if got := top.SecretFiles("nats-1"); !slices.Equal(got, topology.SecretFiles) {
		t.Errorf("member secrets %v, want %v", got, topology.SecretFiles)
	}
	if s := topology.LeafSubject("leaf-1", "SYS"); s != "CN=leaf-1,OU=SYS" {
		t.Errorf("subject %q", s)
	}
}

// Without accounts, a secured leaf has one certificate, for the global account.
func TestSecuredLeafWithoutAccounts(t *testing.T) {
	t.Parallel()
	evs := add(fixtures(t), events.ClusterSecured, `{"kind":"nats","management_networks":["10.0.0.0/24"],"client_networks":["10.0.0.0/19"]}`)
	evs = add(evs, events.NodeAdded, roleNode("leaf-1", 60, topology.RoleNATSLeaf, "cim-cluster"))
	top := must(topology.Fold(evs))
	if got := top.SecretFiles("leaf-1"); !slices.Equal(got, append(slices.Clone(topology.SecretFiles), "leaf.pem")) || top.LeafAccounts() != nil {
		t.Errorf("leaf secrets %v, accounts %v", got, top.LeafAccounts())
	}
	if s := topology.LeafSubject("leaf-1", ""); s != "CN=leaf-1,OU=leaf" {
		t.Errorf("subject %q", s)
	}
}
