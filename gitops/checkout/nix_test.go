package checkout_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/cimdeploy/cimdeploy/gitops/checkout"
	"github.com/cimdeploy/cimdeploy/nixrunner"
)

// nixEval evaluates attr of the flake in dir with real nix, offline, with its own fetcher cache.
func nixEval(t *testing.T, dir, attr string) (string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nix", "eval", "--raw", dir+"#"+attr)
	cmd.Env = append(nixrunner.Environ(nil, nixrunner.OfflineConfig), "XDG_CACHE_HOME="+t.TempDir())
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("nix eval %s#%s: %v\n%s", dir, attr, err, stderr.String())
	}
	return stdout.String(), stderr.String()
}

// Nix reads the workspace as a clean git tree: self.rev is the commit checked out.
func TestNixSeesRev(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("nix"); err != nil {
		t.Fatalf("nix is needed (CI installs nix-bin): %v", err)
	}
	o := newOrigin(t)
	flake := `{
  outputs = { self }: {
    # Not named rev: self holds the outputs too, so a dirty tree's self.rev would be this attribute.
    commit = self.rev or "dirty";
    modified = toString (self.lastModified or 0);
    files = builtins.concatStringsSep "," (builtins.attrNames (builtins.readDir self));
  };
}
`
	o.commit("first", map[string]string{"flake.nix": flake, "hosts/a.nix": "{ }\n"})
	o.commit("second", map[string]string{"hosts/b.nix": "{ }\n"})

	c, _ := newCache(t)
	ws := mustCheckout(t, c, checkout.Source{URL: o.dir}, "main")
	if rev, stderr := nixEval(t, ws.Dir, "commit"); rev != ws.Commit {
		t.Fatalf("nix sees self.rev = %q, want %s\n%s", rev, ws.Commit, stderr)
	}
	if lm, _ := nixEval(t, ws.Dir, "modified"); lm != strconv.FormatInt(ws.Time.Unix(), 10) {
		t.Errorf("nix sees self.lastModified = %s, want %d", lm, ws.Time.Unix())
	}
	if files, _ := nixEval(t, ws.Dir, "files"); files != "flake.nix,hosts" {
		t.Errorf("nix sees files %s, want flake.nix,hosts", files)
	}

	// A modified workspace is dirty to nix: the clean answer above is not a given.
	if err := os.WriteFile(filepath.Join(ws.Dir, "hosts", "a.nix"), []byte("{ x = 1; }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if rev, _ := nixEval(t, ws.Dir, "commit"); rev != "dirty" {
		t.Errorf("nix sees self.rev = %q in a modified workspace, want dirty", rev)
	}
}
