package stages_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cimdeploy/cimdeploy/gitops/checkout"
	"github.com/cimdeploy/cimdeploy/gitops/events"
	"github.com/cimdeploy/cimdeploy/gitops/projection"
	"github.com/cimdeploy/cimdeploy/gitops/topology"
	"github.com/cimdeploy/cimdeploy/nixrunner"
	"github.com/cimdeploy/cimdeploy/pipeline"
	"github.com/cimdeploy/cimdeploy/stages"
)

// git runs the git CLI in dir.
func git(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", append([]string{"-c", "user.name=test", "-c", "user.email=test@cim.local", "-c", "commit.gpgsign=false"}, args...)...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// infraRepo makes an infrastructure repository from the production fixtures: events/ plus the
// projection, committed on main.
func infraRepo(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	git(t, dir, "init", "-q", "-b", "main")
	src := "../fixtures/events"
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(dir, "events"), 0o755)
	for _, e := range entries {
		data, _ := os.ReadFile(filepath.Join(src, e.Name()))
		os.WriteFile(filepath.Join(dir, "events", e.Name()), data, 0o644)
	}
	evs, problems := events.Load(t.Context(), filepath.Join(dir, "events"))
	top, more := topology.Fold(evs)
	if problems = append(problems, more...); len(problems) > 0 {
		t.Fatal(problems)
	}
	files, err := projection.Render(top, projection.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := projection.Write(dir, files); err != nil {
		t.Fatal(err)
	}
	git(t, dir, "add", "-A")
	git(t, dir, "commit", "-q", "-m", "the NATS cluster")
	return dir
}

// nixpkgs returns a flake standing in for nixpkgs: the lab's stub, with the node named in faults
// broken in the given way: "eval" (its toplevel throws), "build" (its toplevel's builder fails) or
// "slow" (its toplevel builds for five minutes).
func nixpkgs(t *testing.T, faults map[string]string) string {
	t.Helper()
	stub, err := filepath.Abs("../fixtures/lab/nixpkgs")
	if err != nil {
		t.Fatal(err)
	}
	if len(faults) == 0 {
		return "path:" + stub
	}
	dir := t.TempDir()
	// The slow builder sleeps for 300.<nanoseconds>s: a command line no other process has.
	marker := fmt.Sprintf("300.%09d", time.Now().UnixNano()%1e9)
	var cases strings.Builder
	for node, fault := range faults {
		fmt.Fprintf(&cases, "%q = %q; ", node, fault)
	}
	flake := fmt.Sprintf(`{
  inputs.stub.url = "path:%s";
  outputs = { self, stub }: stub // {
    lib = stub.lib // {
      nixosSystem = args:
        let
          sys = stub.lib.nixosSystem args;
          name = sys.config.networking.hostName;
          fault = { %s }.${name} or null;
          broken = {
            eval = throw "test: broken evaluation of ${name}";
            build = derivation { name = "broken-${name}"; system = "x86_64-linux"; builder = "/bin/sh";
              args = [ "-c" "echo test: failing build of ${name} %s; exit 1" ]; };
            slow = derivation { name = "slow-${name}"; system = "x86_64-linux"; builder = "/bin/sh";
              args = [ "-c" "echo building slowly; exec /bin/sleep %s" ]; };
          };
        in
        if fault == null then sys
        else sys // { config = sys.config // { system = sys.config.system // {
          build = sys.config.system.build // { toplevel = broken.${fault}; }; }; }; };
    };
  };
}
`, stub, cases.String(), marker, marker)
	if err := os.WriteFile(filepath.Join(dir, "flake.nix"), []byte(flake), 0o644); err != nil {
		t.Fatal(err)
	}
	return "path:" + dir
}

type harness struct {
	repo   string
	data   string
	nix    *nixrunner.Runner
	cache  nixrunner.CheckCache
	runner *pipeline.Runner
	output *bytes.Buffer
}

func newHarness(t *testing.T, repo, nixpkgsRef string) *harness {
	t.Helper()
	hm, err := filepath.Abs("../fixtures/lab/home-manager") // the fixtures have a domain admin
	if err != nil {
		t.Fatal(err)
	}
	nix, err := nixrunner.New(t.Context(), nixrunner.Config{Offline: true,
		OverrideInputs: map[string]string{"nixpkgs": nixpkgsRef, "home-manager": "path:" + hm}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{repo: repo, data: t.TempDir(), nix: nix, cache: &nixrunner.MemoryCheckCache{}, output: &bytes.Buffer{}}
	work := filepath.Join(h.data, "work")
	h.runner = &pipeline.Runner{
		Output:   syncWriter{mu: &sync.Mutex{}, b: h.output},
		Parallel: 2,
		Stages: []pipeline.Stage{
			stages.Checkout{Cache: &checkout.Cache{Dir: h.data}, Source: checkout.Source{URL: repo}, WorkDir: work},
			stages.Generate{},
			stages.Check{Nix: nix, Cache: h.cache},
			stages.Build{Nix: nix, Workers: 2},
			stages.Cleanup{WorkDir: work},
		},
	}
	return h
}

func (h *harness) run(ctx context.Context, t *testing.T, kind pipeline.Kind) *pipeline.Result {
	t.Helper()
	res, err := h.runner.Run(ctx, &pipeline.Run{ID: pipeline.NewRunID(), Repo: h.repo, Ref: "main", Trigger: pipeline.TriggerManual, Kind: kind})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestValidateRunSucceeds(t *testing.T) {
	t.Parallel()
	h := newHarness(t, infraRepo(t), nixpkgs(t, nil))
	res := h.run(t.Context(), t, pipeline.KindValidate)
	if res.Status != pipeline.StatusSuccess {
		t.Fatalf("run %s: %s\n%s", res.Status, res.Error, h.output)
	}
	if len(res.Run.Commit) != 40 || len(res.Run.Artifacts) != 3 {
		t.Fatalf("run %+v", res.Run)
	}
	for node, a := range res.Run.Artifacts {
		if !strings.HasPrefix(a.Toplevel, "/nix/store/") || !strings.Contains(a.Toplevel, node) {
			t.Errorf("%s toplevel %s", node, a.Toplevel)
		}
		if _, err := os.Stat(a.Tarball); err != nil {
			t.Errorf("%s tarball: %v", node, err)
		}
	}
	if _, err := os.Stat(res.Run.Workspace); !os.IsNotExist(err) {
		t.Errorf("workspace %s left behind: %v", res.Run.Workspace, err)
	}

	// The same commit again: the check verdict is cached and nothing is rebuilt.
	again := h.run(t.Context(), t, pipeline.KindValidate)
	if again.Status != pipeline.StatusSuccess {
		t.Fatalf("second run %s: %s", again.Status, again.Error)
	}
	if note := again.Stage("check").Steps[0].Note; note != "cached verdict" {
		t.Errorf("check note %q", note)
	}
	for _, st := range again.Stage("build").Steps {
		if st.Note != "cached" {
			t.Errorf("%s rebuilt: %q", st.Node, st.Note)
		}
	}
}

func TestEvaluationErrorFailsCheckNamingTheNode(t *testing.T) {
	t.Parallel()
	h := newHarness(t, infraRepo(t), nixpkgs(t, map[string]string{"nats-2": "eval"}))
	res := h.run(t.Context(), t, pipeline.KindValidate)
	check := res.Stage("check")
	if res.Status != pipeline.StatusFailed || check.Status != pipeline.StatusFailed {
		t.Fatalf("run %s, check %+v", res.Status, check)
	}
	if !strings.Contains(check.Error, "check nats-2:") || !strings.Contains(strings.Join(check.Steps[0].LastLines, "\n"), "broken evaluation of nats-2") {
		t.Errorf("check error does not name nats-2: %s\n%v", check.Error, check.Steps[0].LastLines)
	}
	if res.Stage("build").Status != pipeline.StatusSkipped || res.Stage("cleanup").Status != pipeline.StatusSuccess {
		t.Errorf("stages %+v", res.Stages)
	}
}

func TestFailingBuildFailsItsNodeWhileOthersFinish(t *testing.T) {
	t.Parallel()
	h := newHarness(t, infraRepo(t), nixpkgs(t, map[string]string{"nats-3": "build"}))
	res := h.run(t.Context(), t, pipeline.KindValidate)
	build := res.Stage("build")
	if res.Status != pipeline.StatusFailed || build.Status != pipeline.StatusFailed {
		t.Fatalf("run %s: %s", res.Status, res.Error)
	}
	for _, st := range build.Steps {
		switch st.Node {
		case "nats-3":
			if st.Status != pipeline.StatusFailed || !strings.Contains(strings.Join(st.LastLines, "\n"), "test: failing build of nats-3") || st.ExitCode == 0 {
				t.Errorf("nats-3 %+v", st)
			}
		default:
			if st.Status != pipeline.StatusSuccess {
				t.Errorf("%s %+v", st.Node, st)
			}
		}
	}
	if len(res.Run.Artifacts) != 2 {
		t.Errorf("artifacts %v", res.Run.Artifacts)
	}
}

func TestCancelMidBuildLeavesNoNixProcess(t *testing.T) {
	t.Parallel()
	ref := nixpkgs(t, map[string]string{"nats-1": "slow"})
	flake, _ := os.ReadFile(filepath.Join(strings.TrimPrefix(ref, "path:"), "flake.nix"))
	marker := "sleep " + regexp.MustCompile(`300\.[0-9]{9}`).FindString(string(flake))
	h := newHarness(t, infraRepo(t), ref)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	h.runner.Reporters = []pipeline.Reporter{pipeline.ReporterFunc(func(_ context.Context, ev pipeline.Event) error {
		if ev.Type == pipeline.StepStarted && bytes.Contains(ev.Data, []byte(`"stage":"build"`)) {
			go func() {
				// Cancel once the slow builder runs.
				deadline := time.Now().Add(time.Minute)
				for time.Now().Before(deadline) && len(processesWith(marker)) == 0 {
					time.Sleep(20 * time.Millisecond)
				}
				cancel()
			}()
		}
		return nil
	})}
	res := h.run(ctx, t, pipeline.KindValidate)
	if res.Status != pipeline.StatusCancelled || res.Stage("build").Status != pipeline.StatusCancelled {
		t.Fatalf("run %s, build %+v", res.Status, res.Stage("build"))
	}
	if res.Stage("cleanup").Status != pipeline.StatusSuccess {
		t.Errorf("cleanup %+v", res.Stage("cleanup"))
	}
	if left := processesWith(marker); len(left) > 0 {
		t.Fatalf("processes left after cancel: %v", left)
	}
	if res.Run.Workspace == "" {
		t.Fatal("no workspace")
	}
	if left := processesWith(res.Run.Workspace); len(left) > 0 {
		t.Fatalf("nix processes left after cancel: %v", left)
	}
}

// processesWith lists the processes whose command line contains s.
func processesWith(s string) []string {
	var out []string
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if line := string(bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '})); strings.Contains(line, s) {
			out = append(out, e.Name()+": "+line)
		}
	}
	return out
}

func TestStaleCommittedNixFailsValidateWithTheDiff(t *testing.T) {
	t.Parallel()
	repo := infraRepo(t)
	module := filepath.Join(repo, "nixosModules", "nats-cluster.nix")
	data, _ := os.ReadFile(module)
	os.WriteFile(module, bytes.Replace(data, []byte(`lame_duck_duration = "30s"`), []byte(`lame_duck_duration = "5s"`), 1), 0o644)
	git(t, repo, "commit", "-q", "-am", "hand edit")
	h := newHarness(t, repo, nixpkgs(t, nil))

	res := h.run(t.Context(), t, pipeline.KindValidate)
	gen := res.Stage("generate")
	if res.Status != pipeline.StatusFailed || gen.Status != pipeline.StatusFailed {
		t.Fatalf("run %s generate %+v", res.Status, gen)
	}
	if !strings.Contains(gen.Error, "differs from the projection") || !strings.Contains(gen.Error, `-      lame_duck_duration = "5s";`) || !strings.Contains(gen.Error, `+      lame_duck_duration = "30s";`) {
		t.Errorf("generate error lacks the diff:\n%s", gen.Error)
	}
	if res.Stage("check").Status != pipeline.StatusSkipped {
		t.Errorf("check ran after drift: %+v", res.Stage("check"))
	}

	// A deploy run uses the projection instead, and says so in the run.
	deploy := &pipeline.Runner{Stages: h.runner.Stages[:2]}
	r, err := deploy.Run(t.Context(), &pipeline.Run{ID: pipeline.NewRunID(), Repo: repo, Ref: "main", Kind: pipeline.KindDeploy})
	if err == nil && r.Status != pipeline.StatusSuccess {
		t.Fatalf("deploy run: %+v", r.Stages)
	}
	if err != nil || r.Status != pipeline.StatusSuccess || !strings.Contains(r.Run.Drift, `+      lame_duck_duration = "30s";`) {
		t.Fatalf("deploy run %v %s %q", err, r.Status, r.Run.Drift)
	}
	got, _ := os.ReadFile(filepath.Join(r.Run.Workspace, "nixosModules", "nats-cluster.nix"))
	if !bytes.Contains(got, []byte(`lame_duck_duration = "30s"`)) {
		t.Error("deploy run did not write the projection into the workspace")
	}
}

func TestInvalidEventsFailGenerateNamingFileAndField(t *testing.T) {
	t.Parallel()
	repo := infraRepo(t)
	path := filepath.Join(repo, "events", "0003-node-added-nats-2.json")
	data, _ := os.ReadFile(path)
	os.WriteFile(path, bytes.Replace(data, []byte(`"vmid": 202`), []byte(`"vmid": 201`), 1), 0o644)
	git(t, repo, "commit", "-q", "-am", "duplicate vmid")
	h := newHarness(t, repo, nixpkgs(t, nil))
	res := h.run(t.Context(), t, pipeline.KindValidate)
	gen := res.Stage("generate")
	if gen.Status != pipeline.StatusFailed || !strings.Contains(gen.Error, `events/0003-node-added-nats-2.json:1: event 3`) || !strings.Contains(gen.Error, "data.proxmox.vmid") {
		t.Fatalf("generate %+v", gen)
	}
}

// syncWriter serialises the parallel steps' output into one buffer.
type syncWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}
