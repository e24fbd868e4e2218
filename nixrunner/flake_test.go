package nixrunner

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// git runs git in dir with a fixed identity and returns its trimmed stdout.
func git(t *testing.T, dir string, args ...string) string {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Fatalf("this test needs git: install Debian's git (apt-get install git): %v", err)
	}
	cmd := exec.CommandContext(t.Context(), "git", append([]string{"-C", dir}, args...)...)
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.org",
		"GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.org", "GIT_CONFIG_GLOBAL=/dev/null")
	out, err := cmd.Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	return strings.TrimSpace(string(out))
}

// TestGitWorkspaces: a flake in the root of a git work tree is evaluated, built and checked as
// git+file:, with self.rev the commit, both for a full repository and for a shallow one holding only a
// commit that has parents (what gitops/checkout makes of every commit but a root one). Nix 2.8 refuses
// the shallow one unless the reference says ?shallow=1; 2.26 takes both.
func TestGitWorkspaces(t *testing.T) {
	t.Parallel()
	r := newRunner(t, Config{})
	repo, _ := writeFlake(t, `
    rev = self.rev or "dirty";
    packages.x86_64-linux.default = mk "ws" "echo ${self.rev or "dirty"} > $out";
    checks.x86_64-linux.ok = mk "ws-check" "echo checked > $out";`)
	git(t, repo, "init", "-q", "-b", "main")
	git(t, repo, "add", "flake.nix")
	git(t, repo, "commit", "-q", "-m", "first")
	if err := os.WriteFile(filepath.Join(repo, "README"), []byte("second\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	git(t, repo, "add", "README")
	git(t, repo, "commit", "-q", "-m", "second")
	head := git(t, repo, "rev-parse", "HEAD")

	shallow := filepath.Join(t.TempDir(), "ws")
	git(t, repo, "clone", "-q", "--depth", "1", "file://"+repo, shallow)
	if _, err := os.Stat(filepath.Join(shallow, ".git", "shallow")); err != nil {
		t.Fatalf("the clone is not shallow: %v", err)
	}

	for _, tc := range []struct {
		name, dir, wantRef string
	}{
		{name: "full", dir: repo, wantRef: "git+file://" + repo},
		{name: "shallow", dir: shallow, wantRef: "git+file://" + shallow + "?shallow=1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if ref, err := flakeRef(tc.dir); err != nil || ref != tc.wantRef {
				t.Fatalf("flakeRef = %q, %v; want %q", ref, err, tc.wantRef)
			}
			var rev string
			if err := r.Eval(t.Context(), tc.dir, "rev", &rev); err != nil {
				t.Fatal(err)
			}
			if rev != head {
				t.Errorf("self.rev = %q, want the commit %s", rev, head)
			}
			built, err := r.Build(t.Context(), tc.dir, []string{"packages.x86_64-linux.default"}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if b, err := os.ReadFile(built[0].Outputs["out"]); err != nil || strings.TrimSpace(string(b)) != head {
				t.Errorf("built %q: %q, %v; want the commit", built[0].Outputs["out"], b, err)
			}
			if err := r.FlakeCheck(t.Context(), tc.dir, nil); err != nil {
				t.Errorf("FlakeCheck: %v", err)
			}
		})
	}
}

// TestDiffClosures: nix store diff-closures names a dependency whose version changed between two
// systems, the way Nix 2.8 and 2.26 both print it ("dep: 1.0 → 2.0"), and says nothing for one closure
// against itself.
func TestDiffClosures(t *testing.T) {
	t.Parallel()
	r := newRunner(t, Config{})
	dir, _ := writeFlake(t, `
    dep1 = mk "dep-1.0" "echo one > $out";
    dep2 = mk "dep-2.0" "echo two two > $out";
    packages.x86_64-linux.a = mk "sys" "mkdir $out; echo ${self.dep1} > $out/dep";
    packages.x86_64-linux.b = mk "sys" "mkdir $out; echo ${self.dep2} > $out/dep";`)
	built, err := r.Build(t.Context(), dir, []string{"packages.x86_64-linux.a", "packages.x86_64-linux.b"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	a, b := built[0].Outputs["out"], built[1].Outputs["out"]
	diff, err := r.DiffClosures(t.Context(), a, b)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(diff, "dep: 1.0 → 2.0") {
		t.Errorf("DiffClosures(a, b) = %q, want it to say dep: 1.0 → 2.0", diff)
	}
	if same, err := r.DiffClosures(t.Context(), a, a); err != nil || same != "" {
		t.Errorf("DiffClosures(a, a) = %q, %v; want nothing", same, err)
	}
	_, err = r.DiffClosures(t.Context(), a, "/nix/store/00000000000000000000000000000000-missing")
	asError(t, err, KindEval)
}

// TestBuildKeepsOrder: each Built belongs to its attribute, whatever the order of the attributes and of
// the derivations' hashes (Nix 2.8 lists nix build --json results sorted, not in the order asked), even
// when the derivations have the same name. Both orders are asked, so one of them is not the sorted one.
func TestBuildKeepsOrder(t *testing.T) {
	t.Parallel()
	r := newRunner(t, Config{})
	dir, _ := writeFlake(t, `
    packages.x86_64-linux.a = mk "same" "echo a > $out";
    packages.x86_64-linux.b = mk "same" "echo b > $out";`)
	for _, attrs := range [][]string{{"a", "b"}, {"b", "a"}} {
		full := []string{"packages.x86_64-linux." + attrs[0], "packages.x86_64-linux." + attrs[1]}
		built, err := r.Build(t.Context(), dir, full, nil)
		if err != nil {
			t.Fatal(err)
		}
		for i, b := range built {
			got, err := os.ReadFile(b.Outputs["out"])
			if b.Attr != full[i] || err != nil || strings.TrimSpace(string(got)) != attrs[i] {
				t.Errorf("Build(%v)[%d] = %+v holding %q (%v), want the output of %s", attrs, i, b, got, err, attrs[i])
			}
		}
	}
}
