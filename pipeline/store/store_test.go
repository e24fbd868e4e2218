package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/cimdeploy/cimdeploy/nixrunner"
	"github.com/cimdeploy/cimdeploy/pipeline"
)

// backend makes the Config of a fresh, empty store: each call is a new data directory or a new
// external server. Opening the same Config again is a restart of the CLI.
type backend struct {
	name    string
	newConf func(t *testing.T) Config
}

var backends = []backend{
	{name: "embedded", newConf: func(t *testing.T) Config {
		return Config{DataDir: t.TempDir()}
	}},
	{name: "external", newConf: func(t *testing.T) Config {
		return Config{URL: startServer(t).ClientURL()}
	}},
}

// startServer runs a separate nats-server with JetStream on a free loopback port for the test: the
// "external cluster" of the contract suite.
func startServer(t *testing.T) *server.Server {
	t.Helper()
	return startServerWith(t, func(*server.Options) {})
}

// startServerWith is startServer with its options changed by change (users, TLS).
func startServerWith(t *testing.T, change func(*server.Options)) *server.Server {
	t.Helper()
	opts := &server.Options{
		ServerName: "external",
		Host:       "127.0.0.1",
		Port:       server.RANDOM_PORT,
		JetStream:  true,
		StoreDir:   t.TempDir(),
		NoSigs:     true,
		NoLog:      true,
	}
	change(opts)
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("external nats-server not ready")
	}
	return srv
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// tWriter sends log lines to t.Log, so they show with the failing test only.
type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func open(t *testing.T, cfg Config) *Store {
	t.Helper()
	s, err := Open(t.Context(), cfg, testLogger(t))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// run stamps events of one run with the envelope, as the pipeline's emitter does.
type run struct {
	id   string
	seq  uint64
	last string
	now  time.Time
}

func newRun(id string, start time.Time) *run { return &run{id: id, now: start} }

func (r *run) event(t testing.TB, typ string, data any) pipeline.Event {
	t.Helper()
	raw, err := json.Marshal(data)
	if err != nil {
		t.Fatal(err)
	}
	r.seq++
	r.now = r.now.Add(time.Second)
	ev := pipeline.Event{
		EventID:       fmt.Sprintf("%s-%04d", r.id, r.seq),
		AggregateID:   r.id,
		Sequence:      r.seq,
		Timestamp:     r.now,
		CorrelationID: r.id,
		CausationID:   r.last,
		Type:          typ,
		Data:          raw,
	}
	if ev.CausationID == "" {
		ev.CausationID = ev.EventID
	}
	r.last = ev.EventID
	return ev
}

// history is a whole run: queued, started, check and build stages, finished with status.
func (r *run) history(t testing.TB, status pipeline.Status) []pipeline.Event {
	t.Helper()
	prun := pipeline.Run{ID: r.id, Repo: "cim/infra", Ref: "refs/heads/main", Commit: "c0ffee", Trigger: pipeline.TriggerPush, Kind: pipeline.KindDeploy}
	start := r.now
	build := pipeline.StageResult{Name: "build", Status: status, Start: start, Duration: 3 * time.Second}
	if status == pipeline.StatusFailed {
		build.Error = "nix build: exit status 1"
	}
	return []pipeline.Event{
		r.event(t, pipeline.RunQueued, pipeline.RunData{Run: prun}),
		r.event(t, pipeline.RunStarted, pipeline.RunData{Run: prun}),
		r.event(t, pipeline.StageStarted, pipeline.StageData{Stage: "check"}),
		r.event(t, pipeline.StepProgress, pipeline.ProgressData{Stage: "check", Done: 1, Expected: 2}),
		r.event(t, pipeline.StageFinished, pipeline.StageResult{Name: "check", Status: pipeline.StatusSuccess, Duration: time.Second}),
		r.event(t, pipeline.StageStarted, pipeline.StageData{Stage: "build"}),
		r.event(t, pipeline.StepFinished, pipeline.StepData{Stage: "build", Step: pipeline.StepResult{Node: "nats-1", Status: status}}),
		r.event(t, pipeline.StageFinished, build),
		r.event(t, pipeline.RunFinished, pipeline.Result{
			Run: prun, Status: status, Start: start, Duration: 5 * time.Second, Error: build.Error,
			Stages: []pipeline.StageResult{{Name: "check", Status: pipeline.StatusSuccess, Duration: time.Second}, build},
		}),
	}
}

func report(t *testing.T, s *Store, events []pipeline.Event) {
	t.Helper()
	for _, ev := range events {
		if err := s.Report(t.Context(), ev); err != nil {
			t.Fatalf("Report %s: %v", ev.Type, err)
		}
	}
}

var t0 = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// TestContract runs the same behaviour against the embedded server and an external one.
func TestContract(t *testing.T) {
	t.Parallel()
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			t.Run("restart reads previous runs back", func(t *testing.T) {
				t.Parallel()
				cfg := b.newConf(t)
				s, err := Open(t.Context(), cfg, testLogger(t))
				if err != nil {
					t.Fatal(err)
				}
				events := newRun("20250601T120000Z-aaaa0001", t0).history(t, pipeline.StatusSuccess)
				report(t, s, events)
				if err := s.Close(); err != nil {
					t.Fatalf("Close: %v", err)
				}

				cfg.MaxAge = 48 * time.Hour // a restart also updates the stream and buckets
				s = open(t, cfg)
				runs, err := s.Runs(t.Context(), 0)
				if err != nil {
					t.Fatal(err)
				}
				if len(runs) != 1 || runs[0].ID != "20250601T120000Z-aaaa0001" || runs[0].Status != pipeline.StatusSuccess {
					t.Fatalf("runs after restart = %+v, want the one successful run", runs)
				}
				got, err := s.Events(t.Context(), runs[0].ID)
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(got, events) {
					t.Errorf("events after restart differ:\ngot  %+v\nwant %+v", got, events)
				}
				info, err := s.runs.Info(t.Context())
				if err != nil {
					t.Fatal(err)
				}
				if info.Config.MaxAge != 48*time.Hour {
					t.Errorf("stream MaxAge = %v after reopening with 48h", info.Config.MaxAge)
				}
			})

			t.Run("runs newest first with final status", func(t *testing.T) {
				t.Parallel()
				s := open(t, b.newConf(t))
				older := newRun("20250601T120000Z-0000000b", t0)
				newer := newRun("20250601T121000Z-0000000a", t0.Add(10*time.Minute))
				oldEvents, newEvents := older.history(t, pipeline.StatusSuccess), newer.history(t, pipeline.StatusFailed)
				// Interleave the two runs, as two runs in flight would report.
				for i := range oldEvents {
					report(t, s, []pipeline.Event{newEvents[i], oldEvents[i]})
				}

				runs, err := s.Runs(t.Context(), 0)
				if err != nil {
					t.Fatal(err)
				}
				want := []RunSummary{
					{
						ID: newer.id, Repo: "cim/infra", Ref: "refs/heads/main", Commit: "c0ffee",
						Trigger: pipeline.TriggerPush, Kind: pipeline.KindDeploy, Status: pipeline.StatusFailed,
						Stage: "build", Error: "nix build: exit status 1",
						Stages: []StageSummary{
							{Name: "check", Status: pipeline.StatusSuccess, Duration: time.Second},
							{Name: "build", Status: pipeline.StatusFailed, Duration: 3 * time.Second},
						},
						Created: t0.Add(10*time.Minute + time.Second), Start: t0.Add(10 * time.Minute),
						Duration: 5 * time.Second, Sequence: 9, Updated: t0.Add(10*time.Minute + 9*time.Second),
					},
					{
						ID: older.id, Repo: "cim/infra", Ref: "refs/heads/main", Commit: "c0ffee",
						Trigger: pipeline.TriggerPush, Kind: pipeline.KindDeploy, Status: pipeline.StatusSuccess,
						Stages: []StageSummary{
							{Name: "check", Status: pipeline.StatusSuccess, Duration: time.Second},
							{Name: "build", Status: pipeline.StatusSuccess, Duration: 3 * time.Second},
						},
						Created: t0.Add(time.Second), Start: t0, Duration: 5 * time.Second,
						Sequence: 9, Updated: t0.Add(9 * time.Second),
					},
				}
				if !reflect.DeepEqual(runs, want) {
					t.Errorf("Runs:\ngot  %+v\nwant %+v", runs, want)
				}
				runs, err = s.Runs(t.Context(), 1)
				if err != nil {
					t.Fatal(err)
				}
				if len(runs) != 1 || runs[0].ID != newer.id {
					t.Errorf("Runs(limit 1) = %+v, want only %s", runs, newer.id)
				}
				sum, ok, err := s.Run(t.Context(), older.id)
				if err != nil || !ok || !reflect.DeepEqual(sum, want[1]) {
					t.Errorf("Run(%s) = %+v, %v, %v; want %+v", older.id, sum, ok, err, want[1])
				}
			})

			t.Run("many runs", func(t *testing.T) {
				t.Parallel()
				s := open(t, b.newConf(t))
				const n = 2*fetchBatch + 3
				for i := range n {
					r := newRun(fmt.Sprintf("run-%04d", i), t0.Add(time.Duration(i)*time.Minute))
					report(t, s, []pipeline.Event{r.event(t, pipeline.RunQueued, pipeline.RunData{})})
				}
				runs, err := s.Runs(t.Context(), 0)
				if err != nil {
					t.Fatal(err)
				}
				if len(runs) != n {
					t.Fatalf("Runs listed %d runs, want %d", len(runs), n)
				}
				for i, r := range runs {
					if want := fmt.Sprintf("run-%04d", n-1-i); r.ID != want || r.Status != pipeline.StatusQueued {
						t.Fatalf("runs[%d] = %s %s, want %s queued", i, r.ID, r.Status, want)
					}
				}
				if runs, err := s.Runs(t.Context(), 5); err != nil || len(runs) != 5 || runs[0].ID != fmt.Sprintf("run-%04d", n-1) {
					t.Errorf("Runs(limit 5) = %d runs, %v", len(runs), err)
				}
			})

			t.Run("summary while running", func(t *testing.T) {
				t.Parallel()
				s := open(t, b.newConf(t))
				r := newRun("20250601T120000Z-00000001", t0)
				report(t, s, r.history(t, pipeline.StatusSuccess)[:6]) // up to StageStarted build
				sum, ok, err := s.Run(t.Context(), r.id)
				if err != nil || !ok {
					t.Fatalf("Run = %v, %v", ok, err)
				}
				if sum.Status != pipeline.StatusRunning || sum.Stage != "build" || len(sum.Stages) != 2 ||
					sum.Stages[0].Status != pipeline.StatusSuccess || sum.Stages[1].Status != pipeline.StatusRunning {
					t.Errorf("summary of a running run = %+v", sum)
				}
			})

			t.Run("events of a run in order", func(t *testing.T) {
				t.Parallel()
				s := open(t, b.newConf(t))
				a, other := newRun("run-a", t0), newRun("run-b", t0)
				var want []pipeline.Event
				// More events than one fetch batch, interleaved with another run's.
				for i := range 2*fetchBatch + 7 {
					ev := a.event(t, pipeline.StepProgress, pipeline.ProgressData{Stage: "build", Done: i, Expected: 600})
					want = append(want, ev)
					report(t, s, []pipeline.Event{ev})
					if i%3 == 0 {
						report(t, s, []pipeline.Event{other.event(t, pipeline.StepProgress, pipeline.ProgressData{Done: i})})
					}
				}
				got, err := s.Events(t.Context(), "run-a")
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(got, want) {
					t.Errorf("Events(run-a): got %d events, want %d in order", len(got), len(want))
				}
				got, err = s.Events(t.Context(), "run-unknown")
				if err != nil || len(got) != 0 {
					t.Errorf("Events(unknown run) = %v, %v; want none and no error", got, err)
				}
			})

			t.Run("duplicate event stored once", func(t *testing.T) {
				t.Parallel()
				s := open(t, b.newConf(t))
				r := newRun("run-dup", t0)
				events := r.history(t, pipeline.StatusSuccess)
				report(t, s, events)
				report(t, s, events[len(events)-3:]) // a reporter retrying its last events
				got, err := s.Events(t.Context(), r.id)
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(got, events) {
					t.Errorf("after a retried publish: got %d events, want %d", len(got), len(events))
				}
				info, err := s.runs.Info(t.Context())
				if err != nil {
					t.Fatal(err)
				}
				if info.State.Msgs != uint64(len(events)) {
					t.Errorf("stream holds %d messages, want %d", info.State.Msgs, len(events))
				}
				sum, _, err := s.Run(t.Context(), r.id)
				if err != nil || sum.Status != pipeline.StatusSuccess || sum.Sequence != uint64(len(events)) {
					t.Errorf("summary after retries = %+v, %v", sum, err)
				}
			})

			t.Run("node record revision conflict", func(t *testing.T) {
				t.Parallel()
				s := open(t, b.newConf(t))
				ctx := t.Context()
				rec, rev, err := s.NodeRecord(ctx, "nats-1")
				if err != nil || rev != 0 || rec != nil {
					t.Fatalf("NodeRecord of a new node = %q, %d, %v; want none, revision 0", rec, rev, err)
				}
				first := []byte(`{"node":"nats-1","commit":"c1"}`)
				rev1, err := s.PutNodeRecord(ctx, "nats-1", first, 0)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := s.PutNodeRecord(ctx, "nats-1", first, 0); !errors.Is(err, ErrConflict) {
					t.Errorf("second create: err = %v, want ErrConflict", err)
				}
				second := []byte(`{"node":"nats-1","commit":"c2","failed_commit":"c9"}`)
				rev2, err := s.PutNodeRecord(ctx, "nats-1", second, rev1)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := s.PutNodeRecord(ctx, "nats-1", []byte(`{"commit":"c3"}`), rev1); !errors.Is(err, ErrConflict) {
					t.Errorf("update at a stale revision: err = %v, want ErrConflict", err)
				}
				rec, rev, err = s.NodeRecord(ctx, "nats-1")
				if err != nil || rev != rev2 || string(rec) != string(second) {
					t.Errorf("NodeRecord = %q, %d, %v; want %q, %d", rec, rev, err, second, rev2)
				}
				hist, err := s.NodeRecordHistory(ctx, "nats-1")
				if err != nil || len(hist) != 2 || string(hist[0]) != string(first) || string(hist[1]) != string(second) {
					t.Errorf("NodeRecordHistory = %q, %v; want [first second]", hist, err)
				}
				if hist, err := s.NodeRecordHistory(ctx, "nats-9"); err != nil || len(hist) != 0 {
					t.Errorf("NodeRecordHistory of a new node = %q, %v", hist, err)
				}
				if _, err := s.PutNodeRecord(ctx, "nats-2", make([]byte, MaxNodeRecord+1), 0); err == nil {
					t.Error("PutNodeRecord of a record over MaxNodeRecord: no error")
				}
				for _, bad := range []string{"", "Nats-1", "-a", "a.b", strings.Repeat("a", 64)} {
					if _, _, err := s.NodeRecord(ctx, bad); err == nil {
						t.Errorf("NodeRecord(%q): no error", bad)
					}
					if _, err := s.PutNodeRecord(ctx, bad, []byte("{}"), 0); err == nil {
						t.Errorf("PutNodeRecord(%q): no error", bad)
					}
				}
			})

			t.Run("check cache round trip", func(t *testing.T) {
				t.Parallel()
				cache := CheckCache{open(t, b.newConf(t))}
				ctx := t.Context()
				key, err := nixrunner.CheckKey(strings.Repeat("ab", 20), []byte(`{"nodes":{}}`), nil)
				if err != nil {
					t.Fatal(err)
				}
				if v, ok, err := cache.Get(ctx, key); ok || err != nil {
					t.Errorf("Get on a miss = %+v, %v, %v", v, ok, err)
				}
				for _, want := range []nixrunner.Verdict{
					{Passed: false, LastLines: []string{"error: attribute 'nats-1' missing"}, NixVersion: "2.24.9", CheckedAt: t0},
					{Passed: true, NixVersion: "2.24.9", CheckedAt: t0.Add(time.Hour)},
				} {
					if err := cache.Put(ctx, key, want); err != nil {
						t.Fatal(err)
					}
					got, ok, err := cache.Get(ctx, key)
					if err != nil || !ok || !reflect.DeepEqual(got, want) {
						t.Errorf("Get = %+v, %v, %v; want %+v", got, ok, err, want)
					}
				}
				if err := cache.Put(ctx, "not-hex", nixrunner.Verdict{}); err == nil {
					t.Error("Put with a non-hex key: no error")
				}
				if err := cache.Store.PutVerdict(ctx, "cd34", []byte("not json")); err != nil {
					t.Fatal(err)
				}
				if _, ok, err := cache.Get(ctx, "cd34"); ok || err != nil {
					t.Errorf("undecodable verdict: ok %v, err %v; want a miss", ok, err)
				}
			})

			t.Run("invalid events refused", func(t *testing.T) {
				t.Parallel()
				s := open(t, b.newConf(t))
				valid := newRun("run-x", t0).event(t, pipeline.RunQueued, pipeline.RunData{})
				for name, mutate := range map[string]func(*pipeline.Event){
					"no event id":         func(ev *pipeline.Event) { ev.EventID = "" },
					"no run id":           func(ev *pipeline.Event) { ev.AggregateID = "" },
					"dot in run id":       func(ev *pipeline.Event) { ev.AggregateID = "a.b" },
					"wildcard event type": func(ev *pipeline.Event) { ev.Type = "*" },
				} {
					ev := valid
					mutate(&ev)
					if err := s.Report(t.Context(), ev); err == nil {
						t.Errorf("%s: Report accepted %+v", name, ev)
					}
				}
				if err := s.Report(t.Context(), valid); err != nil {
					t.Errorf("valid event: %v", err)
				}
			})
		})
	}
}

func TestOpenSameDataDirTwice(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	first := open(t, Config{DataDir: dir})
	r := newRun("run-1", t0)
	report(t, first, r.history(t, pipeline.StatusSuccess)[:3])

	second, err := Open(t.Context(), Config{DataDir: dir}, testLogger(t))
	if err == nil {
		second.Close()
		t.Fatal("second Open of the same DataDir succeeded")
	}
	if !errors.Is(err, ErrLocked) {
		t.Errorf("err = %v, want ErrLocked", err)
	}
	if want := fmt.Sprintf("another cimdeploy holds %s (pid %d)", dir, os.Getpid()); !strings.Contains(err.Error(), want) {
		t.Errorf("err = %q, want it to say %q", err, want)
	}

	// The first store goes on unharmed.
	report(t, first, r.history(t, pipeline.StatusSuccess))
	if runs, err := first.Runs(t.Context(), 0); err != nil || len(runs) != 1 || runs[0].Status != pipeline.StatusSuccess {
		t.Fatalf("first store after the failed Open: %+v, %v", runs, err)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	// Closing releases the lock; the data is all there.
	again := open(t, Config{DataDir: dir})
	if events, err := again.Events(t.Context(), "run-1"); err != nil || len(events) != 12 {
		t.Errorf("events after reopening: %d, %v; want 12", len(events), err)
	}
}

func TestEmbeddedListener(t *testing.T) {
	t.Parallel()
	t.Run("none unless asked", func(t *testing.T) {
		t.Parallel()
		s := open(t, Config{DataDir: t.TempDir()})
		if addr := s.srv.Addr(); addr != nil {
			t.Errorf("embedded server listens on %v with Listen empty", addr)
		}
	})
	t.Run("on Listen", func(t *testing.T) {
		t.Parallel()
		s := open(t, Config{DataDir: t.TempDir(), Listen: "127.0.0.1:0"})
		addr := s.srv.Addr()
		if addr == nil {
			t.Fatal("no listener with Listen 127.0.0.1:0")
		}
		report(t, s, newRun("run-1", t0).history(t, pipeline.StatusSuccess))
		// Another process would connect over TCP, with the token: it sees the same history.
		client := open(t, Config{URL: s.ListenURL()})
		runs, err := client.Runs(t.Context(), 0)
		if err != nil || len(runs) != 1 {
			t.Errorf("Runs over TCP = %+v, %v", runs, err)
		}
	})
}

func TestOpenErrors(t *testing.T) {
	t.Parallel()
	notDir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	busy := startServer(t).Addr().String()
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{name: "data dir is a file", cfg: Config{DataDir: notDir}, want: "data dir"},
		{name: "listen port taken", cfg: Config{DataDir: t.TempDir(), Listen: busy}, want: "embedded nats-server"},
		{name: "bad listen", cfg: Config{Listen: "4222"}, want: "CIMDEPLOY_NATS_LISTEN"},
		{name: "creds without url", cfg: Config{CredsFile: "x.creds"}, want: "CIMDEPLOY_NATS_CREDS_FILE"},
		{name: "nkey without url", cfg: Config{NkeyFile: "x.nk"}, want: "CIMDEPLOY_NATS_NKEY_FILE is set without"},
		{name: "ca without url", cfg: Config{CAFile: "ca.pem"}, want: "CIMDEPLOY_NATS_CA_FILE is set without"},
		{name: "creds and nkey", cfg: Config{URL: "nats://127.0.0.1:1", CredsFile: "x.creds", NkeyFile: "x.nk"}, want: "one user at a time"},
		{name: "missing nkey file", cfg: Config{URL: "nats://127.0.0.1:1", NkeyFile: filepath.Join(t.TempDir(), "none.nk")}, want: "none.nk"},
		{name: "listen with url", cfg: Config{URL: "nats://127.0.0.1:1", Listen: "127.0.0.1:0"}, want: "CIMDEPLOY_NATS_LISTEN"},
		{name: "replicas embedded", cfg: Config{Replicas: 3}, want: "CIMDEPLOY_NATS_REPLICAS"},
		{name: "short max age", cfg: Config{MaxAge: time.Second}, want: "CIMDEPLOY_RUNS_MAX_AGE"},
		{name: "missing creds file", cfg: Config{URL: "nats://127.0.0.1:1", CredsFile: filepath.Join(t.TempDir(), "none.creds")}, want: "none.creds"},
		{name: "no external server", cfg: Config{URL: "nats://127.0.0.1:1", Timeout: time.Second}, want: "connect to nats"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, err := Open(t.Context(), tt.cfg, testLogger(t))
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %q, want it to mention %q", err, tt.want)
			}
		})
	}
	t.Run("a failed Open releases the lock", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		if _, err := Open(t.Context(), Config{DataDir: dir, Listen: busy}, testLogger(t)); err == nil {
			t.Fatal("Open on a taken port succeeded")
		}
		open(t, Config{DataDir: dir})
	})
}

func TestClose(t *testing.T) {
	t.Parallel()
	s, err := Open(t.Context(), Config{DataDir: t.TempDir()}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := s.Report(t.Context(), newRun("run-1", t0).event(t, pipeline.RunQueued, pipeline.RunData{})); err == nil {
		t.Error("Report after Close succeeded")
	}
}

func TestRedact(t *testing.T) {
	t.Parallel()
	got := redact("nats://alice:secret@a:4222, nats://s3cr3ttoken@b:4222,tls://c")
	if want := "nats://a:4222,nats://b:4222,tls://c"; got != want {
		t.Errorf("redact = %q, want %q", got, want)
	}
}
