package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cimdeploy/cimdeploy/gitops/projection"
)

// infraRepo makes a git repository from the event fixtures and their projection.
func infraRepo(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	gitCmd := func(args ...string) {
		cmd := exec.Command("git", append([]string{"-c", "user.name=t", "-c", "user.email=t@cim.local"}, args...)...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	gitCmd("init", "-q", "-b", "main")
	entries, _ := os.ReadDir(fixtures)
	os.MkdirAll(filepath.Join(dir, "events"), 0o755)
	for _, e := range entries {
		data, _ := os.ReadFile(filepath.Join(fixtures, e.Name()))
		os.WriteFile(filepath.Join(dir, "events", e.Name()), data, 0o644)
	}
	_, files, err := project(t.Context(), filepath.Join(dir, "events"), projection.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := projection.Write(dir, files); err != nil {
		t.Fatal(err)
	}
	gitCmd("add", "-A")
	gitCmd("commit", "-q", "-m", "cluster")
	return dir
}

func TestRunValidateOnlyRecordsHistoryAcrossRestarts(t *testing.T) {
	t.Parallel()
	repo := infraRepo(t)
	data := t.TempDir()
	stub, _ := filepath.Abs("../../fixtures/lab/nixpkgs")
	hm, _ := filepath.Abs("../../fixtures/lab/home-manager") // the fixtures have a domain admin
	args := []string{"run", "--repo", repo, "--rev", "main", "--validate-only", "--data-dir", data,
		"--override-input", "nixpkgs=path:" + stub, "--override-input", "home-manager=path:" + hm, "--nix-offline"}

	code, stdout, stderr := runCLI(t, args...)
	if code != exitOK {
		t.Fatalf("run exit %d\n%s\n%s", code, stdout, stderr)
	}
	for _, want := range []string{"stage build node nats-3 success", "STAGE", "run ", " success in "} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, stdout)
		}
	}
	// A second process (the CLI restarted) sees the first run, then records its own.
	code, stdout, _ = runCLI(t, append(args, "--json")...)
	if code != exitOK {
		t.Fatalf("second run exit %d", code)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	var last struct {
		Type string `json:"event_type"`
	}
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &last); err != nil || last.Type != "RunFinished" {
		t.Fatalf("--json does not end with RunFinished: %v %q", err, lines[len(lines)-1])
	}

	code, stdout, stderr = runCLI(t, "runs", "--data-dir", data, "--json")
	if code != exitOK {
		t.Fatalf("runs exit %d %s", code, stderr)
	}
	var runs []struct {
		ID, Status, Kind, Commit string
	}
	if err := json.Unmarshal([]byte(stdout), &runs); err != nil {
		t.Fatal(err)
	}
	if len(runs) != 2 || runs[0].Status != "success" || runs[1].Kind != "validate" || len(runs[0].Commit) != 40 {
		t.Fatalf("runs %+v", runs)
	}
}

func TestRunFailsOnDriftWithExitOne(t *testing.T) {
	t.Parallel()
	repo := infraRepo(t)
	module := filepath.Join(repo, "nixosModules", "nats-cluster.nix")
	data, _ := os.ReadFile(module)
	os.WriteFile(module, []byte(strings.Replace(string(data), "http_port = 8222", "http_port = 8223", 1)), 0o644)
	cmd := exec.Command("git", "-c", "user.name=t", "-c", "user.email=t@cim.local", "commit", "-qam", "hand edit")
	cmd.Dir = repo
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatal(err, string(out))
	}
	stub, _ := filepath.Abs("../../fixtures/lab/nixpkgs")
	code, stdout, stderr := runCLI(t, "run", "--repo", repo, "--validate-only", "--data-dir", t.TempDir(), "--override-input", "nixpkgs=path:"+stub, "--nix-offline")
	if code != exitFailed || !strings.Contains(stdout, "generate") || !strings.Contains(stderr, "differs from the projection") {
		t.Fatalf("exit %d\n%s\n%s", code, stdout, stderr)
	}
}

func TestRunUsageErrors(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"run", "--validate-only"},
		{"run", "--repo", ".", "--rev", "../etc", "--validate-only"},
		{"run", "--repo", ".", "--rev", "main^{tree}", "--validate-only"},
		{"run", "--repo", ".", "--validate-only", "--lxc-builder", "docker"},
		{"run", "--repo", "."},
	} {
		if code, _, stderr := runCLI(t, args...); code != exitUsage {
			t.Errorf("%v: exit %d, want %d (%s)", args, code, exitUsage, stderr)
		}
	}
}
