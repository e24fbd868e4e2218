package daemon

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/cimdeploy/cimdeploy/pipeline"
)

// chromium is the browser the dashboard test drives: CIMDEPLOY_TEST_CHROMIUM, or Debian's chromium
// on PATH (.ci/setup installs it). Without one the test fails: a dashboard nobody looked at in a
// browser is not tested.
func chromium(t *testing.T) string {
	t.Helper()
	if path := os.Getenv("CIMDEPLOY_TEST_CHROMIUM"); path != "" {
		return path
	}
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("no chromium to test the dashboard in (Debian package chromium, or CIMDEPLOY_TEST_CHROMIUM): %v", err)
	}
	return path
}

// artifacts is where the test keeps its screenshots: CIMDEPLOY_TEST_ARTIFACTS (CI keeps it), or a
// temporary directory.
func artifacts(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("CIMDEPLOY_TEST_ARTIFACTS")
	if dir == "" {
		return t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("CIMDEPLOY_TEST_ARTIFACTS: %v", err)
	}
	return dir
}

// domState is what the run page shows, read from its DOM.
type domState struct {
	Run     string                `json:"run"`
	Live    string                `json:"live"`
	Why     string                `json:"why"`
	Log     string                `json:"log"`
	Marker  bool                  `json:"marker"`
	Scripts int                   `json:"scripts"`
	Stages  map[string]stageState `json:"stages"`
}

type stageState struct {
	Status string            `json:"status"`
	Error  string            `json:"error"`
	Nodes  map[string]string `json:"nodes"`
}

// readState is a JavaScript expression giving a domState.
const readState = `(() => {
  const text = (el) => el ? el.textContent : "";
  const stages = {};
  for (const li of document.querySelectorAll("#stages > li")) {
    const nodes = {};
    for (const n of li.querySelectorAll("[data-node]")) nodes[n.dataset.node] = text(n.querySelector(".status"));
    stages[li.dataset.stage] = {status: text(li.querySelector(":scope > .status")), error: text(li.querySelector(":scope > pre.err")), nodes};
  }
  const why = document.getElementById("why");
  return {run: text(document.getElementById("run-status")), live: text(document.getElementById("live")),
    why: why && !why.hidden ? text(document.getElementById("run-error")) : "", log: text(document.getElementById("log")),
    marker: window.__dashboardTest === 1, scripts: document.scripts.length, stages};
})()`

// TestDashboardInBrowser opens a run's page in headless Chromium while the run is on its first stage
// and checks that the stages and nodes change in the page, without a reload, as the run goes on and
// fails; then the finished run's page and the runs list. Screenshots of each go to artifacts.
func TestDashboardInBrowser(t *testing.T) {
	exe := chromium(t)
	dir := artifacts(t)
	st := openStore(t)
	data := t.TempDir()
	logFile := func(id string) string { return filepath.Join(data, "logs", id+".log") }
	mux := http.NewServeMux()
	pages{runs: st, stream: st.JetStream(), logFile: logFile, repo: "cimdeploy-lab/infra",
		logger: slog.New(slog.DiscardHandler)}.register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(exe),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.WindowSize(800, 1000))
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	defer cancelAlloc()
	tab, closeTab := chromedp.NewContext(actx)
	defer closeTab()

	// Every console message is kept: a script error or a blocked resource (CSP) fails the test.
	var mu sync.Mutex
	var console []chromedp.ConsoleMessage
	messages := chromedp.Console(tab)
	consoleDone := make(chan struct{})
	go func() {
		defer close(consoleDone)
		for m, err := range messages {
			if err != nil {
				return
			}
			mu.Lock()
			console = append(console, m)
			mu.Unlock()
		}
	}()
	defer func() { closeTab(); <-consoleDone }()

	do := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(tab, actions...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	state := func() domState {
		t.Helper()
		s, err := chromedp.Run(tab, chromedp.Evaluate[domState](readState))
		if err != nil {
			t.Fatalf("read the page: %v", err)
		}
		return s
	}
	// waitFor polls the page until cond (a JavaScript expression over s, a domState) holds.
	waitFor := func(what, cond string) {
		t.Helper()
		expr := "((s) => " + cond + ")(" + readState + ")"
		if err := chromedp.Do(tab, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(30*time.Second))); err != nil {
			t.Fatalf("page never showed %s: %v; it shows %+v", what, err, state())
		}
	}
	screenshot := func(name string) {
		t.Helper()
		png, err := chromedp.Run(tab, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot: %s", path)
	}

	run := startGatedRun(t, st, logFile)
	run.waitEvent(t, pipeline.StageStarted)
	page := srv.URL + "/runs/" + run.Run.ID
	do("open the run page", chromedp.Navigate(page), chromedp.WaitVisible(chromedp.ID("stages")),
		chromedp.Evaluate[chromedp.Void]("window.__dashboardTest = 1"))
	waitFor("the live stream connected, generate running", `s.live === "live" && s.run === "running" && s.stages.generate?.status === "running"`)

	run.Generate()
	waitFor("generate done, build running on both nodes",
		`s.stages.generate?.status === "success" && s.stages.build?.status === "running" && s.stages.build.nodes["nats-1"] === "running" && s.stages.build.nodes["nats-2"] === "running"`)
	run.Node1()
	waitFor("nats-1 built, nats-2 still building", `s.stages.build?.nodes["nats-1"] === "success" && s.stages.build.nodes["nats-2"] === "running"`)
	waitFor("the command output so far", `s.log.includes("building /nix/store/x-nats-1.drv")`)
	screenshot("dashboard-run-live.png")

	run.Node2()
	res := run.wait(t)
	waitFor("the run failed at build on nats-2", `s.run === "failed" && s.stages.build?.status === "failed" && s.stages.build.nodes["nats-2"] === "failed" && s.why.includes("x-nats-2.drv")`)
	waitFor("the failing command's output", `s.log.includes("<b>nats.conf</b> does not parse")`)
	got := state()
	if !got.Marker {
		t.Error("the page reloaded: the updates must come without one")
	}
	if got.Live != "" {
		t.Errorf("live indicator %q after the run ended, want the stream closed", got.Live)
	}
	if got.Scripts != 1 {
		t.Errorf("%d scripts in the page, want only the dashboard's: the error's markup got in", got.Scripts)
	}
	for _, stage := range res.Stages {
		if g := got.Stages[stage.Name]; stage.Status != pipeline.StatusSkipped && g.Status != string(stage.Status) {
			t.Errorf("stage %s shows %q, the run says %s", stage.Name, g.Status, stage.Status)
		}
	}
	if !strings.Contains(got.Stages["build"].Error, "<script>alert(1)</script>") {
		t.Errorf("build stage error %q: want the error as text", got.Stages["build"].Error)
	}
	screenshot("dashboard-run-failed-live.png")

	// The finished run, opened anew: the server renders what the stream showed.
	do("open the finished run", chromedp.Navigate(page), chromedp.WaitVisible(chromedp.ID("stages")))
	finished := state()
	if finished.Run != "failed" || finished.Stages["build"].Nodes["nats-2"] != "failed" || finished.Stages["generate"].Status != "success" ||
		!strings.Contains(finished.Why, "x-nats-2.drv") || !strings.Contains(finished.Log, "does not parse") {
		t.Errorf("finished run page shows %+v", finished)
	}
	screenshot("dashboard-run-failed.png")
	do("look at it on a phone", chromedp.EmulateViewport(412, 915, chromedp.EmulateMobile, chromedp.EmulateScale(2)))
	screenshot("dashboard-run-failed-phone.png")
	do("back to the desktop", chromedp.EmulateReset())

	do("open the runs list", chromedp.Navigate(srv.URL+"/"), chromedp.WaitVisible(chromedp.ID("runs")))
	row, err := chromedp.Run(tab, chromedp.Evaluate[map[string]string](`(() => {
	  const tr = document.querySelector('tr[data-run="`+run.Run.ID+`"]');
	  if (!tr) return {};
	  const cells = [...tr.cells].map((c) => c.textContent);
	  const commit = tr.querySelector('a[href^="https://github.com/"]');
	  return {kind: cells[1], trigger: cells[2], status: cells[4], duration: cells[6], commit: commit ? commit.href : ""};
	})()`))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"kind": "validate", "trigger": "push", "status": "failed",
		"commit": "https://github.com/cimdeploy-lab/infra/commit/" + run.Run.Commit}
	for k, v := range want {
		if row[k] != v {
			t.Errorf("runs list, %s: %q, want %q", k, row[k], v)
		}
	}
	if row["duration"] == "" {
		t.Error("runs list: no duration for the finished run")
	}
	screenshot("dashboard-runs.png")

	closeTab()
	<-consoleDone
	mu.Lock()
	defer mu.Unlock()
	for _, m := range console {
		t.Logf("console: %s", m)
		if m.IsException() || strings.Contains(m.Text, "Content Security Policy") || strings.Contains(m.Text, "Refused") {
			t.Errorf("the page complained: %s", m)
		}
	}
}
