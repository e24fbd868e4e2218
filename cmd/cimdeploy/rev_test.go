package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestRunRevAsOperatorsTypeIt: --rev takes what git takes for a commit, resolves it once and says the
// full commit id; the run works on that commit (here it fails at generate: the commit has drift).
func TestRunRevAsOperatorsTypeIt(t *testing.T) {
	t.Parallel()
	repo := infraRepo(t)
	module := filepath.Join(repo, "nixosModules", "nats-cluster.nix")
	data, _ := os.ReadFile(module)
	os.WriteFile(module, []byte(strings.Replace(string(data), "http_port = 8222", "http_port = 8223", 1)), 0o644)
	git := func(args ...string) string {
		cmd := exec.Command("git", append([]string{"-c", "user.name=t", "-c", "user.email=t@cim.local"}, args...)...)
		cmd.Dir = repo
		out, err := cmd.Output()
		if err != nil {
			t.Fatal(err, string(out))
		}
		return strings.TrimSpace(string(out))
	}
	git("commit", "-qam", "hand edit")
	head := git("rev-parse", "HEAD")
	dataDir := t.TempDir()
	for _, rev := range []string{head[:7], "HEAD^0", "main~0"} {
		code, stdout, stderr := runCLI(t, "run", "--repo", repo, "--rev", rev, "--validate-only", "--data-dir", dataDir, "--nix-offline")
		if code != exitFailed || !strings.Contains(stdout, "--rev "+rev+" is commit "+head+"\n") ||
			!strings.Contains(stdout, "at "+head[:12]) || !strings.Contains(stderr, "differs from the projection") {
			t.Errorf("run --rev %s = %d\n%s\n%s", rev, code, stdout, stderr)
		}
	}
	code, stdout, stderr := runCLI(t, "run", "--repo", repo, "--rev", "HEAD~9", "--validate-only", "--data-dir", dataDir, "--nix-offline")
	if code != exitFailed || !strings.Contains(stderr, "HEAD~9") || !strings.Contains(stderr, "root commit") {
		t.Errorf("run --rev HEAD~9 = %d\n%s\n%s", code, stdout, stderr)
	}
}
