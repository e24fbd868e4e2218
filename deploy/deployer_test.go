package deploy

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/sethvargo/go-envconfig"
	"golang.org/x/crypto/ssh"

	"github.com/cimdeploy/cimdeploy/pipeline"
	"github.com/cimdeploy/cimdeploy/pipeline/store"
	"github.com/cimdeploy/cimdeploy/rollout/rollouttest"
)

// brokenRepo is a git repository whose one event does not parse: a validate run of it fails in the
// generate stage, before Nix is asked anything.
func brokenRepo(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "events"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "events", "0001-broken.json"), []byte("{\"event_id\": \n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"init", "-q", "-b", "main"}, {"add", "-A"}, {"commit", "-qm", "broken"}} {
		cmd := exec.Command("git", append([]string{"-c", "user.name=t", "-c", "user.email=t@cim.local"}, args...)...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	return dir
}

// recorder is a reporter that keeps the types of the events it receives, per run.
type recorder struct {
	mu    sync.Mutex
	types map[string][]string
}

func (r *recorder) Report(_ context.Context, ev pipeline.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.types[ev.AggregateID] = append(r.types[ev.AggregateID], ev.Type)
	return nil
}

// TestConcurrentRunsOverOneStore: a server keeps one store open and runs several validate runs at
// once through one Deployer; each run has its own run log and result, every run is recorded in the
// store, and the caller's reporters get every run's events.
func TestConcurrentRunsOverOneStore(t *testing.T) {
	t.Parallel()
	repo, data := brokenRepo(t), t.TempDir()
	cfg, err := Load(t.Context(), envconfig.MapLookuper(map[string]string{"CIMDEPLOY_REPO": repo, "CIMDEPLOY_DATA_DIR": data}))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(pipeline.KindValidate); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(t.Context(), cfg.Store, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	d, err := New(t.Context(), cfg, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{types: map[string][]string{}}

	const runs = 3
	results := make([]*pipeline.Result, runs)
	errs := make([]error, runs)
	var wg sync.WaitGroup
	for i := range runs {
		wg.Go(func() {
			run := &pipeline.Run{ID: pipeline.NewRunID(), Repo: d.Source().String(), Ref: "main", Trigger: pipeline.TriggerManual, Kind: pipeline.KindValidate}
			results[i], errs[i] = d.Run(t.Context(), run, RunOptions{Reporters: []pipeline.Reporter{rec}})
		})
	}
	wg.Wait()

	logs := map[string]bool{}
	for i, res := range results {
		if errs[i] != nil {
			t.Fatalf("run %d: %v", i, errs[i])
		}
		if res.Status != pipeline.StatusFailed || res.Stage("generate") == nil || res.Stage("generate").Status != pipeline.StatusFailed {
			t.Errorf("run %s: %s, want failed in generate (%s)", res.Run.ID, res.Status, res.Error)
		}
		log := d.LogFile(res.Run.ID)
		if _, err := os.Stat(log); err != nil || logs[log] {
			t.Errorf("run %s: run log %s: %v (seen before: %t)", res.Run.ID, log, err, logs[log])
		}
		logs[log] = true
		types := rec.types[res.Run.ID]
		if len(types) == 0 || types[len(types)-1] != pipeline.RunFinished {
			t.Errorf("run %s: the reporter got %v, want it to end with %s", res.Run.ID, types, pipeline.RunFinished)
		}
	}
	recorded, err := st.Runs(t.Context(), 0)
	if err != nil || len(recorded) != runs {
		t.Errorf("the store has %d runs (%v), want %d", len(recorded), err, runs)
	}
}

// TestStagesOfEachKind: a validate run stops after the build; a deploy run publishes and rolls out;
// an SSH key that does not parse is a *ConfigError.
func TestStagesOfEachKind(t *testing.T) {
	t.Parallel()
	key, kh := sshFiles(t)
	notAKey := filepath.Join(t.TempDir(), "id_ed25519")
	if err := os.WriteFile(notAKey, []byte("not a key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	repo, data := brokenRepo(t), t.TempDir()
	st, err := store.Open(t.Context(), store.Config{DataDir: data}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	deployer := func(key string, more ...string) *Deployer {
		env := map[string]string{"CIMDEPLOY_REPO": repo, "CIMDEPLOY_DATA_DIR": data,
			"CIMDEPLOY_SSH_KEY_FILE": key, "CIMDEPLOY_SSH_KNOWN_HOSTS": kh}
		for i := 0; i+1 < len(more); i += 2 {
			env[more[i]] = more[i+1]
		}
		cfg, err := Load(t.Context(), envconfig.MapLookuper(env))
		if err != nil {
			t.Fatal(err)
		}
		d, err := New(t.Context(), cfg, st, nil)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	names := func(d *Deployer, kind pipeline.Kind) (string, error) {
		plan, closeRun, err := d.Stages(kind, RunOptions{}, &strings.Builder{})
		if err != nil {
			return "", err
		}
		defer closeRun()
		var out []string
		for _, s := range plan {
			out = append(out, s.Name())
		}
		return strings.Join(out, " "), nil
	}
	d := deployer(key)
	if got, err := names(d, pipeline.KindValidate); err != nil || got != "checkout generate check build cleanup" {
		t.Errorf("validate stages: %s, %v", got, err)
	}
	if got, err := names(d, pipeline.KindDeploy); err != nil || got != "checkout generate check build publish rollout cleanup" {
		t.Errorf("deploy stages: %s, %v", got, err)
	}
	// Trusted signers check a deploy's commit right after checkout; an approval holds it before the
	// rollout. A validate run does neither.
	raw, err := os.ReadFile(key)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.ParsePrivateKey(raw)
	if err != nil {
		t.Fatal(err)
	}
	pub := ssh.MarshalAuthorizedKey(signer.PublicKey())
	signers := filepath.Join(t.TempDir(), "allowed_signers")
	if err := os.WriteFile(signers, append([]byte("operator@example.com "), pub...), 0o644); err != nil {
		t.Fatal(err)
	}
	guarded := deployer(key, "CIMDEPLOY_TRUSTED_SIGNERS", signers, "CIMDEPLOY_REQUIRE_APPROVAL", "true")
	if got, err := names(guarded, pipeline.KindDeploy); err != nil || got != "checkout verify generate check build publish approve rollout cleanup" {
		t.Errorf("deploy stages with signers and approval: %s, %v", got, err)
	}
	if got, err := names(guarded, pipeline.KindValidate); err != nil || got != "checkout generate check build cleanup" {
		t.Errorf("validate stages with signers and approval: %s, %v", got, err)
	}
	cfg, _ := Load(t.Context(), envconfig.MapLookuper(map[string]string{"CIMDEPLOY_REPO": repo, "CIMDEPLOY_DATA_DIR": data,
		"CIMDEPLOY_TRUSTED_SIGNERS": kh}))
	var ce *ConfigError
	if _, err := New(t.Context(), cfg, st, nil); !errors.As(err, &ce) || !strings.Contains(err.Error(), "CIMDEPLOY_TRUSTED_SIGNERS") {
		t.Errorf("New with a trusted-signers file that is not one: %v, want a *ConfigError naming the variable", err)
	}
	if _, err := names(deployer(notAKey), pipeline.KindDeploy); !errors.As(err, &ce) {
		t.Errorf("deploy stages with a key that does not parse: %v, want a *ConfigError", err)
	}
}

// eventsRepo is a git repository holding the production cluster's events (fixtures/events).
func eventsRepo(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.CopyFS(filepath.Join(dir, "events"), os.DirFS("../fixtures/events")); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"init", "-q", "-b", "main"}, {"add", "-A"}, {"commit", "-qm", "cluster"}} {
		cmd := exec.Command("git", append([]string{"-c", "user.name=t", "-c", "user.email=t@cim.local"}, args...)...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	return dir
}

// TestOpenCluster: the cluster's topology comes from the repository's events at the revision; events
// that do not fold are a *TopologyError naming the commit. No node is connected to before it is asked.
func TestOpenCluster(t *testing.T) {
	t.Parallel()
	key, kh := sshFiles(t)
	nkey := rollouttest.SystemNkeyFile(t) // the fixtures define accounts
	open := func(repo string) (*Cluster, error) {
		cfg, err := Load(t.Context(), envconfig.MapLookuper(map[string]string{"CIMDEPLOY_REPO": repo, "CIMDEPLOY_DATA_DIR": t.TempDir(),
			"CIMDEPLOY_SSH_KEY_FILE": key, "CIMDEPLOY_SSH_KNOWN_HOSTS": kh, "CIMDEPLOY_ROLLOUT_SYSTEM_NKEY_FILE": nkey}))
		if err != nil {
			t.Fatal(err)
		}
		if err := cfg.ValidateCluster(); err != nil {
			t.Fatal(err)
		}
		return OpenCluster(t.Context(), cfg, nil)
	}
	c, err := open(eventsRepo(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := strings.Join(c.Topology.NodeNames(), " "); got != "nats-1 nats-2 nats-3" || len(c.Commit) != 40 || len(c.Rollout.Systems) != 3 {
		t.Errorf("cluster: nodes %q, commit %q, %d systems", got, c.Commit, len(c.Rollout.Systems))
	}
	_, err = open(brokenRepo(t))
	var te *TopologyError
	if !errors.As(err, &te) || len(te.Problems) == 0 || len(te.Commit) != 40 || !strings.Contains(err.Error(), "0001-broken.json") {
		t.Errorf("OpenCluster of broken events = %v, want a *TopologyError", err)
	}
}
