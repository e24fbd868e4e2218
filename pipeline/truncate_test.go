package pipeline_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/cimdeploy/cimdeploy/pipeline"
)

func TestTruncate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		max  int
		want string
	}{
		{name: "short", in: "nats-1", max: 10, want: "nats-1"},
		{name: "exact", in: "0123456789", max: 10, want: "0123456789"},
		{name: "long", in: strings.Repeat("a", 200), max: 60, want: strings.Repeat("a", 23) + "… [truncated: 177 of 200 bytes cut]"},
		{name: "multibyte boundary", in: strings.Repeat("é", 100), max: 60, want: strings.Repeat("é", 11) + "… [truncated: 178 of 200 bytes cut]"},
		{name: "no room", in: strings.Repeat("a", 200), max: 5, want: "… [truncated: 200 of 200 bytes cut]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := pipeline.Truncate(tt.in, tt.max)
			if got != tt.want {
				t.Errorf("Truncate = %q, want %q", got, tt.want)
			}
			if len(tt.in) > tt.max && tt.max > 50 && len(got) > tt.max {
				t.Errorf("%d bytes, max %d", len(got), tt.max)
			}
			if !utf8.ValidString(got) {
				t.Errorf("%q is not valid UTF-8", got)
			}
		})
	}
}

// TestRunnerBoundsWhatItRecords: a step echoing a 700 KB value into its error and its output, and a
// stage doing the same, leave bounded results and events.
func TestRunnerBoundsWhatItRecords(t *testing.T) {
	t.Parallel()
	name := strings.Repeat("n", 700<<10)
	rec := &recorder{}
	r := &pipeline.Runner{Reporters: []pipeline.Reporter{rec}, Stages: []pipeline.Stage{
		pipeline.NewStage("build", func(ctx context.Context, s *pipeline.StageRun) error {
			return s.Each(ctx, []string{"nats-1"}, func(ctx context.Context, st *pipeline.Step) error {
				for i := range 100 {
					fmt.Fprintf(st.Output, "line %d %s\n", i, name)
				}
				io.WriteString(st.Output, name) // a last line without an end
				st.Note("%s", name)
				return fmt.Errorf("node %q: unknown node %q", name, name)
			})
		}),
		pipeline.NewStage("generate", func(context.Context, *pipeline.StageRun) error {
			return errors.New(name + name)
		}),
		pipeline.NewStage("check", func(ctx context.Context, s *pipeline.StageRun) error {
			return s.Do(ctx, "nats-2", func(context.Context, *pipeline.Step) error {
				lines := make([]string, 1000)
				for i := range lines {
					lines[i] = fmt.Sprint(i, " ", name[:10<<10])
				}
				return &pipeline.Error{Stage: "check", Node: "nats-2", ExitCode: 1, LastLines: lines, Err: errors.New("nix failed")}
			})
		}),
	}}
	run := newRun()
	run.Drift = strings.Repeat("-x\n+y\n", 100<<10)
	res, err := r.Run(t.Context(), run)
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != pipeline.StatusFailed || len(res.Error) > pipeline.MaxErrorBytes || !strings.Contains(res.Error, "bytes cut]") {
		t.Errorf("run error of %d bytes: %q", len(res.Error), pipeline.Truncate(res.Error, 200))
	}
	if len(res.Run.Drift) > pipeline.MaxDriftBytes || !strings.HasPrefix(res.Run.Drift, "-x\n+y\n") {
		t.Errorf("drift of %d bytes", len(res.Run.Drift))
	}
	step := res.Stages[0].Steps[0]
	if len(step.Error) > pipeline.MaxErrorBytes || !strings.HasPrefix(step.Error, `node "nnn`) || len(step.Note) > pipeline.MaxNoteBytes {
		t.Errorf("step error of %d bytes, note of %d", len(step.Error), len(step.Note))
	}
	if len(step.LastLines) != 20 {
		t.Errorf("%d last lines, want the output's last 20", len(step.LastLines))
	}
	for _, l := range step.LastLines {
		if len(l) > pipeline.MaxLineBytes {
			t.Errorf("last line of %d bytes", len(l))
		}
	}
	if !strings.HasPrefix(step.LastLines[0], "line ") {
		t.Errorf("last lines start with %q", pipeline.Truncate(step.LastLines[0], 40))
	}
	if e := res.Stages[1].Error; len(e) > pipeline.MaxErrorBytes {
		t.Errorf("stage error of %d bytes", len(e))
	}
	if res.Failure() == nil || !strings.HasPrefix(res.Failure().Error(), "build nats-1: node") {
		t.Errorf("Failure() = %v", res.Failure())
	}
	for _, ev := range rec.evs {
		if len(ev.Data) > 200<<10 {
			t.Errorf("%s of %d bytes", ev.Type, len(ev.Data))
		}
	}

	// The check stage, skipped above, alone: a failure carrying 1000 long last lines.
	r.Stages = r.Stages[2:]
	res, err = r.Run(t.Context(), newRun())
	if err != nil {
		t.Fatal(err)
	}
	lines := res.Stages[0].Steps[0].LastLines
	if len(lines) != pipeline.MaxLastLines || !strings.HasPrefix(lines[0], "950 nnn") || len(lines[0]) > pipeline.MaxLineBytes {
		t.Errorf("%d last lines of a failure's 1000, the first %q", len(lines), pipeline.Truncate(lines[0], 40))
	}
}
