package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cimdeploy/cimdeploy/fixtures/lab"
)

// TestDeployToLab deploys the lab's infrastructure repository end to end with the CLI: the plan of a
// dry run, `cimdeploy run` (checkout, generate, check, build, publish, rollout), the generations with
// their commit, a rollback of one node, and a second run that switches only that node again.
func TestDeployToLab(t *testing.T) {
	l := lab.Start(t, lab.Options{Nodes: 3})
	ctx := t.Context()
	commit, err := l.Repo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	labSystems := map[string]string{}
	for _, n := range l.Nodes() {
		labSystems[n.Name()] = n.CurrentSystem()
	}
	data := t.TempDir()
	common := append([]string{"--repo", l.RepoDir(), "--rev", "main"}, labFlags(l, data)...)
	look := append([]string{"--repo", l.RepoDir(), "--rev", "main"}, clusterFlags(l, data)...)
	withPVE := append([]string{"--proxmox-host", l.PVE().Address().String()}, common...)

	code, stdout, stderr := runCLI(t, append([]string{"rollout", "--all", "--dry-run"}, withPVE...)...)
	if code != exitOK || !strings.Contains(stderr, "dry run: nothing changed") || !strings.Contains(stdout, "3 of 3 node(s) to change") ||
		strings.Count(stdout, " switch ") != 3 || !strings.Contains(stdout, "(leader)") {
		t.Fatalf("rollout --dry-run = %d\n%s\n%s", code, stdout, stderr)
	}
	for _, n := range l.Nodes() {
		if n.CurrentSystem() != labSystems[n.Name()] {
			t.Fatalf("the dry run switched %s", n.Name())
		}
	}
	if uploaded, _ := filepath.Glob(filepath.Join(l.PVE().TemplateCache(), "*.tar.xz")); len(uploaded) != 0 {
		t.Errorf("the dry run uploaded templates: %v", uploaded)
	}

	start := time.Now()
	code, stdout, stderr = runCLI(t, append([]string{"run"}, withPVE...)...)
	t.Logf("cimdeploy run (deploy) took %s:\n%s", time.Since(start).Round(time.Millisecond), stdout)
	if code != exitOK {
		t.Fatalf("run = %d\n%s\n%s", code, stdout, stderr)
	}
	if uploaded, _ := filepath.Glob(filepath.Join(l.PVE().TemplateCache(), "nats-*.tar.xz")); len(uploaded) != 3 {
		t.Errorf("templates on pve after the deploy: %v", uploaded)
	}
	for _, want := range []string{"stage publish node nats-1 success", "stage rollout node nats-3 success", "generation 2, activation"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("run output lacks %q", want)
		}
	}
	for _, n := range l.Nodes() {
		if n.CurrentSystem() == labSystems[n.Name()] || !strings.Contains(n.CurrentSystem(), n.Name()) {
			t.Errorf("%s runs %s after the deploy", n.Name(), n.CurrentSystem())
		}
	}
	if err := l.WaitReady(ctx, 10*time.Second); err != nil {
		t.Fatal(err)
	}

	code, stdout, stderr = runCLI(t, append([]string{"generations", "--node", "nats-1", "--json"}, look...)...)
	var gens []struct {
		Generation int    `json:"generation"`
		Current    bool   `json:"current"`
		Running    bool   `json:"running"`
		Commit     string `json:"commit"`
		Revision   string `json:"revision"`
	}
	if err := json.Unmarshal([]byte(stdout), &gens); code != exitOK || err != nil || len(gens) != 2 {
		t.Fatalf("generations = %d, %v\n%s\n%s", code, err, stdout, stderr)
	}
	if g := gens[1]; g.Generation != 2 || !g.Current || !g.Running || g.Commit != commit || g.Revision != commit {
		t.Errorf("generation 2 %+v, want it current, running, from commit %s", g, commit)
	}
	code, stdout, _ = runCLI(t, append([]string{"generations", "--node", "nats-1"}, look...)...)
	if code != exitOK || !strings.Contains(stdout, commit[:12]) || !strings.Contains(stdout, "GENERATION") {
		t.Errorf("generations = %d\n%s", code, stdout)
	}

	code, stdout, stderr = runCLI(t, append([]string{"rollback", "--node", "nats-2", "--yes"}, common...)...)
	if code != exitOK || !strings.Contains(stdout, "nats-2     switch     success    2 -> 1") {
		t.Fatalf("rollback = %d\n%s\n%s", code, stdout, stderr)
	}
	if got := l.Node("nats-2").CurrentSystem(); got != labSystems["nats-2"] {
		t.Errorf("nats-2 runs %s after the rollback, want %s", got, labSystems["nats-2"])
	}

	// The same commit again: only the rolled back node is switched.
	code, stdout, stderr = runCLI(t, append([]string{"run"}, withPVE...)...)
	if code != exitOK || !strings.Contains(stdout, "stage rollout node nats-1 success") || !strings.Contains(stdout, "already at the target") {
		t.Fatalf("second run = %d\n%s\n%s", code, stdout, stderr)
	}
	if got := l.Node("nats-2").CurrentSystem(); got == labSystems["nats-2"] {
		t.Error("the second run did not switch nats-2 again")
	}
}

// labFlags are the flags of a command that switches l's nodes, with its state in data: SSH with the
// lab's key and known_hosts (clusterFlags), offline Nix, rollout timeouts short enough for a test and
// the lab's secrets directory.
func labFlags(l *lab.Lab, data string) []string {
	return append(clusterFlags(l, data), "--nix-offline",
		"--confirm-timeout", "1m", "--gate-timeout", "20s", "--gate-poll", "100ms", "--activation-timeout", "30s",
		"--preflight-timeout", "10s", "--secrets-dir", l.SecretsDir())
}

// clusterFlags are the flags of a command that only looks at l's nodes (generations): the state in
// data, SSH with the lab's key and known_hosts, the lab's NATS system user (its events define accounts).
func clusterFlags(l *lab.Lab, data string) []string {
	return []string{"--data-dir", data,
		"--ssh-key-file", l.ClientKey(), "--ssh-known-hosts", l.KnownHosts(), "--ssh-connect-timeout", "5s",
		"--system-nkey-file", l.NkeyFile(lab.SystemUser)}
}

func TestRolloutUsageErrors(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"rollout", "--repo", ".", "--yes"},
		{"rollout", "--repo", ".", "--all", "--node", "nats-1", "--yes"},
		{"rollout", "--all", "--yes"},
		{"rollout", "--repo", ".", "--all"}, // no terminal to confirm on
		{"run", "--repo", ".", "--confirm-timeout", "1m"},
		{"rollback", "--repo", ".", "--node", "nats-1", "--to-generation", "2", "--to-rev", "abcdef1", "--yes"},
		{"rollback", "--repo", ".", "--node", "nats-1", "--to-rev", "main", "--yes"},
		{"generations", "--repo", "."},
	} {
		if code, _, stderr := runCLI(t, args...); code != exitUsage {
			t.Errorf("%v: exit %d, want %d (%s)", args, code, exitUsage, stderr)
		}
	}
}
