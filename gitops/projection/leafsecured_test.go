package projection_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cimdeploy/cimdeploy/gitops/events"
	"github.com/cimdeploy/cimdeploy/gitops/projection"
	"github.com/cimdeploy/cimdeploy/gitops/topology"
)

// securedFleetEvents are the fleet (fleetEvents: two clusters, two leaves of cim-cluster, a storage
// node, a repository role) with the fixtures' accounts (not their operators), secured by testdata/secured's
// ClusterSecured event (without the accounts unless withAccounts).
func securedFleetEvents(t testing.TB, withAccounts bool) []events.Event {
	t.Helper()
	all, problems := events.Load(t.Context(), "../../fixtures/events")
	if len(problems) > 0 {
		t.Fatal(problems)
	}
	evs := fleetEvents(t)
	data, err := os.ReadFile(filepath.Join("testdata", "secured", "cluster-secured.json"))
	if err != nil {
		t.Fatal(err)
	}
	var secured events.Event
	if err := json.Unmarshal(data, &secured); err != nil {
		t.Fatal(err)
	}
	for _, ev := range append(slices.Clone(all[9:]), secured) {
		if ev.Type == events.OperatorAdded || !withAccounts && ev.Type != events.ClusterSecured {
			continue // operators bring home-manager, which the offline build has no input for
		}
		seq := uint64(len(evs) + 1)
		ev.EventID, ev.Sequence, ev.CausationID = fmt.Sprintf("secured-fleet-%d", seq), seq, evs[len(evs)-1].EventID
		evs = append(evs, ev)
	}
	return evs
}

func securedFleet(t testing.TB) *topology.Topology {
	t.Helper()
	top, problems := topology.Fold(securedFleetEvents(t, true))
	if len(problems) > 0 {
		t.Fatal(problems)
	}
	if top.Security == nil || top.Accounts == nil {
		t.Fatal("the secured fleet has no ClusterSecured or no accounts")
	}
	return top
}

// TestGoldenSecuredFleet compares the projection of the secured fleet with accounts and leaves with
// testdata/golden/fleet-secured.
func TestGoldenSecuredFleet(t *testing.T) {
	t.Parallel()
	dir := filepath.Join("testdata", "golden", "fleet-secured")
	files := render(t, securedFleet(t), projection.Options{})
	if *update {
		if _, err := projection.Write(dir, files); err != nil {
			t.Fatal(err)
		}
		return
	}
	diff, err := projection.Diff(dir, files)
	if err != nil {
		t.Fatal(err)
	}
	if diff != "" {
		t.Errorf("fleet-secured differs from the golden files (go test ./gitops/projection -update):\n%s", diff)
	}
}

// TestSecuredLeafModules checks what the secured fleet's modules say of leaves: the hub maps each
// leaf's certificate per account, the leaf has one TLS remote per account with its certificate for
// it, every secret is a path in the secrets directory, the leafnode port is open only to the hub's
// leaves and the route port only to a cluster's own members.
func TestSecuredLeafModules(t *testing.T) {
	t.Parallel()
	top := securedFleet(t)
	files := map[string]string{}
	for _, f := range render(t, top, projection.Options{}) {
		files[f.Path] = string(f.Data)
	}
	cluster, leaf := files[projection.ModuleFile], files[projection.LeafModuleFile]
	for _, want := range []string{
		`verify_and_map = true;`,
		`authorization.users = leafUsers.${node.cluster};`,
		`user = "CN=leaf-a1,OU=SYS";`, `user = "CN=leaf-a2,OU=billing";`,
		`ip saddr { 10.0.1.4, 10.0.1.5 } tcp dport { 7422 } accept comment \"leafnodes: the leaves of cluster cim-cluster\"`,
		`ip saddr { 10.0.0.41, 10.0.0.42, 10.0.0.43 } tcp dport { 6222 } accept comment \"routes: the members of cluster cim-cluster\"`,
		`ip saddr { 10.0.1.1, 10.0.1.2, 10.0.1.3 } tcp dport { 6222 } accept comment \"routes: the members of cluster edge\"`,
		`networking.firewall.extraInputRules = firewall.${node.cluster};`,
	} {
		if !strings.Contains(cluster, want) {
			t.Errorf("nats-cluster.nix lacks %s", want)
		}
	}
	if strings.Contains(cluster, "10.0.1.1, 10.0.1.2, 10.0.1.3, 10.0.0") || strings.Contains(cluster, "10.0.0.43, 10.0.1.1") {
		t.Error("nats-cluster.nix opens a route port to another cluster's members")
	}
	for _, a := range top.LeafAccounts() {
		for _, want := range []string{`account = "` + a + `";`, `cert_file = "/var/lib/nats/secrets/leaf-` + a + `.pem";`} {
			if !strings.Contains(leaf, want) {
				t.Errorf("nats-leaf.nix lacks %s", want)
			}
		}
	}
	for _, want := range []string{`key_file = "/var/lib/nats/secrets/node-key.pem";`, `system_account = "SYS";`,
		`services.nats.validateConfig = false;`, `tcp dport { 4222 } accept comment \"clients\"`} {
		if !strings.Contains(leaf, want) {
			t.Errorf("nats-leaf.nix lacks %s", want)
		}
	}
	for _, bad := range []string{"7422 } accept", "6222 } accept", "/nix/store", "BEGIN"} {
		if strings.Contains(leaf, bad) || strings.Contains(cluster, "BEGIN") {
			t.Errorf("a module holds %q", bad)
		}
	}
}

// TestLeafRefusedWithAccountsUnsecured: the projection renders no leaf of a topology with accounts but
// no ClusterSecured (nothing would authenticate its accounts' connections); the fold reports the
// leaf's event first.
func TestLeafRefusedWithAccountsUnsecured(t *testing.T) {
	t.Parallel()
	top := fleet(t)
	top.Accounts = production(t).Accounts
	if _, err := projection.Render(top, projection.Options{}); err == nil || !strings.Contains(err.Error(), "leaf node leaf-a1") {
		t.Fatalf("Render = %v, want the leaf refused", err)
	}
}

// TestSecuredLeafWithoutAccounts: a secured fleet without accounts gives each leaf one remote, in the
// global account, with its certificate leaf.pem, mapped by the hub to a user bound to no account.
func TestSecuredLeafWithoutAccounts(t *testing.T) {
	t.Parallel()
	top, problems := topology.Fold(securedFleetEvents(t, false))
	if len(problems) > 0 || top.Accounts != nil || top.Security == nil {
		t.Fatalf("fold: %v (accounts %v)", problems, top.Accounts)
	}
	files := map[string]string{}
	for _, f := range render(t, top, projection.Options{}) {
		files[f.Path] = string(f.Data)
	}
	cluster, leaf := files[projection.ModuleFile], files[projection.LeafModuleFile]
	if !strings.Contains(cluster, "{\n        user = \"CN=leaf-a1,OU=leaf\";\n      }") || strings.Contains(cluster, "account = ") {
		t.Errorf("nats-cluster.nix: want leaf users without account:\n%s", cluster)
	}
	if !strings.Contains(leaf, `cert_file = "/var/lib/nats/secrets/leaf.pem";`) || strings.Count(leaf, "urls = ") != 1 || strings.Contains(leaf, "account") {
		t.Errorf("nats-leaf.nix: want one remote with leaf.pem, no account:\n%s", leaf)
	}
}
