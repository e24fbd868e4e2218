package rollout_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/cimdeploy/cimdeploy/gitops/topology"
	"github.com/cimdeploy/cimdeploy/remote"
	"github.com/cimdeploy/cimdeploy/rollout"
)

// secretsDir writes every node's secret files (but those in skip, "node/file") under a new directory.
func secretsDir(t *testing.T, nodes []string, skip ...string) string {
	t.Helper()
	dir := t.TempDir()
	for _, n := range nodes {
		if err := os.MkdirAll(filepath.Join(dir, n), 0o700); err != nil {
			t.Fatal(err)
		}
		for _, f := range topology.SecretFiles {
			if slices.Contains(skip, n+"/"+f) {
				continue
			}
			if err := os.WriteFile(filepath.Join(dir, n, f), []byte("secret of "+n), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	return dir
}

// recordedSecrets is remote.SecretsDir's pre-flight, with the installs recorded instead of run (the
// fake nodes run no shell), each with the system the node ran at that moment.
type recordedSecrets struct {
	remote.SecretsDir
	mu       sync.Mutex
	installs []string // node=running system
}

func (s *recordedSecrets) Install(ctx context.Context, node string, r remote.Runner) error {
	if err := s.Check(node); err != nil {
		return err
	}
	cur, err := r.(rollout.System).Current(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.installs = append(s.installs, node+"="+cur)
	return err
}

// TestFakeSecretsInstalledBeforeTheSwitch: every node switched gets its secrets while it still runs
// its old system.
func TestFakeSecretsInstalledBeforeTheSwitch(t *testing.T) {
	t.Parallel()
	w := newFakeWorld(t, 3)
	w.top.Security = &topology.Security{SecretsDir: topology.DefaultSecrets, RouteSubject: topology.DefaultRouteSubject}
	sec := &recordedSecrets{SecretsDir: remote.SecretsDir{Dir: secretsDir(t, w.top.NodeNames()), Files: topology.SecretFiles,
		RemoteDir: topology.DefaultSecrets, Owner: "nats"}}
	w.r.Secrets = sec
	_, res, _ := w.rollout(t.Context(), t, rollout.Request{RunID: "run-b", Commit: "b", Targets: w.targets("b")})
	if res.Status != rollout.StatusSuccess {
		t.Fatalf("rollout %s: %s", res.Status, res.Error)
	}
	slices.Sort(sec.installs)
	var want []string
	for _, n := range w.top.NodeNames() {
		want = append(want, n+"="+base(n))
	}
	if !slices.Equal(sec.installs, want) {
		t.Errorf("installs %v, want %v (each before its node's switch)", sec.installs, want)
	}
}

// TestFakeSecretsPreflightRefuses: a node whose secret is missing refuses the whole rollout before any
// node is touched, naming the node and the file and no secret's contents.
func TestFakeSecretsPreflightRefuses(t *testing.T) {
	t.Parallel()
	w := newFakeWorld(t, 3)
	w.top.Security = &topology.Security{SecretsDir: topology.DefaultSecrets, RouteSubject: topology.DefaultRouteSubject}
	w.r.Secrets = rollout.NewSecrets(w.top, secretsDir(t, w.top.NodeNames(), "nats-3/node-key.pem"), "nats")
	_, res, _ := w.rollout(t.Context(), t, rollout.Request{RunID: "run-b", Commit: "b", Targets: w.targets("b")})
	if res.Status != rollout.StatusRefused || !strings.Contains(res.Error, "node nats-3") || !strings.Contains(res.Error, "node-key.pem") {
		t.Fatalf("rollout %s: %q, want refused naming nats-3 and node-key.pem", res.Status, res.Error)
	}
	if strings.Contains(res.Error, "secret of") || strings.Contains(w.log.String(), "secret of") {
		t.Errorf("a secret's contents in the result or the log: %q", res.Error)
	}
	for _, n := range w.top.NodeNames() {
		if s := w.systems[n]; s.Running() != base(n) || len(s.Activations()) != 0 {
			t.Errorf("%s was touched: runs %s, activations %v", n, s.Running(), s.Activations())
		}
	}
}

func TestNewSecretsOnlyForSecuredClusters(t *testing.T) {
	t.Parallel()
	top := testTopology(2)
	if s := rollout.NewSecrets(top, t.TempDir(), "nats"); s != nil {
		t.Errorf("unsecured cluster: %v", s)
	}
	top.Security = &topology.Security{SecretsDir: "/var/lib/nats/secrets"}
	if s := rollout.NewSecrets(top, "", "nats"); s != nil {
		t.Errorf("no directory: %v", s)
	}
	dir := secretsDir(t, []string{"nats-1", "nats-2"})
	s := rollout.NewSecrets(top, dir, "nats")
	if s == nil {
		t.Fatal("secured cluster: no secrets")
	}
	for _, n := range []string{"nats-1", "nats-2"} {
		if err := s.Check(n); err != nil {
			t.Errorf("%s: %v", n, err)
		}
	}
}

// A leaf node of a secured cluster needs its certificates for its leafnode connections besides the
// node's files; a member does not.
func TestNewSecretsOfALeaf(t *testing.T) {
	t.Parallel()
	top := testTopology(1)
	top.Security = &topology.Security{SecretsDir: "/var/lib/nats/secrets"}
	leaf := top.Nodes["nats-1"]
	leaf.Role, leaf.Cluster = topology.RoleNATSLeaf, "hub"
	top.Nodes["leaf-1"] = leaf
	dir := secretsDir(t, []string{"nats-1", "leaf-1"})
	s := rollout.NewSecrets(top, dir, "nats")
	if err := s.Check("nats-1"); err != nil {
		t.Errorf("member: %v", err)
	}
	if err := s.Check("leaf-1"); err == nil || !strings.Contains(err.Error(), "leaf.pem") {
		t.Errorf("leaf without its certificate: %v, want leaf.pem named", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "leaf-1", "leaf.pem"), []byte("certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.Check("leaf-1"); err != nil {
		t.Errorf("leaf with its certificate: %v", err)
	}
}
