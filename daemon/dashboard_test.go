package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/cimdeploy/cimdeploy/pipeline"
	"github.com/cimdeploy/cimdeploy/pipeline/store"
)

// gatedRun is a validate run recorded in a real store whose stages wait for the test: generate until
// Generate is opened, build's nats-1 until Node1, nats-2 until Node2 (which then fails). Events
// receives the type of every event once the store has recorded it.
type gatedRun struct {
	Run                     *pipeline.Run
	Generate, Node1, Node2  func()
	Events                  chan string
	done                    chan struct{}
	result                  *pipeline.Result
	genGate, n1Gate, n2Gate chan struct{}
}

func openStore(t *testing.T) *store.Store {
	t.Helper()
	st, err := store.Open(t.Context(), store.Config{DataDir: t.TempDir()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// startGatedRun starts the run in the background, its command output going to the file logFile
// names (nil: nowhere). The test's cleanup opens every gate still closed and waits for the run to end.
func startGatedRun(t *testing.T, st *store.Store, logFile func(runID string) string) *gatedRun {
	t.Helper()
	g := &gatedRun{
		Run: &pipeline.Run{ID: pipeline.NewRunID(), Repo: "file:///infra", Ref: "refs/heads/main",
			Commit: strings.Repeat("c0ffee", 6) + "0123", Trigger: pipeline.TriggerPush, Kind: pipeline.KindValidate},
		Events:  make(chan string, 64),
		done:    make(chan struct{}),
		genGate: make(chan struct{}), n1Gate: make(chan struct{}), n2Gate: make(chan struct{}),
	}
	g.Generate = sync.OnceFunc(func() { close(g.genGate) })
	g.Node1 = sync.OnceFunc(func() { close(g.n1Gate) })
	g.Node2 = sync.OnceFunc(func() { close(g.n2Gate) })
	wait := func(ctx context.Context, gate chan struct{}) error {
		select {
		case <-gate:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	output := io.Discard
	if logFile != nil {
		path := logFile(g.Run.ID)
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			t.Fatal(err)
		}
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		output = f
	}
	runner := &pipeline.Runner{
		Logger: slog.New(slog.DiscardHandler),
		Output: output,
		Stages: []pipeline.Stage{
			pipeline.NewStage("generate", func(ctx context.Context, s *pipeline.StageRun) error {
				return wait(ctx, g.genGate)
			}),
			pipeline.NewStage("build", func(ctx context.Context, s *pipeline.StageRun) error {
				return s.Each(ctx, []string{"nats-1", "nats-2"}, func(ctx context.Context, st *pipeline.Step) error {
					fmt.Fprintf(st.Output, "building /nix/store/x-%s.drv\n", st.Node)
					if st.Node == "nats-1" {
						return wait(ctx, g.n1Gate)
					}
					if err := wait(ctx, g.n2Gate); err != nil {
						return err
					}
					fmt.Fprintln(st.Output, "error: <b>nats.conf</b> does not parse")
					return errors.New(`builder for '/nix/store/x-nats-2.drv' failed: <script>alert(1)</script>`)
				})
			}),
			pipeline.NewStage("check", func(context.Context, *pipeline.StageRun) error { return nil }),
		},
		Reporters: []pipeline.Reporter{st, pipeline.ReporterFunc(func(_ context.Context, ev pipeline.Event) error {
			g.Events <- ev.Type
			return nil
		})},
	}
	go func() {
		res, err := runner.Run(context.WithoutCancel(t.Context()), g.Run)
		if err != nil {
			t.Errorf("run: %v", err)
		}
		g.result = res
		close(g.done)
	}()
	t.Cleanup(func() {
		g.Generate()
		g.Node1()
		g.Node2()
		<-g.done // Events holds more than a run's events: the reporter never blocks
	})
	return g
}

// waitEvent waits until the store has recorded an event of type typ.
func (g *gatedRun) waitEvent(t *testing.T, typ string) {
	t.Helper()
	for {
		select {
		case got := <-g.Events:
			if got == typ {
				return
			}
		case <-t.Context().Done():
			t.Fatalf("waiting for %s: %v", typ, t.Context().Err())
		}
	}
}

// wait waits for the run's end and returns its result.
func (g *gatedRun) wait(t *testing.T) *pipeline.Result {
	t.Helper()
	select {
	case <-g.done:
		return g.result
	case <-t.Context().Done():
		t.Fatalf("waiting for run %s: %v", g.Run.ID, t.Context().Err())
		return nil
	}
}
