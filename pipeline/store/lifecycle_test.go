package store

import (
	"bytes"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sethvargo/go-envconfig"

	"github.com/cimdeploy/cimdeploy/pipeline"
)

// TestCloseLeavesNoGoroutine is not parallel: it counts the goroutines of the whole process.
func TestCloseLeavesNoGoroutine(t *testing.T) {
	dir := t.TempDir()
	use := func() {
		s, err := Open(t.Context(), Config{DataDir: dir}, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		r := newRun("run-1", t0)
		report(t, s, r.history(t, pipeline.StatusSuccess))
		if _, err := s.Runs(t.Context(), 0); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Events(t.Context(), r.id); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	use() // a first server may start process-wide goroutines once; they are not the store's
	before := waitGoroutines(t, 0)
	use()
	if after := waitGoroutines(t, before); after > before {
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines before Open, %d after Close:\n%s", before, after, buf[:runtime.Stack(buf, true)])
	}
}

// waitGoroutines polls until at most want goroutines run (want 0: until the count is stable) or
// five seconds pass, and returns the last count.
func waitGoroutines(t *testing.T, want int) int {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	last := runtime.NumGoroutine()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	stable := 0
	for time.Now().Before(deadline) {
		<-tick.C
		n := runtime.NumGoroutine()
		switch {
		case want > 0 && n <= want:
			return n
		case want == 0 && n == last:
			if stable++; stable == 20 {
				return n
			}
		default:
			stable = 0
		}
		last = n
	}
	return last
}

func TestConfigFromEnvironment(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		env  map[string]string
		want Config
	}{
		{
			name: "defaults",
			want: Config{DataDir: ".cimdeploy", Timeout: 10 * time.Second, MaxAge: 90 * 24 * time.Hour, Replicas: 1},
		},
		{
			name: "external",
			env: map[string]string{
				"CIMDEPLOY_NATS_URL": "nats://a:4222,nats://b:4222", "CIMDEPLOY_NATS_CREDS_FILE": "/run/secrets/nats.creds",
				"CIMDEPLOY_NATS_TIMEOUT": "3s", "CIMDEPLOY_RUNS_MAX_AGE": "720h", "CIMDEPLOY_NATS_REPLICAS": "3",
			},
			want: Config{
				DataDir: ".cimdeploy", URL: "nats://a:4222,nats://b:4222", CredsFile: "/run/secrets/nats.creds",
				Timeout: 3 * time.Second, MaxAge: 720 * time.Hour, Replicas: 3,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var got Config
			if err := envconfig.ProcessWith(t.Context(), &envconfig.Config{Target: &got, Lookuper: envconfig.MapLookuper(tt.env)}); err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
			if got.withDefaults() != got {
				t.Errorf("the env defaults differ from Open's: %+v", got.withDefaults())
			}
			if err := got.Validate(); err != nil {
				t.Errorf("Validate: %v", err)
			}
		})
	}
}

func TestSummaryFold(t *testing.T) {
	t.Parallel()
	r := newRun("run-1", t0)
	events := r.history(t, pipeline.StatusFailed)
	var sum RunSummary
	for _, ev := range events {
		if _, err := sum.fold(ev); err != nil {
			t.Fatal(err)
		}
	}
	want := sum
	tests := []struct {
		name    string
		ev      pipeline.Event
		changed bool
	}{
		{name: "replayed event", ev: events[2]},
		{name: "replayed last event", ev: events[len(events)-1]},
		{name: "event without summary", ev: r.event(t, pipeline.NodeBuilt, pipeline.StepData{})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := want
			got.Stages = append([]StageSummary(nil), want.Stages...)
			changed, err := got.fold(tt.ev)
			if err != nil || changed != tt.changed {
				t.Fatalf("fold = %v, %v; want %v", changed, err, tt.changed)
			}
			if got.Status != want.Status || got.Sequence != want.Sequence || len(got.Stages) != len(want.Stages) {
				t.Errorf("summary changed: %+v", got)
			}
		})
	}
	t.Run("stage finished as stage data", func(t *testing.T) {
		var sum RunSummary
		ev := newRun("run-2", t0).event(t, pipeline.StageFinished, map[string]any{"stage": "build", "status": "failed"})
		if _, err := sum.fold(ev); err != nil {
			t.Fatal(err)
		}
		if len(sum.Stages) != 1 || sum.Stages[0] != (StageSummary{Name: "build", Status: pipeline.StatusFailed}) {
			t.Errorf("stages = %+v", sum.Stages)
		}
	})
	t.Run("undecodable payload", func(t *testing.T) {
		var sum RunSummary
		ev := newRun("run-3", t0).event(t, pipeline.RunFinished, "not a result")
		if _, err := sum.fold(ev); err == nil {
			t.Error("no error")
		}
	})
}

func TestServerLogsGoToSlog(t *testing.T) {
	t.Parallel()
	var buf syncBuffer
	logger := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, err := Open(t.Context(), Config{DataDir: t.TempDir()}, logger)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if !strings.Contains(out, "level=DEBUG msg=\"Starting nats-server\" component=nats-server") {
		t.Errorf("server start not logged at debug:\n%s", out)
	}
	if strings.Contains(out, "level=INFO") {
		t.Errorf("server notices above debug:\n%s", out)
	}
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
