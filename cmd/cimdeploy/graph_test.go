package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestGraphPrintsTheChart: graph prints the projection's golden chart of the fixtures; --markdown
// wraps it in a mermaid block.
func TestGraphPrintsTheChart(t *testing.T) {
	t.Parallel()
	want, err := os.ReadFile("../../gitops/projection/testdata/golden/mermaid-production.mmd")
	if err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runCLI(t, "graph", "--events", fixtures)
	if code != exitOK || stdout != string(want) {
		t.Fatalf("graph = %d\n%s\n%s", code, stdout, stderr)
	}
	code, stdout, _ = runCLI(t, "graph", "--events", fixtures, "--markdown")
	if code != exitOK || !strings.HasPrefix(stdout, "# Topology\n") || !strings.Contains(stdout, "```mermaid\n"+string(want)+"```\n") {
		t.Fatalf("graph --markdown = %d\n%s", code, stdout)
	}
	if code, _, stderr := runCLI(t, "graph", "--events", filepath.Join(t.TempDir(), "none")); code != exitFailed || !strings.Contains(stderr, "no such file") {
		t.Errorf("missing events: %d %s", code, stderr)
	}
}

// TestGenerateGraph: generate --graph FILE writes the chart with the flake, and --check compares it.
func TestGenerateGraph(t *testing.T) {
	t.Parallel()
	out := t.TempDir()
	code, stdout, stderr := runCLI(t, "generate", "--events", fixtures, "--out", out, "--graph", "docs/topology.md")
	if code != exitOK || !strings.Contains(stdout, "docs/topology.md") {
		t.Fatalf("generate --graph = %d\n%s\n%s", code, stdout, stderr)
	}
	chart := filepath.Join(out, "docs", "topology.md")
	data, err := os.ReadFile(chart)
	if err != nil || !strings.Contains(string(data), "```mermaid\nflowchart TB\n") {
		t.Fatalf("%s: %v\n%s", chart, err, data)
	}
	if code, stdout, _ := runCLI(t, "generate", "--events", fixtures, "--out", out, "--graph", "docs/topology.md", "--check"); code != exitOK {
		t.Fatalf("check = %d\n%s", code, stdout)
	}
	os.WriteFile(chart, []byte(strings.Replace(string(data), "nats-2", "nats-9", 1)), 0o644)
	code, stdout, _ = runCLI(t, "generate", "--events", fixtures, "--out", out, "--graph", "docs/topology.md", "--check")
	if code != exitFailed || !strings.Contains(stdout, "+++ b/docs/topology.md") {
		t.Fatalf("check after an edit = %d\n%s", code, stdout)
	}
	for _, bad := range []string{"../topology.md", "/x.md", "a//b.md", "flake.nix"} {
		if code, _, stderr := runCLI(t, "generate", "--events", fixtures, "--out", out, "--graph", bad); code != exitUsage || !strings.Contains(stderr, "--graph") {
			t.Errorf("--graph %q = %d %s, want a usage error", bad, code, stderr)
		}
	}
}
