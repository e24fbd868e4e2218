package cimdeploy_test

import (
	"context"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rhysd/actionlint"
)

// workflowFiles are the GitHub Actions workflows of this repository (every .yml and .yaml under
// .github) and the ready-to-copy one for infrastructure repositories in docs/examples.
func workflowFiles(t *testing.T) []string {
	t.Helper()
	var files []string
	for _, dir := range []string{".github", filepath.Join("docs", "examples")} {
		err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if !d.IsDir() && (strings.HasSuffix(path, ".yml") || strings.HasSuffix(path, ".yaml")) {
				files = append(files, path)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range []string{
		".github/workflows/ci.yml", ".github/workflows/flake.yml", ".github/workflows/release.yml",
		"docs/examples/infrastructure-ci.yml",
	} {
		found := false
		for _, f := range files {
			found = found || filepath.ToSlash(f) == want
		}
		if !found {
			t.Errorf("%s is missing (found %v)", want, files)
		}
	}
	return files
}

// newLinter is actionlint.NewLinter with colour off. NewLinter writes the colour package's global
// NoColor and printing errors reads it, so the tests that lint do not run in parallel.
func newLinter(t *testing.T, out *strings.Builder) *actionlint.Linter {
	t.Helper()
	linter, err := actionlint.NewLinter(out, &actionlint.LinterOptions{Color: actionlint.ColorOptionKindNever})
	if err != nil {
		t.Fatal(err)
	}
	return linter
}

// TestWorkflowsLint lints every workflow with actionlint (github.com/rhysd/actionlint, as a library):
// syntax, expressions and their types, contexts, action inputs, runner labels, cron, glob patterns,
// untrusted input in scripts. Its shellcheck and pyflakes passes are off: they need programs this
// machine does not have.
func TestWorkflowsLint(t *testing.T) {
	var out strings.Builder
	linter := newLinter(t, &out)
	for _, file := range workflowFiles(t) {
		errs, err := linter.LintFile(file, nil)
		if err != nil {
			t.Fatalf("actionlint %s: %v", file, err)
		}
		for _, e := range errs {
			t.Errorf("%s", e.Error())
		}
	}
	if t.Failed() {
		t.Logf("actionlint:\n%s", out.String())
	}
}

// TestWorkflowsLintFindsMistakes: the linter as configured does report a broken workflow (an unknown
// context and a job without runs-on), so a clean TestWorkflowsLint means something.
func TestWorkflowsLintFindsMistakes(t *testing.T) {
	linter := newLinter(t, &strings.Builder{})
	broken := "on: push\njobs:\n  a:\n    steps:\n      - run: echo ${{ gihtub.sha }}\n"
	errs, err := linter.Lint("broken.yml", []byte(broken), nil)
	if err != nil {
		t.Fatal(err)
	}
	var msgs []string
	for _, e := range errs {
		msgs = append(msgs, e.Error())
	}
	all := strings.Join(msgs, "\n")
	if !strings.Contains(all, "runs-on") || !strings.Contains(all, "gihtub") {
		t.Errorf("actionlint missed the missing runs-on or the unknown context:\n%s", all)
	}
}

// versionFlag is the -X flag setting cimdeploy's version at link time, in flake.nix and the release
// workflow: the symbol, then what it is set to.
var versionFlag = regexp.MustCompile(`-X ([A-Za-z0-9_./]+)=\$\{?([A-Za-z_]+)\}?`)

// TestVersionLdflags builds cimdeploy with the -X flag that flake.nix and the release workflow pass
// and checks that `cimdeploy version` prints the version given: the symbol exists and is what
// cmd/cimdeploy/version.go prints (a -X of a misspelt symbol is silently ignored by the linker).
func TestVersionLdflags(t *testing.T) {
	t.Parallel()
	var symbols []string
	for _, file := range []string{"flake.nix", filepath.Join(".github", "workflows", "release.yml")} {
		src, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		m := versionFlag.FindAllStringSubmatch(string(src), -1)
		if len(m) != 1 {
			t.Fatalf("%s: %d version flags (-X symbol=${VAR}), want 1: %v", file, len(m), m)
		}
		symbols = append(symbols, m[0][1])
	}
	if symbols[0] != symbols[1] {
		t.Fatalf("flake.nix sets %s, the release workflow %s: want the same symbol", symbols[0], symbols[1])
	}

	// A cold build of cimdeploy takes minutes on a small machine; the build cache makes it seconds.
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	bin := filepath.Join(t.TempDir(), "cimdeploy")
	const version = "v9.8.7-ldflags"
	build := exec.CommandContext(ctx, "go", "build", "-ldflags", "-s -w -X "+symbols[0]+"="+version, "-o", bin, "./cmd/cimdeploy")
	// Without VCS stamping, which would add " (<commit>)"; cgo as go vet compiled the packages, so the
	// build cache it filled serves this build too.
	build.Env = append(os.Environ(), "GOFLAGS=-buildvcs=false")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.CommandContext(ctx, bin, "version").Output()
	if err != nil {
		t.Fatalf("cimdeploy version: %v", err)
	}
	if got, want := strings.TrimSpace(string(out)), "cimdeploy "+version; got != want {
		t.Errorf("cimdeploy version printed %q, want %q", got, want)
	}
}
