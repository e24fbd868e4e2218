package daemon

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cimdeploy/cimdeploy/pipeline"
	"github.com/cimdeploy/cimdeploy/pipeline/store"
)

// recordRun runs a small pipeline whose build fails on nats-2 and records it in a real store.
func recordRun(t *testing.T, st *store.Store, reporters ...pipeline.Reporter) *pipeline.Result {
	t.Helper()
	runner := &pipeline.Runner{
		Logger: slog.New(slog.DiscardHandler),
		Output: io.Discard,
		Stages: []pipeline.Stage{
			pipeline.NewStage("generate", func(context.Context, *pipeline.StageRun) error { return nil }),
			pipeline.NewStage("build", func(ctx context.Context, s *pipeline.StageRun) error {
				return s.Each(ctx, []string{"nats-1", "nats-2"}, func(_ context.Context, st *pipeline.Step) error {
					if st.Node == "nats-2" {
						return errors.New(`builder for '/nix/store/x-nats.conf.drv' failed: <script>alert(1)</script>`)
					}
					return nil
				})
			}),
		},
		Reporters: append([]pipeline.Reporter{st}, reporters...),
	}
	run := &pipeline.Run{ID: pipeline.NewRunID(), Repo: "file:///infra", Ref: "refs/pull/7/head",
		Commit: strings.Repeat("ab", 20), Trigger: pipeline.TriggerPullRequest, Kind: pipeline.KindValidate}
	res, err := runner.Run(t.Context(), run)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestRunPages(t *testing.T) {
	st, err := store.Open(t.Context(), store.Config{DataDir: t.TempDir()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	reg := prometheus.NewPedanticRegistry()
	m := newRunMetrics(reg)
	res := recordRun(t, st, m)
	if res.Status != pipeline.StatusFailed {
		t.Fatalf("run: %s, want failed", res.Status)
	}

	mux := http.NewServeMux()
	pages{runs: st, logger: slog.New(slog.DiscardHandler)}.register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	code, body := get("/runs/" + res.Run.ID)
	if code != http.StatusOK {
		t.Fatalf("GET run page: %d %s", code, body)
	}
	for _, want := range []string{res.Run.ID, "failed", "refs/pull/7/head", "nats-2", "x-nats.conf.drv", "&lt;script&gt;"} {
		if !strings.Contains(body, want) {
			t.Errorf("run page lacks %q:\n%s", want, body)
		}
	}
	if strings.Contains(body, "<script>") {
		t.Error("run page carries the error's markup unescaped")
	}
	for _, path := range []string{"/", "/runs"} {
		if code, body := get(path); code != http.StatusOK || !strings.Contains(body, res.Run.ID) || !strings.Contains(body, ">pull request<") {
			t.Errorf("GET %s: %d, lists the run: %v", path, code, strings.Contains(body, res.Run.ID))
		}
	}
	resp, err := http.Get(srv.URL + "/runs/" + res.Run.ID)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "script-src 'self';") || strings.Contains(csp, "unsafe") {
		t.Errorf("Content-Security-Policy %q: want scripts from the daemon only, nothing inline", csp)
	}
	for _, path := range []string{"/static/dashboard.js", "/static/dashboard.css", "/static/favicon.svg"} {
		if code, body := get(path); code != http.StatusOK || body == "" {
			t.Errorf("GET %s: %d", path, code)
		}
	}
	if code, _ := get("/nowhere"); code != http.StatusNotFound {
		t.Errorf("GET /nowhere: %d, want 404 (only / itself is the dashboard)", code)
	}
	if code, body := get("/api/runs/" + res.Run.ID); code != http.StatusOK || !strings.Contains(body, `"event_type":"RunFinished"`) {
		t.Errorf("GET /api/runs/ID: %d %.200s", code, body)
	}
	for _, path := range []string{"/runs/nope", "/runs/..%2f..%2fetc", "/api/runs/a.b"} {
		if code, _ := get(path); code != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", path, code)
		}
	}

	if got := testutil.ToFloat64(m.runs.WithLabelValues("validate", "failed")); got != 1 {
		t.Errorf("cimdeploy_runs_total{validate,failed} = %v, want 1", got)
	}
	if got := testutil.CollectAndCount(m.steps, "cimdeploy_node_duration_seconds"); got != 2 {
		t.Errorf("node duration series: %d, want 2 (nats-1 success, nats-2 failed)", got)
	}
	if got := testutil.ToFloat64(m.active.WithLabelValues("validate")); got != 0 {
		t.Errorf("cimdeploy_runs_active{validate} = %v after the run, want 0", got)
	}
}
