package nix

import (
	"encoding/json"
	"io/fs"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// packageFlake evaluates flake.nix's package through its overlay, with a buildGoModule that returns
// its arguments: the lab's stand-in for nixpkgs has no Go toolchain, so what is checked here is what
// flake.nix asks nixpkgs to build, from a commit of a git repository as a flake input.
const packageFlake = `{
  inputs.nixpkgs.url = "path:@STUB@";
  inputs.cimdeploy.url = "git+file://@FLAKE@";
  inputs.cimdeploy.inputs.nixpkgs.follows = "nixpkgs";
  outputs = { self, nixpkgs, cimdeploy }:
    let
      final = { buildGo126Module = args: args // { builder = "buildGo126Module"; }; };
      pkg = (cimdeploy.overlays.default final { }).cimdeploy;
    in {
      result = {
        inherit (pkg) pname version vendorHash subPackages ldflags doCheck builder env;
        inherit (pkg.meta) mainProgram;
        src = pkg.src.outPath;
        flake = cimdeploy.outPath;
        outputs = builtins.attrNames cimdeploy;
        modules = builtins.attrNames cimdeploy.nixosModules;
      };
    };
}
`

// TestFlakePackage checks flake.nix's package: buildGoModule (Go 1.26) of cmd/cimdeploy from the
// flake's own source, with the vendorHash TestVendorHash checks, the version being the commit's short
// hash (self.shortRev), passed with the -X flag cimdeploy version prints (TestVersionLdflags).
func TestFlakePackage(t *testing.T) {
	t.Parallel()
	requirePrograms(t, "nix", "git")
	flake := t.TempDir()
	copyTree(t, repoRoot, flake, func(rel string, d fs.DirEntry) bool {
		return rel != "flake.nix" && rel != "nix" && !strings.HasPrefix(rel, "nix/")
	})
	git := func(args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(t.Context(), "git", append([]string{"-c", "user.name=t", "-c", "user.email=t@example.invalid", "-c", "commit.gpgsign=false"}, args...)...)
		cmd.Dir = flake
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	git("init", "-q")
	git("add", ".")
	git("commit", "-q", "-m", "flake")
	rev := git("rev-parse", "--short=7", "HEAD")

	stub, err := filepath.Abs(filepath.Join(repoRoot, "fixtures", "lab", "nixpkgs"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"flake.nix": strings.NewReplacer("@STUB@", stub, "@FLAKE@", flake).Replace(packageFlake),
	})
	out, stderr, err := run(t.Context(), dir, "nix", "eval", "--json", "--no-write-lock-file", ".#result")
	if err != nil {
		t.Fatalf("nix eval: %v\n%s", err, stderr)
	}
	var r struct {
		Pname, Version, VendorHash, Builder, MainProgram, Src, Flake string
		SubPackages                                                  []string
		Ldflags                                                      []string
		DoCheck                                                      bool
		Env                                                          map[string]string
		Outputs, Modules                                             []string
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("nix eval output: %v\n%s", err, out)
	}
	if r.Pname != "cimdeploy" || r.Builder != "buildGo126Module" || r.MainProgram != "cimdeploy" {
		t.Errorf("pname %q, builder %q, mainProgram %q: want cimdeploy by buildGo126Module", r.Pname, r.Builder, r.MainProgram)
	}
	if r.Version != rev {
		t.Errorf("version = %q, want the commit's short hash %q", r.Version, rev)
	}
	if !slices.Contains(r.Ldflags, "-X main.version="+rev) {
		t.Errorf("ldflags = %v, want -X main.version=%s", r.Ldflags, rev)
	}
	if !slices.Equal(r.SubPackages, []string{"cmd/cimdeploy"}) || r.DoCheck || r.Env["CGO_ENABLED"] != "0" {
		t.Errorf("subPackages %v, doCheck %v, env %v: want cmd/cimdeploy, no check phase, CGO_ENABLED=0", r.SubPackages, r.DoCheck, r.Env)
	}
	if !strings.HasPrefix(r.VendorHash, "sha256-") {
		t.Errorf("vendorHash = %q", r.VendorHash)
	}
	if r.Src != r.Flake {
		t.Errorf("src = %s, want the flake's own source %s", r.Src, r.Flake)
	}
	for _, want := range []string{"apps", "checks", "devShells", "nixosModules", "overlays", "packages"} {
		if !slices.Contains(r.Outputs, want) {
			t.Errorf("flake outputs %v lack %s", r.Outputs, want)
		}
	}
	if !slices.Contains(r.Modules, "default") {
		t.Errorf("nixosModules = %v, want default", r.Modules)
	}
}
