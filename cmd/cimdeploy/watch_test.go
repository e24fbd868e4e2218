package main

import (
	"bytes"
	"context"
	"errors"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cimdeploy/cimdeploy/pipeline"
	"github.com/cimdeploy/cimdeploy/pipeline/store"
)

// lockedBuffer is a bytes.Buffer that a command writes while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// openListeningStore opens an embedded store with a loopback listener, as `serve --nats-listen`
// does, and returns it with the URL the CLI reaches it by.
func openListeningStore(t *testing.T) (*store.Store, string) {
	t.Helper()
	st, err := store.Open(t.Context(), store.Config{DataDir: t.TempDir(), Listen: "127.0.0.1:0"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st, st.ListenURL()
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// watchStages is a small plan: checkout, build over two nodes (failing nats-2 when fail is set),
// then cleanup, which always runs. gate, when not nil, holds the build until it is closed.
func watchStages(fail bool, gate <-chan struct{}) []pipeline.Stage {
	return []pipeline.Stage{
		pipeline.NewStage("checkout", func(ctx context.Context, s *pipeline.StageRun) error {
			s.Run.Commit = strings.Repeat("ab", 20)
			return nil
		}),
		pipeline.NewStage("build", func(ctx context.Context, s *pipeline.StageRun) error {
			if gate != nil {
				select {
				case <-gate:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			return s.Each(ctx, []string{"nats-1", "nats-2"}, func(ctx context.Context, step *pipeline.Step) error {
				step.Progress(ctx, 1, 1, "building "+step.Node)
				if fail && step.Node == "nats-2" {
					return errors.New("builder for nats-2 failed with exit code 1")
				}
				return nil
			})
		}),
		pipeline.NewFinalStage("cleanup", func(context.Context, *pipeline.StageRun) error { return nil }),
	}
}

func runWatched(t *testing.T, st *store.Store, id string, stages []pipeline.Stage) *pipeline.Result {
	t.Helper()
	r := &pipeline.Runner{Stages: stages, Reporters: []pipeline.Reporter{st}}
	res, err := r.Run(t.Context(), &pipeline.Run{ID: id, Repo: "file:///infra", Ref: "main", Trigger: pipeline.TriggerManual, Kind: pipeline.KindDeploy})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// inOrder checks that out has the lines matching each pattern, in this order.
func inOrder(t *testing.T, out string, patterns ...string) {
	t.Helper()
	rest := out
	for _, p := range patterns {
		loc := regexp.MustCompile(p).FindStringIndex(rest)
		if loc == nil {
			t.Fatalf("output lacks %q after the lines before it:\n%s", p, out)
		}
		rest = rest[loc[1]:]
	}
}

// TestWatchFollowsTheNextRun: watch without a run waits for the next one, follows it while it runs
// (the build waits until watch has shown the checkout) and ends with the run's exit code.
func TestWatchFollowsTheNextRun(t *testing.T) {
	t.Parallel()
	st, url := openListeningStore(t)
	var stdout, stderr lockedBuffer
	code := make(chan int, 1)
	go func() { code <- run(t.Context(), []string{"watch", "--nats-url", url}, &stdout, &stderr) }()

	// watch waits on an ordered consumer of the RunStarted subjects.
	waitFor(t, "watch to wait for a run", func() bool {
		stream, err := st.JetStream().Stream(t.Context(), store.StreamRuns)
		if err != nil {
			t.Fatal(err)
		}
		info, err := stream.Info(t.Context())
		return err == nil && info.State.Consumers > 0 && strings.Contains(stderr.String(), "waiting for the next one")
	})
	gate := make(chan struct{})
	id := pipeline.NewRunID()
	done := make(chan *pipeline.Result, 1)
	go func() { done <- runWatched(t, st, id, watchStages(false, gate)) }()
	waitFor(t, "watch to show the checkout while the run goes on", func() bool {
		return strings.Contains(stdout.String(), "stage checkout success")
	})
	if strings.Contains(stdout.String(), "stage build node") {
		t.Fatalf("watch showed a build step before the gate opened:\n%s", stdout.String())
	}
	close(gate)
	if res := <-done; res.Status != pipeline.StatusSuccess {
		t.Fatalf("run = %s", res.Status)
	}
	select {
	case c := <-code:
		if c != exitOK {
			t.Fatalf("watch = %d, want 0\n%s\n%s", c, stdout.String(), stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("watch did not end at RunFinished:\n%s", stdout.String())
	}
	inOrder(t, stdout.String(),
		`run `+id+` started: file:///infra main`,
		`stage checkout started`, `stage checkout success`,
		`stage build started`, `stage build node nats-\d success`, `stage build success`,
		`stage cleanup started`, `stage cleanup success`,
		`run `+id+` success`,
		`(?m)^STAGE\s+NODE\s+STATUS`, // the summary
		`run `+id+` success in .* \(main at abababababab\)`)
}

// TestWatchReplaysAFinishedRun: a run that already ended is replayed; a failed one exits 1 with the
// failing node in the output, and --json prints the events.
func TestWatchReplaysAFinishedRun(t *testing.T) {
	t.Parallel()
	st, url := openListeningStore(t)
	id := pipeline.NewRunID()
	if res := runWatched(t, st, id, watchStages(true, nil)); res.Status != pipeline.StatusFailed {
		t.Fatalf("run = %s", res.Status)
	}
	code, stdout, stderr := runCLI(t, "watch", id, "--nats-url", url)
	if code != exitFailed {
		t.Fatalf("watch = %d, want 1\n%s\n%s", code, stdout, stderr)
	}
	inOrder(t, stdout,
		`stage checkout success`, `stage build node nats-2 failed in \S+: .*builder for nats-2 failed`,
		`stage build failed`, `stage cleanup success`, `run `+id+` failed`)
	if !strings.Contains(stderr, "run "+id+" failed") {
		t.Errorf("stderr does not say the run failed: %s", stderr)
	}

	code, stdout, _ = runCLI(t, "watch", id, "--json", "--nats-url", url)
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if code != exitFailed || len(lines) < 8 || !strings.Contains(lines[0], `"event_type":"RunQueued"`) ||
		!strings.Contains(lines[len(lines)-1], `"event_type":"RunFinished"`) {
		t.Fatalf("watch --json = %d\n%s", code, stdout)
	}
}

// TestWatchRefuses: a run id that is no token is a usage error (2), an unknown run 1, a store that
// does not answer 3.
func TestWatchRefuses(t *testing.T) {
	t.Parallel()
	_, url := openListeningStore(t)
	for _, tt := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"watch", "../etc", "--nats-url", url}, exitUsage, "run id"},
		{[]string{"watch", "a", "b", "--nats-url", url}, exitUsage, "at most 1 arg"},
		{[]string{"watch", "20261203T120000Z-0000beef", "--nats-url", url}, exitFailed, "no run 20261203T120000Z-0000beef"},
		{[]string{"watch", "--nats-url", "nats://127.0.0.1:1"}, exitInfra, "127.0.0.1:1"},
	} {
		code, stdout, stderr := runCLI(t, tt.args...)
		if code != tt.code || !strings.Contains(stdout+stderr, tt.want) {
			t.Errorf("%v = %d %q %q, want %d and %q", tt.args, code, stdout, stderr, tt.code, tt.want)
		}
	}
}
