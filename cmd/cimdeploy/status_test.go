package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cimdeploy/cimdeploy/fixtures/lab"
)

// TestStatusOnLab deploys the lab once, then asks `cimdeploy status`: every node healthy at the
// deployed commit (exit 0); a node switched back by hand behind cimdeploy's back (exit 1, named, with
// why); a node whose nats-server died (exit 1, named).
func TestStatusOnLab(t *testing.T) {
	l := lab.Start(t, lab.Options{Nodes: 3})
	ctx := t.Context()
	commit, err := l.Repo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	before := map[string]string{}
	for _, n := range l.Nodes() {
		before[n.Name()] = n.CurrentSystem()
	}
	data := t.TempDir()
	repo := []string{"--repo", l.RepoDir(), "--rev", "main"}
	if code, stdout, stderr := runCLI(t, append(append([]string{"run"}, repo...), labFlags(l, data)...)...); code != exitOK {
		t.Fatalf("run = %d\n%s\n%s", code, stdout, stderr)
	}
	if err := l.WaitReady(ctx, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	status := append(append([]string{"status"}, repo...), clusterFlags(l, data)...)
	deployed := l.Node("nats-2").CurrentSystem()

	start := time.Now()
	code, stdout, stderr := runCLI(t, status...)
	t.Logf("status after the deploy took %s:\n%s", time.Since(start).Round(time.Millisecond), stdout)
	if code != exitOK || !strings.Contains(stdout, "all 3 nodes healthy, as deployed, at "+commit[:12]) ||
		!strings.Contains(stdout, "desired commit "+commit[:12]+": the last successful deploy of main, run ") {
		t.Fatalf("status = %d\n%s\n%s", code, stdout, stderr)
	}
	for _, name := range []string{"nats-1", "nats-2", "nats-3"} {
		if !containsLine(stdout, name, "2", commit[:12], commit[:12], "healthy", "no") &&
			!containsLine(stdout, name, "2", commit[:12], commit[:12], "healthy (leader)", "no") {
			t.Errorf("status lacks the line of %s at generation 2, commit %s, healthy, not drifted", name, commit[:12])
		}
	}
	code, stdout, _ = runCLI(t, append(status, "--json")...)
	var f struct {
		Desired string `json:"desired"`
		Leader  string `json:"leader"`
		Nodes   []struct {
			Node        string            `json:"node"`
			Generation  int               `json:"generation"`
			Commit      string            `json:"commit"`
			Healthy     bool              `json:"healthy"`
			Drifted     bool              `json:"drifted"`
			AtDesired   bool              `json:"at_desired"`
			Generations []json.RawMessage `json:"generations"`
		} `json:"nodes"`
	}
	if err := json.Unmarshal([]byte(stdout), &f); code != exitOK || err != nil || len(f.Nodes) != 3 || f.Desired != commit || f.Leader == "" {
		t.Fatalf("status --json = %d, %v\n%s", code, err, stdout)
	}
	for _, n := range f.Nodes {
		if n.Generation != 2 || n.Commit != commit || !n.Healthy || n.Drifted || !n.AtDesired || len(n.Generations) != 2 {
			t.Errorf("status --json: %+v", n)
		}
	}

	// An operator switches nats-2 back to the lab's first system by hand.
	n2 := l.Node("nats-2")
	if err := n2.SetProfile(ctx, before["nats-2"]); err != nil {
		t.Fatal(err)
	}
	if err := n2.Switch(ctx, before["nats-2"]); err != nil {
		t.Fatal(err)
	}
	if err := l.WaitReady(ctx, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr = runCLI(t, status...)
	t.Logf("status after nats-2 was switched by hand:\n%s%s", stdout, stderr)
	// nats-2 may be the JetStream meta leader: its health then reads "healthy (leader)".
	switchedLine := containsLine(stdout, "nats-2", "3", "unknown", commit[:12], "healthy", "switched by hand") ||
		containsLine(stdout, "nats-2", "3", "unknown", commit[:12], "healthy (leader)", "switched by hand")
	if code != exitFailed || !switchedLine ||
		!strings.Contains(stdout, "\nnats-2: switched by hand: it runs "+before["nats-2"]+", but cimdeploy last deployed "+deployed+" (generation 2, commit "+commit[:12]) ||
		!strings.Contains(stdout, "\nnats-2: at commit unknown, want "+commit[:12]+"\n") ||
		!strings.Contains(stderr, "cimdeploy: 1 of 3 nodes need attention: nats-2\n") || strings.Contains(stdout, "\nnats-1:") || strings.Contains(stdout, "\nnats-3:") {
		t.Fatalf("status = %d, want %d naming nats-2 only\n%s\n%s", code, exitFailed, stdout, stderr)
	}

	// nats-3's server dies: it is unhealthy, and its peers lose their route to it.
	if err := l.Node("nats-3").KillNATS(ctx); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr = runCLI(t, status...)
	t.Logf("status after nats-3's server died:\n%s%s", stdout, stderr)
	if code != exitFailed || !containsLine(stdout, "nats-3", "2", commit[:12], commit[:12], "unhealthy", "no") ||
		!strings.Contains(stdout, "\nnats-3: unhealthy: /healthz: ") || !strings.Contains(stderr, "need attention: ") || !strings.Contains(stderr, "nats-3\n") {
		t.Fatalf("status = %d, want %d naming nats-3\n%s\n%s", code, exitFailed, stdout, stderr)
	}
}

// containsLine reports whether out has a line that starts with fields, separated by any blanks.
func containsLine(out string, fields ...string) bool {
	want := strings.Join(fields, " ")
	for _, line := range strings.Split(out, "\n") {
		if got := strings.Join(strings.Fields(line), " "); got == want || strings.HasPrefix(got, want+" ") {
			return true
		}
	}
	return false
}

// TestStatusExitCodes: usage errors exit 2; a state store that cannot be reached exits 3.
func TestStatusExitCodes(t *testing.T) {
	t.Parallel()
	if code, _, stderr := runCLI(t, "status", "--data-dir", t.TempDir()); code != exitUsage {
		t.Errorf("status without --repo = %d, want %d\n%s", code, exitUsage, stderr)
	}
	dir := t.TempDir()
	key, known := filepath.Join(dir, "id_ed25519"), filepath.Join(dir, "known_hosts")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	if err := os.WriteFile(known, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runCLI(t, "status", "--repo", infraRepo(t), "--data-dir", t.TempDir(),
		"--nats-url", "nats://127.0.0.1:1", "--ssh-key-file", key, "--ssh-known-hosts", known)
	if code != exitInfra {
		t.Errorf("status with an unreachable store = %d, want %d\n%s\n%s", code, exitInfra, stdout, stderr)
	}
}
