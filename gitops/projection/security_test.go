package projection_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cimdeploy/cimdeploy/gitops/events"
	"github.com/cimdeploy/cimdeploy/gitops/projection"
	"github.com/cimdeploy/cimdeploy/gitops/topology"
)

// secured is the production fixtures plus testdata/secured's ClusterSecured event, appended to the log
// (its sequence and cause are set after the fixtures' last event, however many there are).
func secured(t testing.TB) *topology.Topology {
	t.Helper()
	evs, problems := events.Load(t.Context(), "../../fixtures/events")
	if len(problems) > 0 {
		t.Fatal(problems)
	}
	data, err := os.ReadFile(filepath.Join("testdata", "secured", "cluster-secured.json"))
	if err != nil {
		t.Fatal(err)
	}
	var ev map[string]any
	if err := json.Unmarshal(data, &ev); err != nil {
		t.Fatal(err)
	}
	last := evs[len(evs)-1]
	ev["sequence"] = last.Sequence + 1
	ev["event_id"] = fmt.Sprintf("secured-%d", last.Sequence+1)
	ev["causation_id"] = last.EventID
	if data, err = json.Marshal(ev); err != nil {
		t.Fatal(err)
	}
	more, problems := events.Parse("cluster-secured.json", data)
	if len(problems) > 0 {
		t.Fatal(problems)
	}
	evs = append(evs, more...)
	top, problems := topology.Fold(evs)
	if len(problems) > 0 {
		t.Fatal(problems)
	}
	return top
}

// TestGoldenSecured compares the projection of a secured cluster with testdata/golden/production-secured.
func TestGoldenSecured(t *testing.T) {
	t.Parallel()
	dir := filepath.Join("testdata", "golden", "production-secured")
	files := render(t, secured(t), projection.Options{})
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
		t.Errorf("production-secured differs from the golden files (go test ./gitops/projection -update):\n%s", diff)
	}
}

// TestSecuredModule checks what a secured cluster's module says: TLS routes mapped to the route
// subject, client TLS, secrets as paths on the node (never store paths), no port open to everyone, and
// each port opened to its own sources.
func TestSecuredModule(t *testing.T) {
	t.Parallel()
	module := modules(render(t, secured(t), projection.Options{}))
	for _, want := range []string{
		`allowedTCPPorts = [ ];`,
		`user = "CN=nats-route,O=cim";`,
		`verify_and_map = true;`,
		`cert_file = "/var/lib/nats/secrets/node.pem";`,
		`key_file = "/var/lib/nats/secrets/node-key.pem";`,
		`ca_file = "/var/lib/nats/secrets/ca.pem";`,
		`services.nats.validateConfig = false;`,
		`networking.nftables.enable = true;`,
		`ip saddr { 10.0.0.0/24 } tcp dport { 9100 } accept comment \"node exporter: management networks\"`,
		`ip saddr { 10.0.0.0/24 } tcp dport { 7777, 8222 } accept`,
		`ip saddr { 10.0.0.41, 10.0.0.42, 10.0.0.43 } tcp dport { 6222 } accept`,
		`ip saddr { 10.0.0.0/19, 192.168.10.0/24 } tcp dport { 4222 } accept`,
	} {
		if !strings.Contains(module, want) {
			t.Errorf("module lacks %q:\n%s", want, module)
		}
	}
	if strings.Count(module, "key_file") != 2 { // routes and clients
		t.Errorf("want the key in cluster.tls and tls:\n%s", module)
	}
}

// modules is the text of a member's modules: common.nix and nats-cluster.nix.
func modules(files []projection.File) string {
	var out string
	for _, f := range files {
		if f.Path == projection.CommonModuleFile || f.Path == projection.ModuleFile {
			out += string(f.Data)
		}
	}
	return out
}

// TestUnsecuredModuleUnchanged: without ClusterSecured the module opens every port and has no TLS.
func TestUnsecuredModuleUnchanged(t *testing.T) {
	t.Parallel()
	module := modules(render(t, production(t), projection.Options{}))
	if strings.Contains(module, "tls") || !strings.Contains(module, "allowedTCPPorts = [ 4222 6222 7777 8222 ]") ||
		!strings.Contains(module, "allowedTCPPorts = [ 9100 ]") {
		t.Errorf("unsecured modules:\n%s", module)
	}
}
