package topology_test

import (
	"strings"
	"testing"

	"github.com/cimdeploy/cimdeploy/gitops/events"
	"github.com/cimdeploy/cimdeploy/gitops/topology"
)

// The leafnode listener's port: 7422 by default, set by leafnodes.port, checked as every port is.
func TestLeafnodesPort(t *testing.T) {
	t.Parallel()
	if p := must(topology.Fold(fixtures(t))).Services.NATS.Leafnodes.Port; p != 7422 {
		t.Errorf("default leafnodes port %d, want 7422", p)
	}
	evs := add(fixtures(t), events.ServiceConfigured, `{"kind":"nats","settings":{"leafnodes":{"port":7500}}}`)
	if p := must(topology.Fold(evs)).Services.NATS.Leafnodes.Port; p != 7500 {
		t.Errorf("leafnodes port %d, want 7500", p)
	}
	for _, tc := range []struct{ name, settings, want string }{
		{"collision", `{"leafnodes":{"port":4222}}`, "port 4222 of nats.leafnodes.port is already used by nats.client_port"},
		{"out of range", `{"leafnodes":{"port":70000}}`, "data.settings.leafnodes.port"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, problems := topology.Fold(add(fixtures(t), events.ServiceConfigured, `{"kind":"nats","settings":`+tc.settings+`}`))
			if !strings.Contains(problems.Error(), tc.want) {
				t.Errorf("problems:\n%v\nwant %q", problems, tc.want)
			}
		})
	}
}

// A leaf of a topology with accounts but no TLS is refused at its NodeAdded: its accounts' leafnode
// connections authenticate with certificates (leaves.go).
func TestLeafRefusedWithAccounts(t *testing.T) {
	t.Parallel()
	evs := add(allFixtures(t), events.NodeAdded, roleNode("leaf-1", 60, topology.RoleNATSLeaf, "cim-cluster"))
	_, problems := topology.Fold(evs)
	if !strings.Contains(problems.Error(), `data.role: leaf node "leaf-1": a cluster with NATS accounts needs ClusterSecured for its leaf nodes`) {
		t.Errorf("problems:\n%v", problems)
	}
}
