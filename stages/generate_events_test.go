package stages_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cimdeploy/cimdeploy/pipeline"
	"github.com/cimdeploy/cimdeploy/stages"
)

// TestGenerateRefusesHostileEvents: the generate stage fails promptly on an events directory a hostile
// commit could hold, with the path relative to the workspace and no value echoed whole.
func TestGenerateRefusesHostileEvents(t *testing.T) {
	t.Parallel()
	giant := strings.Repeat("n", 700<<10)
	tests := []struct {
		name  string
		setup func(t *testing.T, events string)
		want  string
	}{
		{"link to /dev/zero", func(t *testing.T, events string) {
			if err := os.Symlink("/dev/zero", filepath.Join(events, "0010.ndjson")); err != nil {
				t.Fatal(err)
			}
		}, "events/0010.ndjson: a symbolic link"},
		{"FIFO", func(t *testing.T, events string) {
			if err := syscall.Mkfifo(filepath.Join(events, "0010.json"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, "events/0010.json: not a regular file (a FIFO)"},
		{"giant node name", func(t *testing.T, events string) {
			// A sequence far after the fixtures', whatever their number: the gap is a problem too.
			ev := `{"event_id":"e999","aggregate_id":"x","sequence":999,"timestamp":"2025-12-01T09:00:00Z","event_type":"NodeRemoved","data":{"name":"` + giant + `"}}`
			if err := os.WriteFile(filepath.Join(events, "0999.json"), []byte(ev), 0o644); err != nil {
				t.Fatal(err)
			}
		}, `events/0999.json:1: event 999 (e999): aggregate_id: "x" is not the node the event is about: data.name is "nnnn`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ws := t.TempDir()
			events := filepath.Join(ws, "events")
			if err := os.CopyFS(events, os.DirFS("../fixtures/events")); err != nil {
				t.Fatal(err)
			}
			tt.setup(t, events)
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			runner := &pipeline.Runner{Stages: []pipeline.Stage{stages.Generate{}}}
			res, err := runner.Run(ctx, &pipeline.Run{ID: pipeline.NewRunID(), Workspace: ws, Kind: pipeline.KindValidate})
			if err != nil {
				t.Fatal(err)
			}
			if ctx.Err() != nil {
				t.Fatal("the stage returned only when its context ended")
			}
			if res.Status != pipeline.StatusFailed || !strings.Contains(res.Error, tt.want) {
				t.Errorf("run %s, want failed naming %q:\n%.2000s", res.Status, tt.want, res.Error)
			}
			if len(res.Error) > 4096 {
				t.Errorf("an error of %d bytes: a value is echoed whole", len(res.Error))
			}
		})
	}
}
