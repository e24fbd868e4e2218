package daemon

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sethvargo/go-envconfig"

	"github.com/cimdeploy/cimdeploy/deploy"
	"github.com/cimdeploy/cimdeploy/gitops/forge"
	"github.com/cimdeploy/cimdeploy/gitops/forge/forgetest"
	"github.com/cimdeploy/cimdeploy/pipeline"
	"github.com/cimdeploy/cimdeploy/pipeline/store"
	"github.com/cimdeploy/cimdeploy/stages"
)

const (
	testSecret = "daemon-test-secret"
	testToken  = "ghs_daemonTestToken0123456789"
	testRepo   = "acme/infra"
)

// newDaemon assembles a daemon over a real store in dataDir, reporting to gh. Its repository is a
// directory that is never fetched: these tests run no pipeline.
func newDaemon(t *testing.T, dataDir string, gh *forgetest.Server) (*Daemon, *store.Store) {
	t.Helper()
	dir := t.TempDir()
	write := func(name, content string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	ctx := t.Context()
	dc, err := deploy.Load(ctx, envconfig.MapLookuper(map[string]string{"CIMDEPLOY_REPO": dir, "CIMDEPLOY_DATA_DIR": dataDir}))
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(ctx, dc.Store, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	dep, err := deploy.New(ctx, dc, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	var cfg Config
	if err := envconfig.ProcessWith(ctx, &envconfig.Config{Target: &cfg, Lookuper: envconfig.MapLookuper(map[string]string{
		"CIMDEPLOY_GITHUB_WEBHOOK_SECRET_FILE": write("secret", testSecret+"\n"),
		"CIMDEPLOY_GITHUB_REPOSITORY":          testRepo,
		"CIMDEPLOY_GITHUB_TOKEN_FILE":          write("token", testToken+"\n"),
		"CIMDEPLOY_GITHUB_API_URL":             gh.URL + "/",
		"CIMDEPLOY_PUBLIC_URL":                 "https://cimdeploy.example.com",
	})}); err != nil {
		t.Fatal(err)
	}
	d, err := New(ctx, cfg, st, dep, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return d, st
}

// TestInterruptedRunIsReported: a run its process left running (kill -9) is marked interrupted by the
// next process that opens the store, which gives the run's commit its final status on GitHub.
func TestInterruptedRunIsReported(t *testing.T) {
	data := t.TempDir()
	st, err := store.Open(t.Context(), store.Config{DataDir: data}, nil)
	if err != nil {
		t.Fatal(err)
	}
	commit := strings.Repeat("c0", 20)
	run := pipeline.Run{ID: pipeline.NewRunID(), Repo: "file:///infra", Ref: "refs/heads/main", Commit: commit,
		Trigger: pipeline.TriggerPush, Kind: pipeline.KindDeploy}
	for i, typ := range []string{pipeline.RunQueued, pipeline.RunStarted} {
		raw, _ := json.Marshal(pipeline.RunData{Run: run})
		id := pipeline.NewEventID()
		if err := st.Report(t.Context(), pipeline.Event{EventID: id, AggregateID: run.ID, Sequence: uint64(i + 1),
			Timestamp: time.Now().UTC(), CorrelationID: run.ID, CausationID: id, Type: typ, Data: raw}); err != nil {
			t.Fatal(err)
		}
	}
	st.Close() // the process is gone without a RunFinished

	gh := forgetest.NewServer(t, forgetest.WithToken(testToken))
	d, _ := newDaemon(t, data, gh)
	d.reportInterrupted(t.Context())
	if err := d.github.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	var states []string
	for _, r := range gh.Accepted("repos/create-commit-status") {
		if r.Params["sha"] == commit && r.Body["context"] == "cimdeploy/deploy" {
			states = append(states, r.Body["state"].(string)+": "+r.Body["description"].(string))
		}
	}
	if len(states) != 1 || strings.HasPrefix(states[0], "pending") || !strings.Contains(states[0], "interrupted") {
		t.Errorf("cimdeploy/deploy statuses of the interrupted run: %q, want one final status saying it was interrupted", states)
	}
}

// TestEndpoints: health, readiness with the queue's depth, metrics, and a signed delivery queued and
// announced on NATS.
func TestEndpoints(t *testing.T) {
	gh := forgetest.NewServer(t, forgetest.WithToken(testToken))
	d, st := newDaemon(t, t.TempDir(), gh)
	sub, err := st.Conn().SubscribeSync(SubjectDeliveries + ".>")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: d.Handler()}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	base := "http://" + ln.Addr().String()
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	if code, body := get("/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz = %d %q", code, body)
	}
	body := []byte(`{"ref":"refs/heads/main","after":"` + strings.Repeat("ab", 20) + `","deleted":false,"repository":{"full_name":"` + testRepo + `"},"sender":{"login":"op"}}`)
	mac := hmac.New(sha256.New, []byte(testSecret))
	mac.Write(body)
	req, _ := http.NewRequest(http.MethodPost, base+"/webhooks/github", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-GitHub-Event", "push")
	req.Header.Set("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958")
	req.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(mac.Sum(nil)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("push: %d", resp.StatusCode)
	}
	msg, err := sub.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatalf("no delivery announced on %s.>: %v", SubjectDeliveries, err)
	}
	var ev pipeline.Event
	if err := json.Unmarshal(msg.Data, &ev); err != nil || ev.Type != DeliveryQueued || msg.Subject != SubjectDeliveries+".push" ||
		ev.CorrelationID != "72d3162e-cc78-11e3-81ab-4c9367dc0958" {
		t.Errorf("announcement on %s: %+v (%v)", msg.Subject, ev, err)
	}
	if code, body := get("/readyz"); code != 200 || !strings.Contains(body, "1 job(s) queued") {
		t.Errorf("/readyz = %d %q", code, body)
	}
	code, metrics := get("/metrics")
	for _, want := range []string{
		`cimdeploy_webhook_deliveries_total{event="push",outcome="queued"`, "cimdeploy_queue_depth 1",
		"go_goroutines", "process_resident_memory_bytes",
	} {
		if code != 200 || !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	st.Close() // the store gone, serve is not ready
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		if code, _ := get("/readyz"); code == http.StatusServiceUnavailable {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Error("/readyz still answers 200 with the store closed")
}

// TestApprovalStageName: the GitHub reporter recognises the approval stage by the name the stage has.
func TestApprovalStageName(t *testing.T) {
	if got := (stages.Approve{}).Name(); got != forge.ApprovalStage {
		t.Errorf("stages.Approve is named %q, forge.ApprovalStage is %q", got, forge.ApprovalStage)
	}
}
