package forge

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cimdeploy/cimdeploy/gitops/events"
	"github.com/cimdeploy/cimdeploy/gitops/forge/forgetest"
	"github.com/cimdeploy/cimdeploy/pipeline"
	"github.com/cimdeploy/cimdeploy/stages"
)

const (
	testToken = "ghp_0123456789abcdefSECRETtokenValue42"
	shaA      = "aaaaaaa1111111111111111111111111111111aa"
	shaB      = "bbbbbbb2222222222222222222222222222222bb"
	publicURL = "https://cimdeploy.example"
)

// syncBuffer is a log sink safe for the reporter's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type fixture struct {
	srv  *forgetest.Server
	rep  *Reporter
	logs *syncBuffer
	reg  *prometheus.Registry
}

// newFixture starts the emulator and a token-authenticated Reporter on it with small retry bounds. The
// test fails if the token shows up in the logs.
func newFixture(t *testing.T, srvOpts []forgetest.Option, mutate func(*Config)) *fixture {
	t.Helper()
	srv := forgetest.NewServer(t, append([]forgetest.Option{forgetest.WithToken(testToken)}, srvOpts...)...)
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(testToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := Config{APIURL: srv.URL + "/", Repository: "octo/fleet", TokenFile: tokenFile, PublicURL: publicURL,
		RetryMin: 5 * time.Millisecond, RetryMax: 40 * time.Millisecond, SecondaryWait: 40 * time.Millisecond,
		GiveUpAfter: 20 * time.Second, RequestTimeout: 5 * time.Second}
	if mutate != nil {
		mutate(&cfg)
	}
	logs := &syncBuffer{}
	reg := prometheus.NewRegistry()
	rep, err := New(cfg, slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})), reg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = rep.Close(ctx)
		for _, secret := range []string{testToken, "ghs_", "eyJhbGciOiJSUzI1NiI"} { // installation tokens, JWTs
			if strings.Contains(logs.String(), secret) {
				t.Errorf("a token (%s...) appears in the logs:\n%s", secret[:4], logs.String())
			}
		}
	})
	return &fixture{srv: srv, rep: rep, logs: logs, reg: reg}
}

// flush waits until every queued call was sent.
func (f *fixture) flush(t *testing.T) {
	t.Helper()
	if err := f.rep.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// plan is the real stage sequence with each stage a no-op unless overridden.
func plan(over map[string]func(ctx context.Context, s *pipeline.StageRun) error) []pipeline.Stage {
	var out []pipeline.Stage
	for _, name := range []string{"checkout", "generate", "check", "build", "publish", "rollout"} {
		fn := over[name]
		if fn == nil {
			fn = func(context.Context, *pipeline.StageRun) error { return nil }
		}
		out = append(out, pipeline.NewStage(name, fn))
	}
	return out
}

// runPipeline runs the plan over a run of kind on sha through a real pipeline.Runner reporting to rep
// (and to the extra reporters).
func runPipeline(t *testing.T, ctx context.Context, rep pipeline.Reporter, kind pipeline.Kind, sha string, over map[string]func(context.Context, *pipeline.StageRun) error, extra ...pipeline.Reporter) (*pipeline.Run, *pipeline.Result) {
	t.Helper()
	run := &pipeline.Run{ID: pipeline.NewRunID(), Repo: "octo/fleet", Ref: "refs/heads/main", Commit: sha, Trigger: pipeline.TriggerPush, Kind: kind}
	r := pipeline.Runner{Stages: plan(over), Reporters: append([]pipeline.Reporter{rep}, extra...), CleanupTimeout: 5 * time.Second}
	res, err := r.Run(ctx, run)
	if err != nil {
		t.Fatal(err)
	}
	return run, res
}

type statusReq struct{ sha, context, state, description, targetURL string }

func statuses(srv *forgetest.Server) []statusReq {
	var out []statusReq
	for _, r := range srv.Accepted("repos/create-commit-status") {
		s := statusReq{sha: r.Params["sha"]}
		s.context, _ = r.Body["context"].(string)
		s.state, _ = r.Body["state"].(string)
		s.description, _ = r.Body["description"].(string)
		s.targetURL, _ = r.Body["target_url"].(string)
		out = append(out, s)
	}
	return out
}

func checkDescriptions(t *testing.T, srv *forgetest.Server) {
	t.Helper()
	for _, r := range srv.Requests() {
		if d, ok := r.Body["description"].(string); ok && utf8.RuneCountInString(d) > MaxDescription {
			t.Errorf("%s %s: description of %d characters: %q", r.Method, r.Path, utf8.RuneCountInString(d), d)
		}
	}
}

func TestValidateRunSuccess(t *testing.T) {
	f := newFixture(t, nil, nil)
	run, _ := runPipeline(t, t.Context(), f.rep, pipeline.KindValidate, shaA, nil)
	f.flush(t)
	got := statuses(f.srv)
	url := publicURL + "/runs/" + run.ID
	if len(got) != 2 {
		t.Fatalf("statuses = %+v, want pending then success", got)
	}
	for i, want := range []string{"pending", "success"} {
		if got[i].state != want || got[i].context != ContextValidate || got[i].sha != shaA || got[i].targetURL != url {
			t.Errorf("status %d = %+v, want %s on %s for %s linking %s", i, got[i], want, ContextValidate, shaA, url)
		}
	}
	if n := len(f.srv.Accepted("repos/create-deployment")); n != 0 {
		t.Errorf("a validate run created %d deployment(s)", n)
	}
	if n := testutil.ToFloat64(f.rep.metrics.calls.WithLabelValues("create_status", "201")); n != 2 {
		t.Errorf("cimdeploy_github_api_calls_total{create_status,201} = %v, want 2", n)
	}
	if rem := testutil.ToFloat64(f.rep.metrics.remaining); rem <= 0 || rem >= 5000 {
		t.Errorf("cimdeploy_github_rate_limit_remaining = %v, want what the emulator said (5000 minus calls)", rem)
	}
}

func TestValidateRunFailureNamesFirstProblems(t *testing.T) {
	f := newFixture(t, nil, nil)
	probs := events.Problems{
		{Source: events.Source{File: "events/nodes.jsonl", Line: 3}, Sequence: 2, Field: "data.nodes[0].name", Message: "must not be empty"},
		{Source: events.Source{File: "events/nodes.jsonl", Line: 7}, Sequence: 4, Field: "data.cores", Message: "must be positive"},
	}
	runPipeline(t, t.Context(), f.rep, pipeline.KindValidate, shaA, map[string]func(context.Context, *pipeline.StageRun) error{
		"generate": func(context.Context, *pipeline.StageRun) error { return probs },
	})
	f.flush(t)
	got := statuses(f.srv)
	last := got[len(got)-1]
	want := "generate: events/nodes.jsonl:3: event 2: data.nodes[0].name: must not be empty; events/nodes.jsonl:7"
	if last.state != "failure" || !strings.HasPrefix(last.description, want) {
		t.Errorf("final status = %+v, want failure starting %q", last, want)
	}
	checkDescriptions(t, f.srv)
}

func TestValidateRunDriftNamesFiles(t *testing.T) {
	f := newFixture(t, nil, nil)
	drift := "--- a/nix/hosts/web-1.nix\n+++ b/nix/hosts/web-1.nix\n@@ -1 +1 @@\n-a\n+b\n--- a/flake.nix\n+++ b/flake.nix\n@@ -1 +1 @@\n-c\n+d\n"
	runPipeline(t, t.Context(), f.rep, pipeline.KindValidate, shaA, map[string]func(context.Context, *pipeline.StageRun) error{
		"generate": func(_ context.Context, s *pipeline.StageRun) error {
			s.Run.Drift = drift
			return fmt.Errorf("%w (run `cimdeploy generate` and commit the result):\n%s", stages.ErrDrift, drift)
		},
	})
	f.flush(t)
	got := statuses(f.srv)
	if last := got[len(got)-1]; last.state != "failure" || last.description != "committed Nix drifts: nix/hosts/web-1.nix, flake.nix" {
		t.Errorf("final status = %+v, want failure naming the drifting files", last)
	}
}

func TestDeployRunReportsDeploymentInOrder(t *testing.T) {
	f := newFixture(t, nil, nil)
	run, _ := runPipeline(t, t.Context(), f.rep, pipeline.KindDeploy, shaA, map[string]func(context.Context, *pipeline.StageRun) error{
		"generate": func(_ context.Context, s *pipeline.StageRun) error {
			s.Run.Nodes = []string{"db-1", "web-1"}
			return nil
		},
	})
	f.flush(t)
	var got []string
	for _, r := range f.srv.Accepted() {
		switch r.OperationID {
		case "repos/create-commit-status":
			got = append(got, fmt.Sprintf("status %s %s", r.Body["context"], r.Body["state"]))
		case "repos/create-deployment":
			got = append(got, "deployment")
			if r.Body["ref"] != shaA || r.Body["auto_merge"] != false || r.Body["environment"] != "production" {
				t.Errorf("deployment request = %v, want ref %s, auto_merge false, environment production", r.Body, shaA)
			}
			if rc, ok := r.Body["required_contexts"].([]any); !ok || len(rc) != 0 {
				t.Errorf("required_contexts = %v, want [] (bypass the checks)", r.Body["required_contexts"])
			}
		case "repos/create-deployment-status":
			got = append(got, fmt.Sprintf("deployment status %s", r.Body["state"]))
			if r.Body["log_url"] != publicURL+"/runs/"+run.ID {
				t.Errorf("log_url = %v", r.Body["log_url"])
			}
		}
	}
	want := []string{
		"status cimdeploy/validate pending", "status cimdeploy/deploy pending", "deployment", "deployment status in_progress",
		"status cimdeploy/validate success", "status cimdeploy/deploy success", "deployment status success",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("calls:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	st := statuses(f.srv)
	if d := st[len(st)-1].description; d != "deployed 2 node(s) to production" {
		t.Errorf("deploy success description = %q", d)
	}
}

func TestDeployFailureNamesStageAndNode(t *testing.T) {
	f := newFixture(t, nil, nil)
	long := strings.Repeat("switch-to-configuration exited 1 ", 20)
	runPipeline(t, t.Context(), f.rep, pipeline.KindDeploy, shaA, map[string]func(context.Context, *pipeline.StageRun) error{
		"rollout": func(ctx context.Context, s *pipeline.StageRun) error {
			return s.Serial(ctx, []string{"db-1", "web-1"}, func(_ context.Context, st *pipeline.Step) error {
				if st.Node == "db-1" {
					return errors.New(long)
				}
				return nil
			})
		},
	})
	f.flush(t)
	byCtx := map[string]statusReq{}
	for _, s := range statuses(f.srv) {
		byCtx[s.context] = s
	}
	if v := byCtx[ContextValidate]; v.state != "success" {
		t.Errorf("validate = %+v, want success (validation stages passed)", v)
	}
	d := byCtx[ContextDeploy]
	if d.state != "failure" || !strings.HasPrefix(d.description, "rollout failed on db-1: switch-to-configuration exited 1") {
		t.Errorf("deploy = %+v, want failure naming rollout and db-1", d)
	}
	ds := f.srv.Accepted("repos/create-deployment-status")
	if last := ds[len(ds)-1]; last.Body["state"] != "failure" {
		t.Errorf("last deployment status = %v, want failure", last.Body["state"])
	}
	checkDescriptions(t, f.srv)
}

func TestCancelledRunIsError(t *testing.T) {
	f := newFixture(t, nil, nil)
	ctx, cancel := context.WithCancel(t.Context())
	runPipeline(t, ctx, f.rep, pipeline.KindValidate, shaA, map[string]func(context.Context, *pipeline.StageRun) error{
		"check": func(ctx context.Context, _ *pipeline.StageRun) error { cancel(); <-ctx.Done(); return ctx.Err() },
	})
	f.flush(t)
	got := statuses(f.srv)
	if last := got[len(got)-1]; last.state != "error" || !strings.HasPrefix(last.description, "check cancelled") {
		t.Errorf("final status = %+v, want error naming the check stage", last)
	}
}

// recorder keeps the events of a run, to replay them.
type recorder struct {
	mu  sync.Mutex
	evs []pipeline.Event
}

func (r *recorder) Report(_ context.Context, ev pipeline.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.evs = append(r.evs, ev)
	return nil
}

func TestIdenticalStatusSkipped(t *testing.T) {
	f := newFixture(t, nil, nil)
	rec := &recorder{}
	runPipeline(t, t.Context(), f.rep, pipeline.KindValidate, shaA, nil, rec)
	// The run's final event delivered again (a replay) says nothing new: no call.
	for _, ev := range rec.evs {
		if ev.Type == pipeline.RunFinished {
			if err := f.rep.Report(t.Context(), ev); err != nil {
				t.Fatal(err)
			}
		}
	}
	f.flush(t)
	if got := statuses(f.srv); len(got) != 2 {
		t.Errorf("statuses = %+v, want pending and success only", got)
	}
	if !strings.Contains(f.logs.String(), "github call skipped") {
		t.Errorf("no log line says the repeat was skipped:\n%s", f.logs)
	}
}

func TestSupersededNamesNewerCommit(t *testing.T) {
	f := newFixture(t, nil, nil)
	ctx, cancel := context.WithCancel(t.Context())
	runPipeline(t, ctx, f.rep, pipeline.KindDeploy, shaA, map[string]func(context.Context, *pipeline.StageRun) error{
		"rollout": func(ctx context.Context, _ *pipeline.StageRun) error {
			if err := f.rep.Superseded(ctx, shaA, shaB); err != nil {
				return err
			}
			cancel()
			return ctx.Err()
		},
	})
	f.flush(t)
	var deploy []statusReq
	for _, s := range statuses(f.srv) {
		if s.context == ContextDeploy {
			deploy = append(deploy, s)
		}
	}
	if len(deploy) != 3 {
		t.Fatalf("deploy statuses = %+v, want pending, superseded, final", deploy)
	}
	if s := deploy[1]; s.state != "error" || s.description != "superseded by bbbbbbb before it finished" || s.sha != shaA {
		t.Errorf("superseded status = %+v", s)
	}
	if s := deploy[2]; s.state != "error" || !strings.HasPrefix(s.description, "superseded by bbbbbbb: rollout cancelled") {
		t.Errorf("final status = %+v, want an error naming the newer commit", s)
	}
}

func TestRetriesThroughServerErrors(t *testing.T) {
	f := newFixture(t, nil, nil)
	f.srv.FailNext(3)
	runPipeline(t, t.Context(), f.rep, pipeline.KindValidate, shaA, nil)
	f.flush(t)
	if got := statuses(f.srv); len(got) != 2 || got[1].state != "success" {
		t.Errorf("statuses = %+v, want pending and success after the 500s", got)
	}
	if n := testutil.ToFloat64(f.rep.metrics.calls.WithLabelValues("create_status", "500")); n != 3 {
		t.Errorf("calls with 500 = %v, want 3", n)
	}
	if !strings.Contains(f.logs.String(), "retrying") {
		t.Error("no log line says a call is retried")
	}
}

// firstAcceptedAfterRefusal returns the time of the first refused request and of the accepted one
// after it.
func firstAcceptedAfterRefusal(t *testing.T, srv *forgetest.Server, refused int) (time.Time, time.Time) {
	t.Helper()
	var bad, good time.Time
	for _, r := range srv.Requests() {
		if r.Status == refused && bad.IsZero() {
			bad = r.At
		}
		if r.Status/100 == 2 && !bad.IsZero() {
			good = r.At
			break
		}
	}
	if bad.IsZero() || good.IsZero() {
		t.Fatalf("no %d followed by an accepted request in %d requests", refused, len(srv.Requests()))
	}
	return bad, good
}

func TestSecondaryRateLimitRetryAfterHonoured(t *testing.T) {
	f := newFixture(t, nil, nil)
	f.srv.SecondaryRateLimitNext(1, time.Second)
	runPipeline(t, t.Context(), f.rep, pipeline.KindValidate, shaA, nil)
	f.flush(t)
	bad, good := firstAcceptedAfterRefusal(t, f.srv, http.StatusForbidden)
	if good.Sub(bad) < time.Second {
		t.Errorf("retried %s after a 403 with Retry-After: 1", good.Sub(bad))
	}
}

func TestTooManyRequestsHandled(t *testing.T) {
	// go-github v60 turns a 429 into a plain *github.ErrorResponse: Retry-After is read from its
	// response (and wins over the minute a secondary limit without one would cost).
	f := newFixture(t, nil, func(c *Config) { c.SecondaryWait = time.Minute })
	f.srv.TooManyRequestsNext(1, time.Second)
	runPipeline(t, t.Context(), f.rep, pipeline.KindValidate, shaA, nil)
	f.flush(t)
	bad, good := firstAcceptedAfterRefusal(t, f.srv, http.StatusTooManyRequests)
	if good.Sub(bad) < time.Second {
		t.Errorf("retried %s after a 429 with Retry-After: 1", good.Sub(bad))
	}
	if got := statuses(f.srv); len(got) != 2 {
		t.Errorf("statuses = %+v, want both sent", got)
	}
}

func TestPrimaryRateLimitWaitsForReset(t *testing.T) {
	f := newFixture(t, nil, nil)
	reset := f.srv.ExhaustPrimary(time.Now().Add(300 * time.Millisecond))
	runPipeline(t, t.Context(), f.rep, pipeline.KindValidate, shaA, nil)
	f.flush(t)
	_, good := firstAcceptedAfterRefusal(t, f.srv, http.StatusForbidden)
	if good.Before(reset) {
		t.Errorf("a call went through at %s, before X-RateLimit-Reset %s", good.Format(time.StampMilli), reset.Format(time.StampMilli))
	}
	refused := 0
	for _, r := range f.srv.Requests() {
		if r.Status == http.StatusForbidden {
			refused++
		}
	}
	if refused != 1 {
		t.Errorf("%d requests refused by the exhausted limit, want 1: the client waits for the reset", refused)
	}
}

// clock is a settable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func TestGitHubAppTokenAndCheckRun(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "app.pem")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600); err != nil {
		t.Fatal(err)
	}
	clk := &clock{t: time.Now()}
	f := newFixture(t, []forgetest.Option{forgetest.WithApp(4242, 77, &key.PublicKey, time.Hour), forgetest.WithClock(clk.Now)}, func(c *Config) {
		c.TokenFile, c.AppID, c.AppPrivateKeyFile, c.InstallationID = "", 4242, keyFile, 77
	})
	f.rep.tokens.(*appTokens).now = clk.Now

	var probs events.Problems
	for i := range 60 {
		probs = append(probs, events.Problem{Source: events.Source{File: "events/nodes.jsonl", Line: i + 1}, Sequence: uint64(i + 1), Field: "data.name", Message: "must not be empty"})
	}
	runPipeline(t, t.Context(), f.rep, pipeline.KindValidate, shaA, map[string]func(context.Context, *pipeline.StageRun) error{
		"generate": func(context.Context, *pipeline.StageRun) error { return probs },
	})
	waitFor(t, func() bool { return len(f.srv.Accepted("checks/update")) == 2 })
	// Within the token's life: no new token. Past expires_at minus the margin: a new one.
	runPipeline(t, t.Context(), f.rep, pipeline.KindValidate, shaB, nil)
	waitFor(t, func() bool { return len(f.srv.Accepted("checks/update")) == 3 })
	clk.Add(56 * time.Minute)
	runPipeline(t, t.Context(), f.rep, pipeline.KindValidate, shaA, nil)
	f.flush(t)

	if n := len(f.srv.Accepted("apps/create-installation-access-token")); n != 2 {
		t.Errorf("installation tokens created = %d, want 2 (cached, then renewed before expiry)", n)
	}
	for _, r := range f.srv.Accepted("repos/create-commit-status") {
		if a := r.Header.Get("Authorization"); !strings.HasPrefix(a, "Bearer ghs_") {
			t.Errorf("status sent with Authorization %q, want the installation token", a)
		}
	}
	creates := f.srv.Accepted("checks/create")
	if len(creates) != 3 || creates[0].Body["status"] != "in_progress" || creates[0].Body["head_sha"] != shaA {
		t.Fatalf("check runs created = %d, first %v", len(creates), creates[0].Body)
	}
	updates := f.srv.Accepted("checks/update")
	var counts []int
	for _, u := range updates[:2] {
		out, _ := u.Body["output"].(map[string]any)
		anns, _ := out["annotations"].([]any)
		counts = append(counts, len(anns))
	}
	if fmt.Sprint(counts) != "[50 10]" || updates[0].Body["conclusion"] != "failure" {
		t.Errorf("first run's check run updates: annotations %v, conclusion %v; want [50 10], failure", counts, updates[0].Body["conclusion"])
	}
	first := updates[0].Body["output"].(map[string]any)["annotations"].([]any)[0].(map[string]any)
	if first["path"] != "events/nodes.jsonl" || first["start_line"] != 1.0 || first["annotation_level"] != "failure" {
		t.Errorf("first annotation = %v", first)
	}
	if updates[2].Body["conclusion"] != "success" {
		t.Errorf("second run's conclusion = %v, want success", updates[2].Body["conclusion"])
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestReportNeverBlocksWhenGitHubHangs(t *testing.T) {
	f := newFixture(t, nil, func(c *Config) { c.QueueSize = 4; c.RequestTimeout = time.Minute })
	release := f.srv.Hang()
	defer release()
	// One call is in flight, held by the server.
	start := pipeline.Event{Type: pipeline.RunStarted, AggregateID: "r0", Data: []byte(`{"run":{"id":"r0","commit":"` + shaA + `","kind":"validate"}}`)}
	if err := f.rep.Report(t.Context(), start); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return f.srv.Pending() == 1 })
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 5 {
			runPipeline(t, t.Context(), f.rep, pipeline.KindDeploy, fmt.Sprintf("%040d", i), nil)
		}
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("runs blocked on a hanging GitHub")
	}
	if !strings.Contains(f.logs.String(), "github report queue full: dropped the oldest call") {
		t.Errorf("no log line about the dropped calls:\n%s", f.logs)
	}
	if n := testutil.ToFloat64(f.rep.metrics.dropped); n == 0 {
		t.Error("cimdeploy_github_reports_dropped_total = 0")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	err := f.rep.Close(ctx)
	if err == nil || !strings.Contains(err.Error(), "not sent") || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Close on a hanging GitHub = %v, want the calls not sent and the deadline; logs:\n%s", err, f.logs)
	}
	if err := f.rep.Report(t.Context(), pipeline.Event{Type: pipeline.RunStarted, Data: []byte(`{"run":{"id":"x","commit":"c"}}`)}); !errors.Is(err, ErrClosed) {
		t.Errorf("Report after Close = %v, want ErrClosed", err)
	}
}

func TestTokenNeverInLogsOrErrors(t *testing.T) {
	// A hostile or broken server echoes the credential in its error message.
	echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadGateway)
		_ = json.NewEncoder(w).Encode(map[string]string{"message": "upstream refused " + r.Header.Get("Authorization")})
	}))
	defer echo.Close()
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(testToken), 0o600); err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	rep, err := New(Config{APIURL: echo.URL, Repository: "octo/fleet", TokenFile: tokenFile, RetryMin: time.Millisecond,
		RetryMax: 2 * time.Millisecond, GiveUpAfter: 30 * time.Millisecond}, slog.New(slog.NewTextHandler(logs, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	runPipeline(t, t.Context(), rep, pipeline.KindDeploy, shaA, nil)
	if err := rep.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	out := logs.String()
	if !strings.Contains(out, "giving up") || !strings.Contains(out, "[REDACTED]") {
		t.Errorf("want the failure logged with the token redacted:\n%s", out)
	}
	if strings.Contains(out, testToken) {
		t.Errorf("the token appears in the logs:\n%s", out)
	}
	// A bad token file names the file, never its content.
	bad := filepath.Join(t.TempDir(), "bad")
	if err := os.WriteFile(bad, []byte(testToken+" "+testToken), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = New(Config{Repository: "octo/fleet", TokenFile: bad}, nil, nil)
	if err == nil || strings.Contains(err.Error(), testToken) {
		t.Errorf("New with a two-word token file = %v, want an error without the token", err)
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{name: "token", cfg: Config{Repository: "o/r", TokenFile: "t"}},
		{name: "app", cfg: Config{Repository: "o/r", AppID: 1, AppPrivateKeyFile: "k", InstallationID: 2}},
		{name: "no repository", cfg: Config{TokenFile: "t"}, want: "want owner/name"},
		{name: "repository with three parts", cfg: Config{Repository: "a/b/c", TokenFile: "t"}, want: "want owner/name"},
		{name: "no credentials", cfg: Config{Repository: "o/r"}, want: "no GitHub credentials"},
		{name: "both", cfg: Config{Repository: "o/r", TokenFile: "t", AppID: 1}, want: "not both"},
		{name: "partial app", cfg: Config{Repository: "o/r", AppID: 1}, want: "needs CIMDEPLOY_GITHUB_APP_ID"},
		{name: "bad api url", cfg: Config{Repository: "o/r", TokenFile: "t", APIURL: "ftp://x"}, want: "CIMDEPLOY_GITHUB_API_URL"},
		{name: "bad public url", cfg: Config{Repository: "o/r", TokenFile: "t", PublicURL: "runs"}, want: "CIMDEPLOY_PUBLIC_URL"},
		{name: "retry bounds", cfg: Config{Repository: "o/r", TokenFile: "t", RetryMin: time.Hour, RetryMax: time.Second}, want: "exceeds"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := tc.cfg.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("Validate = %v, want nil", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("Validate = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestLoadConfigDefaults(t *testing.T) {
	t.Parallel()
	cfg, err := LoadConfig(t.Context(), mapLookuper{"CIMDEPLOY_GITHUB_REPOSITORY": "o/r", "CIMDEPLOY_GITHUB_TOKEN_FILE": "t"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.APIURL != "https://api.github.com/" || cfg.Environment != "production" || cfg.GiveUpAfter != 15*time.Minute {
		t.Errorf("defaults = %+v", cfg)
	}
}

type mapLookuper map[string]string

func (m mapLookuper) Lookup(k string) (string, bool) { v, ok := m[k]; return v, ok }

// TestApprovalShowsInTheDeployStatus: while a deploy run waits for approval, its pending deploy
// status says so and names the command that lets it go on.
func TestApprovalShowsInTheDeployStatus(t *testing.T) {
	f := newFixture(t, nil, nil)
	run := &pipeline.Run{ID: pipeline.NewRunID(), Repo: "octo/fleet", Ref: "refs/heads/main", Commit: shaA, Trigger: pipeline.TriggerPush, Kind: pipeline.KindDeploy}
	noop := func(context.Context, *pipeline.StageRun) error { return nil }
	var stages []pipeline.Stage
	for _, name := range []string{"checkout", "generate", "check", "build", "publish", ApprovalStage, "rollout"} {
		stages = append(stages, pipeline.NewStage(name, noop))
	}
	r := pipeline.Runner{Stages: stages, Reporters: []pipeline.Reporter{f.rep}, CleanupTimeout: 5 * time.Second}
	if _, err := r.Run(t.Context(), run); err != nil {
		t.Fatal(err)
	}
	f.flush(t)
	var deploy []string
	for _, s := range statuses(f.srv) {
		if s.context == ContextDeploy {
			deploy = append(deploy, s.state+": "+s.description)
		}
	}
	want := []string{"pending: deploying " + shaA[:7] + " to production",
		"pending: built and published; waiting for approval: cimdeploy approve " + run.ID,
		"success: deployed 0 node(s) to production"}
	if strings.Join(deploy, "\n") != strings.Join(want, "\n") {
		t.Errorf("deploy statuses:\n%s\nwant:\n%s", strings.Join(deploy, "\n"), strings.Join(want, "\n"))
	}
}
