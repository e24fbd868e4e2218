package stages_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
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
	fixtures, err := os.ReadDir("../fixtures/events")
	if err != nil {
		t.Fatal(err)
	}
	// The hostile file comes after the fixtures, with the next sequence.
	seq := strconv.Itoa(len(fixtures) + 1)
	file := fmt.Sprintf("%04d", len(fixtures)+1)
	tests := []struct {
		name  string
		setup func(t *testing.T, events string)
		want  string
	}{
		{"link to /dev/zero", func(t *testing.T, events string) {
			if err := os.Symlink("/dev/zero", filepath.Join(events, file+".ndjson")); err != nil {
				t.Fatal(err)
			}
		}, "events/" + file + ".ndjson: a symbolic link"},
		{"FIFO", func(t *testing.T, events string) {
			if err := syscall.Mkfifo(filepath.Join(events, file+".json"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, "events/" + file + ".json: not a regular file (a FIFO)"},
		{"giant node name", func(t *testing.T, events string) {
			ev := `{"event_id":"e` + seq + `","aggregate_id":"x","sequence":` + seq + `,"timestamp":"2025-12-01T09:00:00Z","event_type":"NodeRemoved","data":{"name":"` + giant + `"}}`
			if err := os.WriteFile(filepath.Join(events, file+".json"), []byte(ev), 0o644); err != nil {
				t.Fatal(err)
			}
		}, `events/` + file + `.json:1: event ` + seq + ` (e` + seq + `): aggregate_id: "x" is not the node the event is about: data.name is "nnnn`},
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
