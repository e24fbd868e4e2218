package nix

import (
	"encoding/base64"
	"encoding/hex"
	"flag"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite flake.nix's vendorHash with the one go mod vendor gives")

// vendorHashLine is flake.nix's vendorHash definition; its group is the SRI hash.
var vendorHashLine = regexp.MustCompile(`(?m)^(\s*vendorHash = ")(sha256-[A-Za-z0-9+/]{43}=)(";)`)

// TestVendorHash checks that flake.nix's vendorHash is what buildGoModule's goModules derivation gets:
// the NAR hash (recursive, sha256) of the vendor directory `go mod vendor` writes
// (nixpkgs pkgs/build-support/go/module.nix). The vendoring happens in a copy of the module in a
// temporary directory; the repository is left alone. With -update the test rewrites flake.nix.
func TestVendorHash(t *testing.T) {
	t.Parallel()
	requirePrograms(t, "go", "nix")
	flakePath := filepath.Join(repoRoot, "flake.nix")
	flake, err := os.ReadFile(flakePath)
	if err != nil {
		t.Fatal(err)
	}
	m := vendorHashLine.FindSubmatch(flake)
	if m == nil {
		t.Fatalf("%s: no line `vendorHash = \"sha256-...\";`", flakePath)
	}
	declared := string(m[2])

	// The module as buildGoModule's src sees it: no VCS metadata, no local state or build results.
	dir := t.TempDir()
	copyTree(t, repoRoot, dir, func(rel string, d fs.DirEntry) bool {
		base := filepath.Base(rel)
		return strings.HasPrefix(base, ".") || strings.HasPrefix(base, "result") || (rel == "vendor" && d.IsDir())
	})
	env := []string{"GOFLAGS=", "GOWORK=off", "GOTOOLCHAIN=local"}
	if _, stderr, err := runEnv(t.Context(), dir, env, "go", "mod", "vendor"); err != nil {
		t.Fatalf("go mod vendor: %v\n%s", err, stderr)
	}
	modules, err := os.ReadFile(filepath.Join(dir, "vendor", "modules.txt"))
	if err != nil || !strings.Contains(string(modules), "github.com/nats-io/nats-server/v2") {
		t.Fatalf("go mod vendor wrote no vendor/modules.txt naming the dependencies: %v", err)
	}

	out, stderr, err := run(t.Context(), dir, "nix", "hash", "path", "--type", "sha256", "--sri", filepath.Join(dir, "vendor"))
	if err != nil {
		t.Fatalf("nix hash path: %v\n%s", err, stderr)
	}
	got := strings.TrimSpace(out)
	if !strings.HasPrefix(got, "sha256-") {
		t.Fatalf("nix hash path printed %q, want an SRI sha256 hash", got)
	}
	// nix-hash, the older command, computes the same NAR hash (in hex: Nix 2.8's has no --sri).
	legacy, stderr, err := run(t.Context(), dir, "nix-hash", "--type", "sha256", filepath.Join(dir, "vendor"))
	if err != nil {
		t.Fatalf("nix-hash: %v\n%s", err, stderr)
	}
	sum, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(got, "sha256-"))
	if err != nil || hex.EncodeToString(sum) != strings.TrimSpace(legacy) {
		t.Fatalf("nix hash path says %s, nix-hash says %s (%v)", got, strings.TrimSpace(legacy), err)
	}

	if got == declared {
		return
	}
	if *update {
		updated := vendorHashLine.ReplaceAll(flake, []byte("${1}"+got+"${3}"))
		if err := os.WriteFile(flakePath, updated, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: vendorHash %s -> %s", flakePath, declared, got)
		return
	}
	t.Errorf("flake.nix: vendorHash = %q is stale: go.mod and go.sum vendor to %q.\n"+
		"Set vendorHash = \"%s\"; (or run go test ./nix -run TestVendorHash -update)", declared, got, got)
}

// TestVendorHashLineIsUnique guards the rewrite of -update: exactly one vendorHash definition.
func TestVendorHashLineIsUnique(t *testing.T) {
	t.Parallel()
	flake, err := os.ReadFile(filepath.Join(repoRoot, "flake.nix"))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(vendorHashLine.FindAll(flake, -1)); n != 1 {
		t.Fatalf("flake.nix has %d vendorHash definitions, want 1", n)
	}
	if !slices.Contains(strings.Fields(string(flake)), "vendorHash;") {
		t.Errorf("flake.nix defines vendorHash but does not pass it to buildGoModule (inherit ... vendorHash;)")
	}
}
