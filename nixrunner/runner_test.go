package nixrunner

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// These tests run Debian's Nix 2.8 (nix-bin) for real, offline, as the calling user without sandbox;
// a missing nix fails them. Every flake gets a nonce (test name + random number) in each derivation, so
// tests never share store paths, not even with an earlier run of themselves.

// newRunner returns a Runner on the real nix with Offline set, logging to the test's output.
func newRunner(t *testing.T, cfg Config) *Runner {
	t.Helper()
	if _, err := exec.LookPath("nix"); err != nil {
		t.Fatalf("these tests need real Nix: install Debian's nix-bin (apt-get install nix-bin): %v", err)
	}
	cfg.Offline = true
	r, err := New(t.Context(), cfg, slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// writeFlake writes a flake whose outputs are the Nix attribute set body outputs, which may call
// mk "name" "shell script" for a derivation built by /bin/sh. It returns the flake's directory and the
// nonce, which every builder of it has in its environment as nonce=<nonce>.
func writeFlake(t *testing.T, outputs string) (dir, nonce string) {
	t.Helper()
	dir = t.TempDir()
	nonce = fmt.Sprintf("%s-%d", strings.ReplaceAll(t.Name(), "/", "-"), rand.Uint64())
	flake := fmt.Sprintf(`{
  outputs = { self }: let
    mk = name: script: derivation {
      inherit name;
      system = "x86_64-linux";
      builder = "/bin/sh";
      args = [ "-c" script ];
      PATH = "/usr/bin:/bin";
      nonce = %s;
    };
  in {
%s
  };
}
`, strconv.Quote(nonce), outputs)
	if err := os.WriteFile(filepath.Join(dir, "flake.nix"), []byte(flake), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, nonce
}

// recorder collects progress events; Build calls it from one goroutine and never after returning.
type recorder struct{ events []Progress }

func (r *recorder) progress(p Progress) { r.events = append(r.events, p) }

func (r *recorder) lines() []string {
	var out []string
	for _, e := range r.events {
		if e.Line != "" {
			out = append(out, e.Line)
		}
	}
	return out
}

func asError(t *testing.T, err error, want ErrorKind) *Error {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is no *Error", err, err)
	}
	if e.Kind != want {
		t.Fatalf("Kind = %v, want %v; error: %v", e.Kind, want, err)
	}
	return e
}

func containsLine(lines []string, sub string) bool {
	return slices.ContainsFunc(lines, func(l string) bool { return strings.Contains(l, sub) })
}

func TestNewFindsNix(t *testing.T) {
	t.Parallel()
	r := newRunner(t, Config{})
	if r.Version() == "" || !strings.HasPrefix(r.Version(), "2.") {
		t.Errorf("Version() = %q", r.Version())
	}
	_, err := New(t.Context(), Config{Nix: filepath.Join(t.TempDir(), "no-nix-here")}, nil)
	if err == nil || !strings.Contains(err.Error(), "nix-bin") {
		t.Errorf("New with a missing nix = %v, want an error naming nix-bin", err)
	}
	if _, err := New(t.Context(), Config{Timeout: -1}, nil); err == nil {
		t.Error("New accepted a negative timeout")
	}
}

func TestBuild(t *testing.T) {
	t.Parallel()
	r := newRunner(t, Config{})
	dir, _ := writeFlake(t, `
    dep = mk "dep" "echo building the dependency; mkdir -p $out";
    packages.x86_64-linux.hello = mk "hello" "echo hello from the builder ${self.dep}; echo second line >&2; mkdir -p $out";`)
	var runLog bytes.Buffer
	var rec recorder
	built, err := r.WithLog(&runLog).Build(t.Context(), dir, []string{"packages.x86_64-linux.hello"}, rec.progress)
	if err != nil {
		t.Fatal(err)
	}
	if len(built) != 1 || built[0].Attr != "packages.x86_64-linux.hello" || !strings.HasSuffix(built[0].DrvPath, "-hello.drv") {
		t.Fatalf("Build = %+v", built)
	}
	out := built[0].Outputs["out"]
	if fi, err := os.Stat(out); err != nil || !fi.IsDir() || !strings.HasSuffix(out, "-hello") {
		t.Errorf("output %q: %v", out, err)
	}

	lines := rec.lines()
	if !containsLine(lines, "hello from the builder /nix/store/") || !slices.Contains(lines, "second line") ||
		!slices.Contains(lines, "building the dependency") {
		t.Errorf("progress log lines = %q, want the builders' lines", lines)
	}
	last := rec.events[len(rec.events)-1]
	if last.Done != 2 || last.Expected != 2 || last.Running != 0 || last.Failed != 0 {
		t.Errorf("last progress = %+v, want 2 of 2 builds done", last)
	}
	var sawActivity, sawLineDrv bool
	for _, e := range rec.events {
		sawActivity = sawActivity || strings.Contains(e.Activity, built[0].DrvPath)
		sawLineDrv = sawLineDrv || e.Line == "second line" && e.Drv == built[0].DrvPath
	}
	if !sawActivity || !sawLineDrv {
		t.Errorf("progress never named %s as activity (%v) or as the drv of a line (%v)", built[0].DrvPath, sawActivity, sawLineDrv)
	}
	if !strings.Contains(runLog.String(), `@nix {"action":"result","fields":["second line"]`) {
		t.Errorf("run log lacks the raw internal-json stream:\n%s", runLog.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "flake.lock")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a flake.lock was written into the flake: %v", err)
	}

	// Built already: the same call builds nothing and returns the same outputs.
	var again recorder
	rebuilt, err := r.Build(t.Context(), dir, []string{"packages.x86_64-linux.hello"}, again.progress)
	if err != nil {
		t.Fatal(err)
	}
	if rebuilt[0].Outputs["out"] != out || len(again.lines()) != 0 {
		t.Errorf("second Build = %+v with lines %q, want the same output and no build", rebuilt, again.lines())
	}
}

func TestBuildFailure(t *testing.T) {
	t.Parallel()
	r := newRunner(t, Config{})
	dir, _ := writeFlake(t, `
    packages.x86_64-linux.fail = mk "fail" "echo one; echo two; echo three; echo cimdeploy-build-boom >&2; exit 3";
    packages.x86_64-linux.top = mk "top" "echo ${self.packages.x86_64-linux.fail} > $out";`)
	var rec recorder
	_, err := r.Build(t.Context(), dir, []string{"packages.x86_64-linux.top"}, rec.progress)
	e := asError(t, err, KindBuild)
	if !containsLine(e.LastLines, "cimdeploy-build-boom") || !containsLine(e.LastLines, "failed with exit code 3") {
		t.Errorf("LastLines = %q, want the builder's line and nix's error", e.LastLines)
	}
	if e.Op != "build" || e.ExitCode == 0 || !slices.Contains(e.Args, "--no-write-lock-file") {
		t.Errorf("Error = %+v", e)
	}
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) {
		t.Error("the *exec.ExitError is not reachable")
	}
	if !strings.Contains(err.Error(), "cimdeploy-build-boom") {
		t.Errorf("Error() = %q does not show the last lines", err)
	}
	// The failing builder's own words, not the dependent's "1 dependencies ... failed to build".
	if want := "fail failed: two | three | cimdeploy-build-boom"; e.Cause != want {
		t.Errorf("Cause = %q, want %q", e.Cause, want)
	}
	if first, _, _ := strings.Cut(err.Error(), "\n"); !strings.HasSuffix(first, ": fail failed: two | three | cimdeploy-build-boom") {
		t.Errorf("the first line of Error() = %q does not end with the cause", first)
	}
	if last := rec.events[len(rec.events)-1]; last.Failed != 1 {
		t.Errorf("last progress = %+v, want 1 failed", last)
	}
}

func TestEvalError(t *testing.T) {
	t.Parallel()
	r := newRunner(t, Config{})
	dir, _ := writeFlake(t, `
    packages.x86_64-linux.broken = throw "cimdeploy-eval-boom";`)
	_, err := r.Build(t.Context(), dir, []string{"packages.x86_64-linux.broken"}, nil)
	e := asError(t, err, KindEval)
	if !containsLine(e.LastLines, "error: cimdeploy-eval-boom") || e.ExitCode != 1 {
		t.Errorf("Error = %+v, want exit status 1 and the thrown message", e)
	}
	var v any
	err = r.Eval(t.Context(), dir, "packages.x86_64-linux.missing", &v)
	e = asError(t, err, KindEval)
	if !containsLine(e.LastLines, "does not provide attribute") {
		t.Errorf("LastLines = %q", e.LastLines)
	}

	// An evaluation error names the file, line and column it points at in the flake.
	dir, _ = writeFlake(t, `
    packages.x86_64-linux.missing = { a = 1; }.cimdeployMissing;`)
	_, err = r.Build(t.Context(), dir, []string{"packages.x86_64-linux.missing"}, nil)
	e = asError(t, err, KindEval)
	if want := "flake.nix:13:37: attribute 'cimdeployMissing' missing"; e.Cause != want {
		t.Errorf("Cause = %q, want %q", e.Cause, want)
	}
}

func TestEval(t *testing.T) {
	t.Parallel()
	r := newRunner(t, Config{})
	dir, _ := writeFlake(t, `
    info = { name = "cimdeploy"; nodes = [ "nats-1" "nats-2" ]; size = 3; };`)
	var info struct {
		Name  string   `json:"name"`
		Nodes []string `json:"nodes"`
		Size  int      `json:"size"`
	}
	if err := r.Eval(t.Context(), dir, "info", &info); err != nil {
		t.Fatal(err)
	}
	if info.Name != "cimdeploy" || len(info.Nodes) != 2 || info.Nodes[1] != "nats-2" || info.Size != 3 {
		t.Errorf("Eval = %+v", info)
	}
	var wrong int
	if err := r.Eval(t.Context(), dir, "info.name", &wrong); err == nil || KindOf(err) != 0 {
		t.Errorf("decoding a string into an int: %v, want a plain decode error", err)
	}
}

func TestOutPathAndValid(t *testing.T) {
	t.Parallel()
	r := newRunner(t, Config{})
	dir, _ := writeFlake(t, `
    packages.x86_64-linux.a = mk "a" "mkdir -p $out";
    packages.x86_64-linux.b = mk "b" "mkdir -p $out";`)
	ctx := t.Context()
	a, err := r.OutPath(ctx, dir, "packages.x86_64-linux.a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := r.OutPath(ctx, dir, "packages.x86_64-linux.b")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(a, "/nix/store/") || !strings.HasSuffix(a, "-a") || a == b {
		t.Fatalf("OutPath = %q, %q", a, b)
	}
	valid, err := r.Valid(ctx, a, b)
	if err != nil {
		t.Fatal(err)
	}
	if valid[a] || valid[b] || len(valid) != 2 {
		t.Errorf("Valid before building = %v, want both unbuilt", valid)
	}

	built, err := r.Build(ctx, dir, []string{"packages.x86_64-linux.a"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if built[0].Outputs["out"] != a {
		t.Errorf("Build built %s, OutPath said %s", built[0].Outputs["out"], a)
	}
	valid, err = r.Valid(ctx, a, b, a)
	if err != nil {
		t.Fatal(err)
	}
	if !valid[a] || valid[b] {
		t.Errorf("Valid after building a = %v, want a built and b not", valid)
	}

	if v, err := r.Valid(ctx); err != nil || len(v) != 0 {
		t.Errorf("Valid() = %v, %v", v, err)
	}
	if _, err := r.Valid(ctx, "relative/path"); err == nil {
		t.Error("Valid accepted a relative path")
	}
	_, err = r.Valid(ctx, "/tmp/not-in-the-store")
	asError(t, err, KindEval)
}

func TestOverrideInputs(t *testing.T) {
	t.Parallel()
	dep := t.TempDir()
	depFlake := fmt.Sprintf(`{ outputs = { self }: { value = "from the override %d"; }; }`, rand.Uint64())
	if err := os.WriteFile(filepath.Join(dep, "flake.nix"), []byte(depFlake), 0o644); err != nil {
		t.Fatal(err)
	}
	top := t.TempDir()
	topFlake := `{
  inputs.dep.url = "github:cimdeploy/does-not-exist";
  outputs = { self, dep }: { value = dep.value; };
}`
	if err := os.WriteFile(filepath.Join(top, "flake.nix"), []byte(topFlake), 0o644); err != nil {
		t.Fatal(err)
	}
	r := newRunner(t, Config{OverrideInputs: map[string]string{"dep": "path:" + dep}})
	var v string
	if err := r.Eval(t.Context(), top, "value", &v); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(v, "from the override ") {
		t.Errorf("value = %q", v)
	}
	if _, err := os.Stat(filepath.Join(top, "flake.lock")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a flake.lock was written into the flake: %v", err)
	}
}

const failingCheck = `
    checks.x86_64-linux.foo = mk "check-foo" "echo cimdeploy-check-says-no; exit 1";`

const passingCheck = `
    checks.x86_64-linux.foo = mk "check-foo" "echo all good; mkdir -p $out";`

func TestFlakeCheck(t *testing.T) {
	t.Parallel()
	r := newRunner(t, Config{})
	t.Run("passes", func(t *testing.T) {
		t.Parallel()
		dir, _ := writeFlake(t, passingCheck)
		var rec recorder
		if err := r.FlakeCheck(t.Context(), dir, rec.progress); err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(rec.lines(), "all good") {
			t.Errorf("progress lines = %q", rec.lines())
		}
	})
	t.Run("failing check derivation", func(t *testing.T) {
		t.Parallel()
		dir, _ := writeFlake(t, failingCheck)
		err := r.FlakeCheck(t.Context(), dir, nil)
		e := asError(t, err, KindCheckFailed)
		if !containsLine(e.LastLines, "cimdeploy-check-says-no") || !containsLine(e.LastLines, "check-foo.drv") {
			t.Errorf("LastLines = %q", e.LastLines)
		}
	})
	t.Run("evaluation error", func(t *testing.T) {
		t.Parallel()
		dir, _ := writeFlake(t, `
    packages.x86_64-linux.default = throw "cimdeploy-check-eval-boom";`)
		e := asError(t, r.FlakeCheck(t.Context(), dir, nil), KindCheckFailed)
		if !containsLine(e.LastLines, "cimdeploy-check-eval-boom") {
			t.Errorf("LastLines = %q", e.LastLines)
		}
	})
}

func TestFlakeCheckCached(t *testing.T) {
	t.Parallel()
	r := newRunner(t, Config{})
	breakFlake := func(t *testing.T, dir string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, "flake.nix"), []byte("{ this is not nix"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	lock := []byte(`{"nodes":{"root":{}},"root":"root","version":7}`)

	t.Run("passed verdict skips nix", func(t *testing.T) {
		t.Parallel()
		dir, _ := writeFlake(t, passingCheck)
		if err := os.WriteFile(filepath.Join(dir, "flake.lock"), lock, 0o644); err != nil {
			t.Fatal(err)
		}
		cache := &countingCache{}
		cached, err := r.FlakeCheckCached(t.Context(), cache, commitA, dir, nil)
		if err != nil || cached {
			t.Fatalf("first check = %v, %v; want a fresh pass", cached, err)
		}
		if !cache.lastSave.Passed || cache.lastSave.NixVersion != r.Version() || cache.lastSave.CheckedAt.IsZero() {
			t.Errorf("stored verdict = %+v", cache.lastSave)
		}
		// If nix ran again it would fail on the broken flake.
		breakFlake(t, dir)
		cached, err = r.FlakeCheckCached(t.Context(), cache, commitA, dir, nil)
		if err != nil || !cached {
			t.Fatalf("second check = %v, %v; want a cached pass", cached, err)
		}
		if gets, puts := cache.counts(); gets != 2 || puts != 1 {
			t.Errorf("cache calls: %d gets, %d puts; want 2, 1", gets, puts)
		}
		// Another commit misses the cache and runs nix on the broken flake.
		cached, err = r.FlakeCheckCached(t.Context(), cache, "1123456789abcdef0123456789abcdef01234567", dir, nil)
		if cached {
			t.Error("another commit hit the cache")
		}
		asError(t, err, KindCheckFailed)
	})

	t.Run("failed verdict is cached with its lines", func(t *testing.T) {
		t.Parallel()
		dir, _ := writeFlake(t, failingCheck)
		cache := &countingCache{}
		cached, err := r.FlakeCheckCached(t.Context(), cache, commitA, dir, nil)
		first := asError(t, err, KindCheckFailed)
		if cached || cache.lastSave.Passed || !containsLine(cache.lastSave.LastLines, "cimdeploy-check-says-no") {
			t.Fatalf("first check: cached %v, stored %+v", cached, cache.lastSave)
		}
		breakFlake(t, dir) // a nix run now would fail differently
		cached, err = r.FlakeCheckCached(t.Context(), cache, commitA, dir, nil)
		again := asError(t, err, KindCheckFailed)
		if !cached || !slices.Equal(again.LastLines, first.LastLines) {
			t.Errorf("second check: cached %v, lines %q; want the saved %q", cached, again.LastLines, first.LastLines)
		}
	})

	t.Run("broken cache is ignored", func(t *testing.T) {
		t.Parallel()
		dir, _ := writeFlake(t, passingCheck)
		cache := &countingCache{fail: true}
		cached, err := r.FlakeCheckCached(t.Context(), cache, commitA, dir, nil)
		if err != nil || cached {
			t.Errorf("check with a failing cache = %v, %v", cached, err)
		}
		if gets, puts := cache.counts(); gets != 1 || puts != 1 {
			t.Errorf("cache calls: %d gets, %d puts", gets, puts)
		}
	})

	t.Run("no cache and a bad commit", func(t *testing.T) {
		t.Parallel()
		dir, _ := writeFlake(t, passingCheck)
		if cached, err := r.FlakeCheckCached(t.Context(), nil, commitA, dir, nil); err != nil || cached {
			t.Errorf("check without cache = %v, %v", cached, err)
		}
		if _, err := r.FlakeCheckCached(t.Context(), &countingCache{}, "main", dir, nil); err == nil || KindOf(err) != 0 {
			t.Errorf("a branch name as commit: %v, want a plain error", err)
		}
	})
}

// sleeper is a flake whose builder says "sleeping" and sleeps 300 s.
const sleeper = `
    packages.x86_64-linux.sleep = mk "sleep" "echo sleeping; sleep 300; mkdir -p $out";`

func TestTimeout(t *testing.T) {
	t.Parallel()
	r := newRunner(t, Config{Timeout: 3 * time.Second})
	dir, nonce := writeFlake(t, sleeper)
	start := time.Now()
	_, err := r.Build(t.Context(), dir, []string{"packages.x86_64-linux.sleep"}, nil)
	e := asError(t, err, KindTimeout)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("errors.Is(%v, DeadlineExceeded) is false", err)
	}
	if d := time.Since(start); d > 3*time.Second+DefaultKillGrace {
		t.Errorf("Build returned after %v", d)
	}
	if e.ExitCode == 0 {
		t.Errorf("ExitCode = 0")
	}
	waitGone(t, func(p proc) bool { return p.hasEnv("nonce=" + nonce) }, "builder of "+nonce)
}

func TestCancelStopsProcessGroup(t *testing.T) {
	t.Parallel()
	r := newRunner(t, Config{})
	dir, nonce := writeFlake(t, sleeper)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()

	// When the builder says "sleeping", find nix (its command line names the flake) and the builder
	// (its environment has the nonce), then cancel.
	var nixProc proc
	var builders []proc
	var once sync.Once
	progress := func(p Progress) {
		if p.Line != "sleeping" {
			return
		}
		once.Do(func() {
			for _, p := range procs() {
				if p.comm == "nix" && strings.Contains(p.cmdline(), "path:"+dir) {
					nixProc = p
				}
				if p.hasEnv("nonce=" + nonce) {
					builders = append(builders, p)
				}
			}
			cancel()
		})
	}
	_, err := r.Build(ctx, dir, []string{"packages.x86_64-linux.sleep"}, progress)
	asError(t, err, KindCanceled)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("errors.Is(%v, Canceled) is false", err)
	}
	if nixProc.pid == 0 || nixProc.pgid != nixProc.pid {
		t.Fatalf("nix process %+v: not found, or not the leader of its own process group", nixProc)
	}
	if len(builders) == 0 {
		t.Fatal("found no builder process while it slept")
	}
	waitGone(t, func(p proc) bool { return p.pgid == nixProc.pgid }, fmt.Sprintf("process group %d", nixProc.pgid))
	waitGone(t, func(p proc) bool { return p.hasEnv("nonce=" + nonce) }, "builder of "+nonce)
}

// TestNewBareNameIsLookedUpInPATH: the default "nix" is looked up in PATH even where the working
// directory has a directory called nix (a repository's nix/), as a shell does.
func TestNewBareNameIsLookedUpInPATH(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "nix"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	want, err := exec.LookPath("nix")
	if err != nil {
		t.Fatalf("no nix in PATH: %v", err)
	}
	r, err := New(t.Context(), Config{Nix: "nix"}, nil)
	if err != nil {
		t.Fatalf("New with nix/ in the working directory: %v", err)
	}
	if abs, _ := filepath.Abs(want); r.nix != abs {
		t.Errorf("nix = %s, want %s from PATH", r.nix, abs)
	}
}
