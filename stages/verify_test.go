package stages_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cimdeploy/cimdeploy/gitops/checkout"
	"github.com/cimdeploy/cimdeploy/gitops/trust"
	"github.com/cimdeploy/cimdeploy/pipeline"
	"github.com/cimdeploy/cimdeploy/stages"
)

// signedRepo makes a repository whose first commit is unsigned and second is signed with a new
// ed25519 key (real ssh-keygen and git), and returns it, the two commits and the trusted signers
// naming the key as alice@example.invalid.
func signedRepo(t *testing.T) (dir, unsigned, signed string, signers *trust.Signers) {
	t.Helper()
	dir = t.TempDir()
	keys := t.TempDir()
	key := filepath.Join(keys, "alice")
	sh := func(dir string, name string, args ...string) string {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1")
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s %v: %v", name, args, err)
		}
		return strings.TrimSpace(string(out))
	}
	sh(keys, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "alice", "-f", key)
	id := []string{"-c", "user.name=Alice", "-c", "user.email=alice@example.invalid"}
	sh(dir, "git", "init", "-q", "-b", "main")
	for i, sign := range []bool{false, true} {
		if err := os.WriteFile(filepath.Join(dir, "flake.nix"), []byte(strings.Repeat("{ }\n", i+1)), 0o644); err != nil {
			t.Fatal(err)
		}
		sh(dir, "git", "add", "flake.nix")
		args := append(id, "commit", "-q", "-m", "change", "--no-gpg-sign")
		if sign {
			args = append(id, "-c", "gpg.format=ssh", "-c", "user.signingkey="+key, "commit", "-q", "-m", "change", "-S")
		}
		sh(dir, "git", args...)
	}
	unsigned, signed = sh(dir, "git", "rev-parse", "HEAD~1"), sh(dir, "git", "rev-parse", "HEAD")
	pub, err := os.ReadFile(key + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(keys, "allowed_signers")
	if err := os.WriteFile(path, append([]byte("alice@example.invalid "), pub...), 0o644); err != nil {
		t.Fatal(err)
	}
	signers, err = trust.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return dir, unsigned, signed, signers
}

// TestVerifyAfterCheckout runs checkout then verify, as a deploy run does: a signed head passes with
// its signer noted, an unsigned one fails the run saying why.
func TestVerifyAfterCheckout(t *testing.T) {
	t.Parallel()
	repo, unsigned, signed, signers := signedRepo(t)
	work := t.TempDir()
	runner := &pipeline.Runner{Stages: []pipeline.Stage{
		stages.Checkout{Cache: &checkout.Cache{Dir: t.TempDir()}, Source: checkout.Source{URL: repo}, WorkDir: work},
		stages.Verify{Signers: signers},
		stages.Cleanup{WorkDir: work},
	}}

	res, err := runner.Run(t.Context(), &pipeline.Run{ID: pipeline.NewRunID(), Commit: signed, Kind: pipeline.KindDeploy})
	if err != nil {
		t.Fatal(err)
	}
	st := res.Stage("verify")
	if res.Status != pipeline.StatusSuccess || st == nil || len(st.Steps) != 1 {
		t.Fatalf("run %s (%s), verify stage %+v; want success with one step", res.Status, res.Error, st)
	}
	if step := st.Steps[0]; step.Node != "signature" || !strings.HasPrefix(step.Note, "signed by alice@example.invalid (SHA256:") {
		t.Errorf("step %+v, want the signature step noting alice's key", step)
	}

	res, err = runner.Run(t.Context(), &pipeline.Run{ID: pipeline.NewRunID(), Commit: unsigned, Kind: pipeline.KindDeploy})
	if err != nil {
		t.Fatal(err)
	}
	want := "verify signature: commit " + unsigned[:7] + " is not signed"
	if st := res.Stage("verify"); res.Status != pipeline.StatusFailed || st == nil || st.Error != want {
		t.Fatalf("run %s, verify stage %+v; want failed with %q", res.Status, st, want)
	}
	if !errors.Is(res.Failure(), trust.ErrUntrusted) {
		t.Errorf("failure %v does not wrap trust.ErrUntrusted", res.Failure())
	}
	if st := res.Stage("cleanup"); st == nil || st.Status != pipeline.StatusSuccess {
		t.Errorf("cleanup stage %+v, want it run", st)
	}
	if left, _ := os.ReadDir(work); len(left) != 0 {
		t.Errorf("workspaces left: %v", left)
	}
}

func TestVerifyWithoutWorkspace(t *testing.T) {
	t.Parallel()
	_, _, signed, signers := signedRepo(t)
	for _, c := range []struct {
		stage   stages.Verify
		wantErr string
	}{
		{stage: stages.Verify{Signers: signers}, wantErr: "no workspace"},
		{stage: stages.Verify{}, wantErr: "no trusted signers"},
	} {
		res, err := (&pipeline.Runner{Stages: []pipeline.Stage{c.stage}}).Run(t.Context(), &pipeline.Run{ID: pipeline.NewRunID(), Commit: signed})
		if err != nil {
			t.Fatal(err)
		}
		if res.Status != pipeline.StatusFailed || !strings.Contains(res.Error, c.wantErr) {
			t.Errorf("run %s (%s), want failed: %s", res.Status, res.Error, c.wantErr)
		}
	}
}
