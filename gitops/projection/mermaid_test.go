package projection_test

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/cimdeploy/cimdeploy/gitops/projection"
	"github.com/cimdeploy/cimdeploy/gitops/topology"
)

// goldenFile compares got with testdata/golden/<name> (go test -update rewrites it).
func goldenFile(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", "golden", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file (go test ./gitops/projection -update):\n%s", path, got)
	}
}

// TestMermaidGolden: the production cluster's chart, and a hostile one whose free texts try to close
// labels, open directives and inject HTML.
func TestMermaidGolden(t *testing.T) {
	t.Parallel()
	top := production(t)
	goldenFile(t, "mermaid-production.mmd", projection.Mermaid(top))

	hostile := *production(t)
	hostile.Domain.Purpose = "x\"] --> evil[\"<img src=x onerror=alert(1)> `md` #35; end; %%{init: {}}%% |pipe| &amp; ü"
	hostile.Domain.Administrator = strings.Repeat("ä", 200)
	hostile.Services.NATS.Cluster.Name = "c\"]\n"
	nodes := map[string]topology.Node{}
	for name, n := range hostile.Nodes {
		n.Proxmox.Host = "pve1\"]:::x"
		n.Cluster = "c\"]\n"
		nodes[name] = n
	}
	hostile.Nodes = nodes
	hostile.Roles = map[string]topology.Role{"x": {Name: "x", Module: "nixosModules/\"]end.nix"}}
	for name, n := range hostile.Nodes {
		if name == "nats-3" {
			n.Role, n.Cluster = "x", ""
			hostile.Nodes[name] = n
		}
	}
	out := projection.Mermaid(&hostile)
	goldenFile(t, "mermaid-hostile.mmd", out)
	// Every label is one quoted string without a quote, bracket, pipe, angle bracket other than <br/>,
	// backtick or newline inside it.
	labels := regexp.MustCompile(`"([^"]*)"`).FindAllStringSubmatch(string(out), -1)
	if len(labels) == 0 {
		t.Fatal("no labels")
	}
	for _, m := range labels {
		if inner := strings.ReplaceAll(m[1], "<br/>", ""); strings.ContainsAny(inner, "[]{}()|<>`&\n\"") {
			t.Errorf("label %q holds a Mermaid or HTML special", m[1])
		}
	}
	if n := strings.Count(string(out), `"`); n%2 != 0 {
		t.Errorf("%d quotes: a label is not closed", n)
	}
}

// TestMermaidFleet: clusters as subgraphs, leaves attached to their hub, storage and repository-role
// nodes in subgraphs of their roles.
func TestMermaidFleet(t *testing.T) {
	t.Parallel()
	out := projection.Mermaid(fleet(t))
	goldenFile(t, "mermaid-fleet.mmd", out)
	for _, want := range []string{
		`subgraph cluster1["NATS cluster cim-cluster"]`,
		`subgraph cluster2["NATS cluster edge"]`,
		`node_leaf_a1 -->|"leafnode :7422"| cluster1`,
		`subgraph role1["role ipld-storage, module nixosModules/ipld-storage.nix"]`,
		`node_cimstor[(`,
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("chart lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(string(out), "node_edge_1 <-->|\"route :6222\"| node_nats_1") {
		t.Error("a route between two clusters")
	}
}

// TestMermaidLargeClusterMesh: past MermaidMeshNodes nodes the routes go through one mesh node, so
// the edges grow with the nodes, not their square.
func TestMermaidLargeClusterMesh(t *testing.T) {
	t.Parallel()
	top := *production(t)
	base := top.Nodes["nats-1"]
	top.Nodes = map[string]topology.Node{}
	for i := range 40 {
		n := base
		n.Address = netip.AddrFrom4([4]byte{10, 0, 0, byte(100 + i)})
		top.Nodes[fmt.Sprintf("nats-%d", i+1)] = n
	}
	out := string(projection.Mermaid(&top))
	if routes := strings.Count(out, "<-->"); routes != 40 || !strings.Contains(out, "full mesh of 780 NATS routes") {
		t.Errorf("%d route edges, want 40 through the mesh node:\n%s", routes, out)
	}
}
