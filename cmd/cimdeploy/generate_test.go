package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(t.Context(), args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

const fixtures = "../../fixtures/events"

func TestGenerateWritesThenChecks(t *testing.T) {
	t.Parallel()
	out := t.TempDir()
	code, stdout, stderr := runCLI(t, "generate", "--events", fixtures, "--out", out)
	if code != exitOK || !strings.Contains(stdout, "wrote flake.nix, nixosModules/common.nix, nixosModules/nats-cluster.nix, topology.nix") {
		t.Fatalf("generate = %d\n%s%s", code, stdout, stderr)
	}
	for _, f := range []string{"flake.nix", "topology.nix", "nixosModules/common.nix", "nixosModules/nats-cluster.nix"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Error(err)
		}
	}
	code, stdout, _ = runCLI(t, "generate", "--events", fixtures, "--out", out, "--check")
	if code != exitOK || !strings.Contains(stdout, "up to date") {
		t.Fatalf("check after generate = %d\n%s", code, stdout)
	}

	// A hand edit is drift: exit 1 with the diff.
	module := filepath.Join(out, "nixosModules", "nats-cluster.nix")
	data, _ := os.ReadFile(module)
	os.WriteFile(module, bytes.Replace(data, []byte("http_port = 8222"), []byte("http_port = 8223"), 1), 0o644)
	code, stdout, stderr = runCLI(t, "generate", "--events", fixtures, "--out", out, "--check")
	if code != exitFailed || !strings.Contains(stdout, "-      http_port = 8223;\n+      http_port = 8222;") || !strings.Contains(stderr, "differ from the projection") {
		t.Fatalf("check after edit = %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if after, _ := os.ReadFile(module); bytes.Contains(data, []byte("8223")) || !bytes.Contains(after, []byte("8223")) {
		t.Fatal("--check must not write")
	}
}

func TestGenerateJSON(t *testing.T) {
	t.Parallel()
	code, stdout, stderr := runCLI(t, "generate", "--events", fixtures, "--json")
	if code != exitOK {
		t.Fatalf("%d %s", code, stderr)
	}
	var top struct {
		Sequence int
		Nodes    map[string]struct{ Address string }
	}
	if err := json.Unmarshal([]byte(stdout), &top); err != nil {
		t.Fatal(err)
	}
	if top.Sequence < 9 || top.Nodes["nats-3"].Address != "10.0.0.43" {
		t.Fatalf("%+v", top)
	}
}

func TestGenerateReportsEveryProblem(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	entries, _ := os.ReadDir(fixtures)
	for _, e := range entries {
		data, _ := os.ReadFile(filepath.Join(fixtures, e.Name()))
		switch e.Name() {
		case "0003-node-added-nats-2.json":
			data = bytes.Replace(data, []byte(`"name": "nats-2"`), []byte(`"name": "nats_2"`), 1)
		case "0008-service-added-node-exporter.json":
			data = bytes.Replace(data, []byte(`9100`), []byte(`99999`), 1)
		}
		os.WriteFile(filepath.Join(dir, e.Name()), data, 0o644)
	}
	out := t.TempDir()
	code, _, stderr := runCLI(t, "generate", "--events", dir, "--out", out)
	if code != exitFailed {
		t.Fatalf("exit %d, want %d\n%s", code, exitFailed, stderr)
	}
	for _, want := range []string{
		"0003-node-added-nats-2.json:1: event 3", `data.name: "nats_2" is not an RFC 1123 label`,
		"0008-service-added-node-exporter.json:1: event 8", "data.settings.port: port 99999 is out of range",
		`data.nodes[1].name: unknown node "nats-2"`,
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr does not mention %q:\n%s", want, stderr)
		}
	}
	if entries, _ := os.ReadDir(out); len(entries) != 0 {
		t.Errorf("wrote %v despite problems", entries)
	}
}

func TestGenerateUsageErrors(t *testing.T) {
	t.Parallel()
	if code, _, _ := runCLI(t, "generate", "--check", "--json", "--events", fixtures); code != exitUsage {
		t.Errorf("--check --json exit %d", code)
	}
	if code, _, _ := runCLI(t, "generate", "--events", fixtures, "--lxc-builder", "docker", "--json"); code != exitUsage {
		t.Errorf("bad --lxc-builder exit %d", code)
	}
	if code, _, stderr := runCLI(t, "generate", "--events", filepath.Join(t.TempDir(), "none")); code != exitFailed || !strings.Contains(stderr, "no such file") {
		t.Errorf("missing events dir: exit %d %s", code, stderr)
	}
}

func TestVersion(t *testing.T) {
	t.Parallel()
	code, stdout, _ := runCLI(t, "version")
	if code != exitOK || !strings.HasPrefix(stdout, "cimdeploy ") {
		t.Fatalf("%d %q", code, stdout)
	}
}
