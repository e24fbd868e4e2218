package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cimdeploy/cimdeploy/fixtures/lab"
)

// TestDeployCommitsWithHistory works the way users do: a clone of the lab's infrastructure repository
// gains commit after commit (an event, `cimdeploy generate`, git commit), and each is deployed with
// `cimdeploy run`: the second and third commit of the history, a pull request head (validated only), and
// a commit two behind the tip. Every workspace of a commit with parents is a shallow repository, which
// Nix 2.8 refuses unless told, so this is the test of every deploy after a repository's first.
func TestDeployCommitsWithHistory(t *testing.T) {
	l := lab.Start(t, lab.Options{Nodes: 3})
	ctx := t.Context()
	first, err := l.Repo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	repo := newUserRepo(t, l.RepoDir())
	data := t.TempDir()
	deployArgs := append([]string{"--repo", repo.dir, "--proxmox-host", l.PVE().Address().String()}, labFlags(l, data)...)
	lookArgs := append([]string{"--repo", repo.dir}, clusterFlags(l, data)...)
	deploy := func(rev string) string {
		t.Helper()
		start := time.Now()
		code, stdout, stderr := runCLI(t, append([]string{"run", "--rev", rev}, deployArgs...)...)
		t.Logf("cimdeploy run --rev %s: exit %d in %s", rev, code, time.Since(start).Round(time.Millisecond))
		if code != exitOK {
			t.Fatalf("run --rev %s = %d\n%s\n%s", rev, code, stdout, stderr)
		}
		return stdout
	}
	// running checks that every node runs the generation built from commit.
	running := func(commit string) {
		t.Helper()
		for _, n := range l.Nodes() {
			code, stdout, stderr := runCLI(t, append([]string{"generations", "--node", n.Name(), "--json"}, lookArgs...)...)
			var gens []struct {
				Running  bool   `json:"running"`
				Commit   string `json:"commit"`
				Revision string `json:"revision"`
			}
			if err := json.Unmarshal([]byte(stdout), &gens); code != exitOK || err != nil {
				t.Fatalf("generations --node %s = %d, %v\n%s\n%s", n.Name(), code, err, stdout, stderr)
			}
			found := false
			for _, g := range gens {
				if g.Running {
					found = true
					if g.Commit != commit || g.Revision != commit {
						t.Errorf("%s runs the generation of commit %s (configurationRevision %s), want %s", n.Name(), g.Commit, g.Revision, commit)
					}
				}
			}
			if !found {
				t.Errorf("%s: no running generation in %+v", n.Name(), gens)
			}
		}
	}

	second := repo.commit(t, "nats: lame duck 45s", map[string]any{"lame_duck_duration": "45s"})
	out := deploy("main")
	if !strings.Contains(out, "stage rollout node nats-3 success") {
		t.Errorf("the second commit's run did not roll out nats-3:\n%s", out)
	}
	running(second)

	third := repo.commit(t, "nats: grace period 15s", map[string]any{"lame_duck_grace_period": "15s"})
	deploy("main")
	running(third)

	// A pull request's head, fetched by its GitHub ref, is validated (checkout, generate, check, build)
	// and deploys nothing.
	repo.git(t, "checkout", "-q", "-b", "feature")
	pr := repo.commit(t, "nats: lame duck 2m", map[string]any{"lame_duck_duration": "2m"})
	repo.git(t, "checkout", "-q", "main")
	repo.git(t, "update-ref", "refs/pull/7/head", pr)
	repo.git(t, "branch", "-q", "-D", "feature")
	code, stdout, stderr := runCLI(t, "run", "--validate-only", "--repo", repo.dir, "--rev", "refs/pull/7/head", "--data-dir", data, "--nix-offline")
	if code != exitOK || !strings.Contains(stdout, short(pr)) || !strings.Contains(stdout, "stage build node nats-2 success") {
		t.Fatalf("run --validate-only --rev refs/pull/7/head = %d\n%s\n%s", code, stdout, stderr)
	}
	running(third)

	// Three more commits; the one two behind the tip is deployed by its id.
	target := repo.commit(t, "nats: lame duck 50s", map[string]any{"lame_duck_duration": "50s"})
	repo.commit(t, "nats: lame duck 55s", map[string]any{"lame_duck_duration": "55s"})
	repo.commit(t, "nats: lame duck 60s", map[string]any{"lame_duck_duration": "60s"})
	if got := repo.git(t, "rev-parse", "main~2"); got != target {
		t.Fatalf("main~2 = %s, want %s", got, target)
	}
	deploy(target)
	running(target)
	if err := l.WaitReady(ctx, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if first == second || second == third {
		t.Fatalf("commits do not differ: %s %s %s", first, second, third)
	}
}

// userRepo is a clone of an infrastructure repository that a test commits to, as a user would.
type userRepo struct{ dir string }

func newUserRepo(t *testing.T, origin string) *userRepo {
	t.Helper()
	r := &userRepo{dir: filepath.Join(t.TempDir(), "infra")}
	if out, err := exec.CommandContext(t.Context(), "git", "clone", "-q", origin, r.dir).CombinedOutput(); err != nil {
		t.Fatalf("git clone: %v\n%s", err, out)
	}
	r.git(t, "config", "user.name", "Test Operator")
	r.git(t, "config", "user.email", "operator@example.com")
	return r
}

// lastEvent is the sequence and id of the checked-out tree's last event.
func (r *userRepo) lastEvent(t *testing.T) (int, string) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(r.dir, "events", "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no events in the clone: %v", err)
	}
	seq, last := 0, ""
	for _, f := range files {
		var ev struct {
			EventID  string `json:"event_id"`
			Sequence int    `json:"sequence"`
		}
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(data, &ev); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if ev.Sequence > seq {
			seq, last = ev.Sequence, ev.EventID
		}
	}
	return seq, last
}

func (r *userRepo) git(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = r.dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// commit adds a ServiceConfigured event with the NATS settings, regenerates the Nix with `cimdeploy
// generate`, commits both and returns the commit's id.
func (r *userRepo) commit(t *testing.T, msg string, settings map[string]any) string {
	t.Helper()
	seq, last := r.lastEvent(t)
	seq++
	id := fmt.Sprintf("00000000-0000-4000-8000-%012d", seq)
	ev := map[string]any{
		"event_id": id, "aggregate_id": "nats", "sequence": seq,
		"timestamp":      time.Date(2025, 12, 1, 9, 0, seq, 0, time.UTC).Format(time.RFC3339),
		"correlation_id": "00000000-0000-4000-8000-000000000100", "causation_id": last,
		"event_type": "ServiceConfigured",
		"data":       map[string]any{"kind": "nats", "settings": settings},
	}
	data, err := json.MarshalIndent(ev, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(r.dir, "events", fmt.Sprintf("%04d-serviceconfigured.json", seq))
	if err := os.WriteFile(file, append(data, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runCLI(t, "generate", "--events", filepath.Join(r.dir, "events"), "--out", r.dir)
	if code != exitOK {
		t.Fatalf("generate = %d\n%s\n%s", code, stdout, stderr)
	}
	r.git(t, "add", "-A")
	r.git(t, "commit", "-q", "-m", msg)
	return r.git(t, "rev-parse", "HEAD")
}
